"""RoutingModel -> Envoy v3 resources as files for file-based xDS (no control plane). Pure, no I/O.

Files, in write order (a file is written only after everything it names exists):
- `sds/<certificate>.json`: one TLS Secret each (key inside: mode 0600). Certificates rotate through these
  files without touching the listener, so open connections are not drained.
- `eds/<cluster>.json`: one ClusterLoadAssignment each, so pod churn rewrites only these files and never
  CDS or LDS.
- `cds.json`: every cluster: EDS clusters reading the files above; STRICT_DNS ones for ExternalName.
- `rds/http.json`, `rds/https.json`: the route configurations, delivered by RDS so a route change reaches
  open keep-alive connections on their next request instead of draining the listener.
- `lds.json`: the listeners. They name only RDS and SDS files, so they change only when ports or the set
  of certificates change.
JSON throughout: Envoy's YAML parser turns bare y/n into booleans. Every file's `version_info` is its
content hash, which Envoy echoes in its `*.version_text` stats. Paths inside the files are absolute, as
Envoy sees the folder: `envoy.xds-dir` (default: the output folder).

Kubernetes semantics Envoy does not have on its own: `path_separated_prefix` is the element-wise Prefix;
a wildcard domain matches any depth in Envoy, so single-label wildcards get an `:authority` guard, and a
deeper host that lands in the wildcard's virtual host continues with the host-less rules; every host
ends in a catch-all for the default backend (or 404), and the port of the Host header is stripped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from renderers.envoy.bootstrap import bootstrap_config
from renderers.options import check_known_options, parse_bool
from syncer import jsoncodec
from syncer.errors import ConfigError, RenderError
from syncer.model import Backend, PathMatch, Route, RoutingModel, TLSCert, VirtualHost

_TYPE = "type.googleapis.com/envoy."
LISTENER_TYPE = _TYPE + "config.listener.v3.Listener"
ROUTE_TYPE = _TYPE + "config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _TYPE + "config.cluster.v3.Cluster"
ENDPOINTS_TYPE = _TYPE + "config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = _TYPE + "extensions.transport_sockets.tls.v3.Secret"
HCM_TYPE = _TYPE + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = _TYPE + "extensions.filters.http.router.v3.Router"
TLS_INSPECTOR_TYPE = _TYPE + "extensions.filters.listener.tls_inspector.v3.TlsInspector"
DOWNSTREAM_TLS_TYPE = _TYPE + "extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP, HTTPS = "http", "https"
# 301 MOVED_PERMANENTLY, like the permanent redirect of traefik.redirect-https.
REDIRECT_HTTPS: dict[str, Any] = {"redirect": {"https_redirect": True}}
# What a backend learns of the client comes from the connection, never from the client's own headers (Traefik does
# the same): X-Real-IP is the client address Envoy determined, X-Forwarded-Host the request's host.
FORWARDED_HEADERS: list[dict[str, Any]] = [
    {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    for key, value in (
        ("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        ("x-forwarded-host", "%REQ(:AUTHORITY)%"),
    )
]
UPSTREAM_IDLE_TIMEOUT = "60s"
# HTTPS offers HTTP/2 and HTTP/1.1 by ALPN (the connection manager's AUTO codec then speaks what was chosen).
ALPN = ["h2", "http/1.1"]
NOT_FOUND: dict[str, Any] = {"direct_response": {"status": 404}}


def file_name(model_name: str) -> str:
    """Model names are DNS labels joined by `/`; `__` cannot occur in them, so this stays unique."""
    return model_name.replace("/", "__")


def discovery_response(resources: list[dict[str, Any]], depth: int = 2) -> bytes:
    """One resource per line (`depth` 2); deeper for the route and listener files, whose virtual hosts and
    filter chains then get a line each."""
    version = hashlib.sha256(jsoncodec.dumps_compact_strict(resources)).hexdigest()[:16]
    return jsoncodec.dumps_lines({"version_info": version, "resources": resources}, depth)


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def route_match(route: Route) -> dict[str, Any]:
    if route.match is PathMatch.EXACT:
        if route.path == "/":
            # merge_slashes keeps a path made only of slashes ("//") as it is; Traefik and the spec's
            # normalised view see "/" there.
            return {"safe_regex": {"regex": "/+"}}
        return {"path": route.path}
    if route.path == "/":
        return {"prefix": "/"}
    # Element-wise prefix: /foo matches /foo, /foo/, /foo/bar, never /foobar.
    return {"path_separated_prefix": route.path}


def forwarded_port(route_config: str) -> dict[str, Any]:
    """X-Forwarded-Port: the scheme's public port, as Traefik sets it for a Host without a port (the listener's own
    port is usually not the one clients used: a load balancer maps 80/443 to it)."""
    port = "443" if route_config == HTTPS else "80"
    return {"header": {"key": "x-forwarded-port", "value": port}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def forward_to(cluster: str) -> dict[str, Any]:
    """A route action with the upstream timeouts both renderers share (README "Edge behaviour"): no total timeout
    (Envoy's 15 s default cut slow responses, streams and WebSockets), but 60 s without a byte either way ends the
    stream, as ingress-nginx's proxy-read-timeout default."""
    return {"cluster": cluster, "timeout": "0s", "idle_timeout": UPSTREAM_IDLE_TIMEOUT}


def single_label_guard(vhost: VirtualHost) -> list[dict[str, Any]]:
    """Envoy's `*.example.com` matches any depth; Kubernetes wildcards cover exactly one label."""
    if not vhost.is_wildcard:
        return []
    suffix = re.escape(vhost.hostname[1:])
    regex = f"(?i)^[^.]+{suffix}(:[0-9]+)?$"  # host names are case-insensitive
    return [{"name": ":authority", "string_match": {"safe_regex": {"regex": regex}}}]


def _port(value: str, key: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"renderer option envoy.{key}={value!r} must be a port from 1 to 65535")
    return int(value)


class EnvoyRenderer:
    name: ClassVar[str] = "envoy"
    DEFAULTS: ClassVar[dict[str, str]] = {
        "http-port": "8080",
        "https-port": "8443",
        "address": "0.0.0.0",
        "xds-dir": "",
        "validate-binary": "",
        "drain-time-s": "600",
        "redirect-https": "false",
    }

    bootstrap_options: ClassVar[Mapping[str, tuple[str, str]]] = {
        "admin-address": ("127.0.0.1:9901", "Envoy's admin interface (keep it on loopback)."),
        "node-id": ("ingress-syncer", "node.id of this Envoy."),
        "node-cluster": ("ingress-syncer", "node.cluster of this Envoy."),
    }

    def __init__(self, options: Mapping[str, str], output_dir: str = "") -> None:
        merged = check_known_options(self.name, options, self.DEFAULTS)
        self.address = merged["address"]
        self.http_port = _port(merged["http-port"], "http-port")
        self.https_port = _port(merged["https-port"], "https-port")
        if self.http_port == self.https_port:
            raise ConfigError(
                f"envoy.http-port and envoy.https-port are both {self.http_port}; give them different ports"
            )
        self.xds_dir = (merged["xds-dir"] or output_dir).rstrip("/")
        if not self.xds_dir.startswith("/"):
            raise ConfigError("envoy.xds-dir must be an absolute path (the output folder as Envoy sees it)")
        self.validate_binary = merged["validate-binary"]
        self.redirect_https = parse_bool(self.name, "redirect-https", merged["redirect-https"])
        drain = merged["drain-time-s"]
        if not drain.isdigit():
            raise ConfigError(f"renderer option envoy.drain-time-s={drain!r} must be a whole number of seconds")
        self.drain_time = float(drain)

    # --- files ---------------------------------------------------------------------------------------
    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        check_unique(model)
        files: dict[str, bytes] = {}
        for cert in model.certificates:
            files[f"sds/{file_name(cert.name)}.json"] = discovery_response([self._secret(cert)])
        for backend in model.backends:
            if backend.external_name is None:
                assignment = {"@type": ENDPOINTS_TYPE, **self._load_assignment(backend)}
                files[f"eds/{file_name(backend.name)}.json"] = discovery_response([assignment])
        files["cds.json"] = discovery_response([self._cluster(b) for b in model.backends])
        files[f"rds/{HTTP}.json"] = discovery_response(
            [self._route_configuration(HTTP, model, model.virtual_hosts)], depth=4
        )
        listeners = [self._listener(HTTP, self.http_port, [{"filters": [self._hcm(HTTP)]}])]
        if model.certificates:
            secure = tuple(v for v in model.virtual_hosts if v.tls_cert)
            files[f"rds/{HTTPS}.json"] = discovery_response([self._route_configuration(HTTPS, model, secure)], depth=4)
            listeners.append(self._https_listener(model))
        files["lds.json"] = discovery_response(listeners, depth=4)
        return files

    def holds_secret(self, name: str) -> bool:
        """SDS files carry private keys: 0600 in a 0700 folder."""
        return name.startswith("sds/")

    def bootstrap(self, output_dir: str, settings: Mapping[str, str]) -> str:
        """Print an Envoy bootstrap (JSON) that loads the rendered files through file-based LDS and CDS.

        Run Envoy with `--reject-unknown-dynamic-fields` (a misspelt field is otherwise only a warning) and, where
        several Envoys share a host, `--disable-hot-restart` (or a distinct `--base-id`).
        """
        config = bootstrap_config(
            output_dir,
            admin_address=settings["admin-address"],
            node_id=settings["node-id"],
            node_cluster=settings["node-cluster"],
        )
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def prune_delay(self, name: str) -> float:
        """Draining listeners and filter chains keep reading their RDS and SDS files for Envoy's
        --drain-time-s (600 by default): such files stay that long, or every re-read is an update_failure.
        A removed cluster's EDS subscription ends with the CDS update, so its file can go at once."""
        return self.drain_time if name.startswith(("rds/", "sds/")) else 0.0

    def transition(self, read: Callable[[str], bytes | None], files: Mapping[str, bytes]) -> list[dict[str, bytes]]:
        """A cluster must outlive the routes to it: CDS applies before RDS, so when clusters go away, first a
        CDS that still holds them goes out with the new routes, and only then the CDS without them."""
        old_cds = read("cds.json")
        if old_cds is None or "cds.json" not in files:
            return []
        try:
            old_clusters = {c["name"]: c for c in jsoncodec.loads(old_cds)["resources"]}
        except (ValueError, KeyError, TypeError):
            return []  # not ours to interpret: the final write replaces it
        new_clusters = jsoncodec.loads(files["cds.json"])["resources"]
        kept = {c["name"] for c in new_clusters}
        leaving = [cluster for name, cluster in sorted(old_clusters.items()) if name not in kept]
        if not leaving:
            return []
        step = dict(files)
        step["cds.json"] = discovery_response(sorted([*new_clusters, *leaving], key=lambda c: str(c["name"])))
        return [step]

    def check(self, files: Mapping[str, bytes]) -> None:
        """Before anything is written: `envoy --mode validate` on a static bootstrap of these files, if asked."""
        if self.validate_binary:
            from renderers.envoy.bootstrap import validate_with_envoy

            validate_with_envoy(self.validate_binary, files)

    def _config_source(self, relative: str) -> dict[str, Any]:
        # No watched_directory here: a rename onto the path itself reloads it, and with a watched folder every
        # rename into eds/ would make all 10,000 EDS subscriptions re-read their files.
        return {"resource_api_version": "V3", "path_config_source": {"path": f"{self.xds_dir}/{relative}"}}

    # --- resources -----------------------------------------------------------------------------------
    @staticmethod
    def _secret(cert: TLSCert) -> dict[str, Any]:
        return {
            "@type": SECRET_TYPE,
            "name": cert.name,
            "tls_certificate": {
                "certificate_chain": {"inline_string": cert.cert_pem.decode("ascii")},
                "private_key": {"inline_string": cert.key_pem.decode("ascii")},
            },
        }

    @staticmethod
    def _load_assignment(backend: Backend) -> dict[str, Any]:
        lb_endpoints = [{"endpoint": {"address": _socket_address(e.address, e.port)}} for e in backend.endpoints]
        return {"cluster_name": backend.name, "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []}

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

    def _route_configuration(self, name: str, model: RoutingModel, vhosts: tuple[VirtualHost, ...]) -> dict[str, Any]:
        catch_all = (
            {"match": {"prefix": "/"}, "route": forward_to(model.default_backend)}
            if model.default_backend
            else {"match": {"prefix": "/"}, **NOT_FOUND}
        )
        any_host = next((v for v in vhosts if v.is_any_host), None)
        any_host_routes = [self._route(r) for r in any_host.routes] if any_host else []
        envoy_vhosts: list[dict[str, Any]] = []
        for vhost in vhosts:
            if vhost.is_any_host:
                continue
            guard = single_label_guard(vhost)
            if name == HTTP and vhost.tls_cert and self.redirect_https:
                # Like traefik.redirect-https: a host with a certificate answers plain HTTP with 301 to https,
                # path and query kept; only its own single label (a deeper name is some other host's).
                match: dict[str, Any] = {"prefix": "/", "headers": guard} if guard else {"prefix": "/"}
                redirect = {"match": match, **REDIRECT_HTTPS}
                routes = [redirect, *any_host_routes, catch_all] if guard else [redirect]
                envoy_vhosts.append({"name": vhost.hostname, "domains": [vhost.hostname], "routes": routes})
                continue
            routes = [self._route(r, guard) for r in vhost.routes]
            if guard:
                # The host matched: its unmatched paths go to the default (or 404)...
                routes.append({"match": {"prefix": "/", "headers": guard}, **_action(catch_all)})
                # ...while a deeper name that only Envoy's suffix match brought here is not this host.
                routes.extend(any_host_routes)
            routes.append(catch_all)
            envoy_vhosts.append({"name": vhost.hostname, "domains": [vhost.hostname], "routes": routes})
        envoy_vhosts.append({"name": "*", "domains": ["*"], "routes": [*any_host_routes, catch_all]})
        return {
            "@type": ROUTE_TYPE,
            "name": name,
            "virtual_hosts": envoy_vhosts,
            "request_headers_to_add": [*FORWARDED_HEADERS, forwarded_port(name)],
        }

    @staticmethod
    def _route(route: Route, guard: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        match = route_match(route)
        if guard:
            match["headers"] = guard
        return {"name": route.name, "match": match, "route": forward_to(route.backend)}

    def _hcm(self, route_config: str) -> dict[str, Any]:
        config = {
            "@type": HCM_TYPE,
            "stat_prefix": route_config,
            # Path normalisation is off by default: /public/../admin would bypass an /admin route.
            "normalize_path": True,
            "merge_slashes": True,
            # Kubernetes hosts never carry a port: `foo.com:8080` must match `foo.com`.
            "strip_any_host_port": True,
            # `shop.example.com.` (a fully qualified name) is the same host, as Traefik treats it.
            "strip_trailing_host_dot": True,
            # The edge of the cluster: the client's own address goes to X-Forwarded-For.
            "use_remote_address": True,
            # WebSockets on every route, as Traefik (and ingress-nginx) do without being asked.
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "rds": {
                "route_config_name": route_config,
                "config_source": self._config_source(f"rds/{route_config}.json"),
            },
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
        }
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}

    def _listener(self, name: str, port: int, filter_chains: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "@type": LISTENER_TYPE,
            "name": name,
            "address": _socket_address(self.address, port),
            "filter_chains": filter_chains,
            **extra,
        }

    def _https_listener(self, model: RoutingModel) -> dict[str, Any]:
        hosts_by_cert: dict[str, list[str]] = {}
        for vhost in model.virtual_hosts:
            if vhost.tls_cert:
                hosts_by_cert.setdefault(vhost.tls_cert, []).append(vhost.hostname)
        chains = [
            {
                "filter_chain_match": {"server_names": sorted(hosts_by_cert[cert.name])},
                "filters": [self._hcm(HTTPS)],
                "transport_socket": self._tls_socket(cert),
            }
            for cert in model.certificates
            if cert.name in hosts_by_cert
        ]
        # An unknown or missing SNI would otherwise get a TCP reset; it gets the first certificate and the
        # HTTPS routes (for an unknown host, the default backend), like Traefik's default certificate.
        default_chain = {"filters": [self._hcm(HTTPS)], "transport_socket": self._tls_socket(model.certificates[0])}
        inspector = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR_TYPE}}]
        return self._listener(
            HTTPS, self.https_port, chains, listener_filters=inspector, default_filter_chain=default_chain
        )

    def _tls_socket(self, cert: TLSCert) -> dict[str, Any]:
        sds = {"name": cert.name, "sds_config": self._config_source(f"sds/{file_name(cert.name)}.json")}
        common = {"tls_certificate_sds_secret_configs": [sds], "alpn_protocols": ALPN}
        context = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
        return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _action(route: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in route.items() if k != "match"}


def check_unique(model: RoutingModel) -> None:
    """What Envoy rejects a whole file for, checked up front: duplicate cluster, secret and route names,
    and duplicate domains (the translator guarantees them; a third-party model change must not slip by)."""
    for what, names in (
        ("cluster", [b.name for b in model.backends]),
        ("secret", [c.name for c in model.certificates]),
        ("domain", [v.hostname for v in model.virtual_hosts]),
    ):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise RenderError(
                    f"duplicate Envoy {what} name {name!r}; refusing to write a configuration Envoy would reject"
                )
            seen.add(name)
