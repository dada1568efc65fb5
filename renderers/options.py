"""Validation of renderer options (`--renderer-opt NAME.KEY=VALUE`) shared by the built-in renderers. No I/O."""

from __future__ import annotations

from collections.abc import Mapping

from syncer.errors import ConfigError


def check_known_options(renderer: str, options: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """Defaults overlaid with the given options; an unknown key is a usage error naming the valid ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{renderer}.{key}" for key in sorted(defaults))
        raise ConfigError(f"unknown renderer option {renderer}.{unknown[0]}; valid options: {valid}")
    return {**defaults, **options}


def parse_bool(renderer: str, key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"renderer option {renderer}.{key}={value!r} must be true or false")
