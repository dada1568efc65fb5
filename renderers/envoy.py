"""RoutingModel -> Envoy v3 resources as files for file-based xDS (no control plane). Pure, no I/O.

Files (JSON: Envoy's YAML parser turns bare y/n into booleans), in write order:
- `eds/<cluster>.json`: one ClusterLoadAssignment each, so pod churn rewrites only these files and never
  touches CDS or LDS;
- `cds.json`: every cluster, as EDS clusters reading the files above (they must exist first);
- `rds/http.json`: the route configuration, delivered by RDS so a route change reaches open keep-alive
  connections at once instead of draining the listener;
- `lds.json`: the listener, which only names the RDS file and so changes only when ports change.
Paths inside the files are absolute as Envoy sees the folder: `envoy.xds-dir` (default: the output folder).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from renderers.options import check_known_options
from syncer.errors import ConfigError
from syncer.model import Backend, PathMatch, Route, RoutingModel, VirtualHost

_TYPE = "type.googleapis.com/envoy."
LISTENER_TYPE = _TYPE + "config.listener.v3.Listener"
ROUTE_TYPE = _TYPE + "config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _TYPE + "config.cluster.v3.Cluster"
ENDPOINTS_TYPE = _TYPE + "config.endpoint.v3.ClusterLoadAssignment"
HCM_TYPE = _TYPE + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = _TYPE + "extensions.filters.http.router.v3.Router"
HTTP_ROUTE_CONFIG = "http"


def file_name(model_name: str) -> str:
    """Model names are DNS labels joined by `/`; `__` cannot occur in them, so this stays unique."""
    return model_name.replace("/", "__")


def discovery_response(resources: list[dict[str, Any]]) -> bytes:
    body = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    # The content hash is the version: Envoy echoes it in its version_text stats, so a test or an operator
    # can confirm this exact file is live.
    version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return json.dumps({"version_info": version, "resources": resources}, sort_keys=True, indent=1).encode() + b"\n"


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def route_match(route: Route) -> dict[str, Any]:
    if route.match is PathMatch.EXACT:
        return {"path": route.path}
    if route.path == "/":
        return {"prefix": "/"}
    # Element-wise prefix: /foo matches /foo, /foo/, /foo/bar, never /foobar.
    return {"path_separated_prefix": route.path}


def _single_label_guard(vhost: VirtualHost) -> list[dict[str, Any]]:
    """Envoy's `*.example.com` matches any depth; Kubernetes wildcards cover exactly one label."""
    if not vhost.is_wildcard:
        return []
    suffix = re.escape(vhost.hostname[1:])
    regex = f"(?i)^[^.]+{suffix}(:[0-9]+)?$"  # host names are case-insensitive
    return [{"name": ":authority", "string_match": {"safe_regex": {"regex": regex}}}]


class EnvoyRenderer:
    name: ClassVar[str] = "envoy"
    DEFAULTS: ClassVar[dict[str, str]] = {
        "http-port": "8080",
        "address": "0.0.0.0",
        "xds-dir": "",
    }

    def __init__(self, options: Mapping[str, str], output_dir: str = "") -> None:
        merged = check_known_options(self.name, options, self.DEFAULTS)
        self.address = merged["address"]
        self.http_port = _port(merged["http-port"], "http-port")
        self.xds_dir = (merged["xds-dir"] or output_dir).rstrip("/")
        if not self.xds_dir.startswith("/"):
            raise ConfigError("envoy.xds-dir must be an absolute path (the output folder as Envoy sees it)")

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        files: dict[str, bytes] = {}
        for backend in model.backends:
            if backend.external_name is None:
                assignment = {"@type": ENDPOINTS_TYPE, **self._load_assignment(backend)}
                files[f"eds/{file_name(backend.name)}.json"] = discovery_response([assignment])
        files["cds.json"] = discovery_response([self._cluster(b) for b in model.backends])
        files[f"rds/{HTTP_ROUTE_CONFIG}.json"] = discovery_response([self._route_configuration(model)])
        files["lds.json"] = discovery_response([self._http_listener()])
        return files

    def _config_source(self, relative: str) -> dict[str, Any]:
        path = f"{self.xds_dir}/{relative}"
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": path, "watched_directory": {"path": path.rsplit("/", 1)[0]}},
        }

    def _load_assignment(self, backend: Backend) -> dict[str, Any]:
        lb_endpoints = [{"endpoint": {"address": _socket_address(e.address, e.port)}} for e in backend.endpoints]
        return {
            "cluster_name": backend.name,
            "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else [],
        }

    def _cluster(self, backend: Backend) -> dict[str, Any]:
        if backend.external_name is not None:
            # A DNS name: EDS cannot carry one, and Envoy must re-resolve it as its records change.
            return {
                "@type": CLUSTER_TYPE,
                "name": backend.name,
                "type": "STRICT_DNS",
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": "5s",
                "load_assignment": self._load_assignment(backend),
            }
        return {
            "@type": CLUSTER_TYPE,
            "name": backend.name,
            "type": "EDS",
            "connect_timeout": "5s",
            "eds_cluster_config": {"eds_config": self._config_source(f"eds/{file_name(backend.name)}.json")},
        }

    def _route_configuration(self, model: RoutingModel) -> dict[str, Any]:
        default_route: list[dict[str, Any]] = (
            [{"match": {"prefix": "/"}, "route": {"cluster": model.default_backend}}] if model.default_backend else []
        )
        vhosts = []
        for vhost in model.virtual_hosts:
            guard = _single_label_guard(vhost)
            routes = []
            for route in vhost.routes:
                match = route_match(route)
                if guard:
                    match["headers"] = guard
                routes.append({"name": route.name, "match": match, "route": {"cluster": route.backend}})
            vhosts.append({"name": vhost.hostname, "domains": [vhost.hostname], "routes": routes + default_route})
        if not any(v.is_any_host for v in model.virtual_hosts) and default_route:
            vhosts.append({"name": "*", "domains": ["*"], "routes": default_route})
        return {"@type": ROUTE_TYPE, "name": HTTP_ROUTE_CONFIG, "virtual_hosts": vhosts}

    def _http_listener(self) -> dict[str, Any]:
        hcm = {
            "@type": HCM_TYPE,
            "stat_prefix": "http",
            "normalize_path": True,
            "merge_slashes": True,
            # Kubernetes hosts never carry a port: `foo.com:8080` must match `foo.com`.
            "strip_any_host_port": True,
            "rds": {
                "route_config_name": HTTP_ROUTE_CONFIG,
                "config_source": self._config_source(f"rds/{HTTP_ROUTE_CONFIG}.json"),
            },
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
        }
        return {
            "@type": LISTENER_TYPE,
            "name": "http",
            "address": _socket_address(self.address, self.http_port),
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        }


def _port(value: str, key: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"renderer option envoy.{key}={value!r} must be a port from 1 to 65535")
    return int(value)
