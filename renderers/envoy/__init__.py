"""The Envoy renderer: file-based xDS (LDS, RDS, CDS, EDS, SDS files) and the bootstrap that loads them."""

from renderers.envoy.render import EnvoyRenderer

__all__ = ["EnvoyRenderer"]
