"""ingress-syncer: polls Kubernetes Ingresses and writes Traefik or Envoy configuration files."""

__version__ = "0.1.0.dev0"
