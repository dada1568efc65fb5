"""RoutingModel -> Traefik v3 file-provider dynamic configuration. Pure, no I/O.

Layout: one file, `ingress-syncer.yaml`, written as JSON (JSON is YAML, and Traefik loads it). Traefik
rebuilds everything on every event whatever the layout, one bad file freezes the whole provider, and
references across files can dangle for a moment while files are replaced one by one; a single file is
replaced in one atomic rename, so Traefik only ever sees complete, self-consistent revisions.

Certificates and keys are files of their own in `certs/` (the writer keeps key files 0600 in a 0700
folder, and the main file stays free of key material). Their names carry a hash of their content, so a
renewed Secret is a new name in the main file: the rename of the main file is what makes Traefik load it,
no restart needed. Traefik does not watch subfolders, and the files are written before the main file.
Their paths are absolute as Traefik sees the folder: `traefik.config-dir` (default: the output folder).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import yaml

from renderers.options import check_known_options, parse_bool
from syncer import jsoncodec
from syncer.errors import ConfigError, RenderError
from syncer.model import PathMatch, Route, RoutingModel, VirtualHost

CONFIG_FILE = "ingress-syncer.yaml"
GENERATION_ROUTER = "zz-generation"
# Upstream timeouts shared with the Envoy renderer (README "Edge behaviour"): 5 s to connect (Envoy's
# connect_timeout, ingress-nginx's proxy-connect-timeout), 60 s for the response to begin (ingress-nginx's
# proxy-read-timeout); no total timeout, so streams and WebSockets run as long as they carry data.
SERVERS_TRANSPORT = "ingress-syncer"
FORWARDING_TIMEOUTS = {"dialTimeout": "5s", "responseHeaderTimeout": "60s"}

# Priority tiers: any exact-host router outranks any wildcard one, which outranks any host-less one;
# the default backend (priority 1) comes last. Traefik's own default (rule length) and its random
# tie-break would not reproduce Kubernetes precedence.
_TIER_BASE = {0: 3_000_000, 1: 2_000_000, 2: 1_000_000}
_DEFAULT_PRIORITY = 1

# Traefik has no built-in "answer 404" service (noop@internal answers 418): an allow-list that admits no
# client (255.255.255.255 never originates a connection) rejects every request with the status we choose.
NOT_FOUND_MIDDLEWARE = "not-found"
_NOT_FOUND = {"ipAllowList": {"sourceRange": ["255.255.255.255/32"], "rejectStatusCode": 404}}

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def go_string(value: str) -> str:
    """A double-quoted Go string literal; anything outside printable ASCII is hex-escaped."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif " " <= char <= "~" and char not in "{}":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    out.append('"')
    return "".join(out)


def traefik_name(model_name: str) -> str:
    """Model names are built from DNS labels and `/`; `__` cannot occur in them, so this stays unique."""
    return model_name.replace("/", "__").replace("@", "_at_")


def path_rule(route: Route) -> str:
    if route.match is PathMatch.EXACT:
        return f"Path({go_string(route.path)})"
    if route.path == "/":
        return f"PathPrefix({go_string('/')})"
    # PathPrefix alone is a character prefix (/foo would match /foobar); Ingress Prefix is element-wise.
    return f"(Path({go_string(route.path)}) || PathPrefix({go_string(route.path + '/')}))"


def host_rule(vhost: VirtualHost) -> str | None:
    return None if vhost.is_any_host else f"Host({go_string(vhost.hostname)})"


def route_priority(vhost: VirtualHost, route: Route) -> int:
    # Two routes of one host with equal priority have paths of equal length and equal type, so no request
    # can match both (identical ones were deduplicated by the translator).
    return _TIER_BASE[vhost.host_tier()] + 2 * len(route.path) + (1 if route.match is PathMatch.EXACT else 0)


class TraefikRenderer:
    name: ClassVar[str] = "traefik"
    DEFAULTS: ClassVar[dict[str, str]] = {
        "entrypoint-http": "web",
        "entrypoint-https": "websecure",
        "redirect-https": "false",
        "config-dir": "",
    }

    bootstrap_options: ClassVar[Mapping[str, tuple[str, str]]] = {
        "http-address": (":80", "Address of the HTTP entry point."),
        "https-address": (":443", "Address of the HTTPS entry point."),
        "admin-address": ("127.0.0.1:8082", "Address of /ping and the API."),
        "throttle": ("200ms", "providers.providersThrottleDuration."),
    }

    def __init__(self, options: Mapping[str, str], output_dir: str = "") -> None:
        merged = check_known_options(self.name, options, self.DEFAULTS)
        self.config_dir = (merged["config-dir"] or output_dir).rstrip("/")
        self.http_entrypoint = merged["entrypoint-http"]
        self.https_entrypoint = merged["entrypoint-https"]
        self.redirect_https = parse_bool(self.name, "redirect-https", merged["redirect-https"])

    def holds_secret(self, name: str) -> bool:
        """Key files (certs/*.key) are 0600 in a 0700 folder; certificates and the main file are not secret."""
        return name.startswith("certs/") and name.endswith(".key")

    def bootstrap(self, output_dir: str, settings: Mapping[str, str]) -> str:
        """Print a Traefik static configuration (entry points, file provider watching --output-dir, ping)."""
        return bootstrap_config(
            output_dir,
            http_address=settings["http-address"],
            https_address=settings["https-address"],
            admin_address=settings["admin-address"],
            entrypoint_http=self.http_entrypoint,
            entrypoint_https=self.https_entrypoint,
            throttle=settings["throttle"],
        )

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        routers: dict[str, dict[str, Any]] = {}
        middlewares: dict[str, dict[str, Any]] = {}
        services = {traefik_name(b.name): self._service(b.endpoints) for b in model.backends}
        for vhost in model.virtual_hosts:
            self._add_vhost(routers, middlewares, vhost, model.default_backend)
        if model.default_backend is not None:
            for entrypoint, tls in ((self.http_entrypoint, False), (self.https_entrypoint, True)):
                routers[f"default-backend-{entrypoint}"] = self._router(
                    f"PathPrefix({go_string('/')})",
                    _DEFAULT_PRIORITY,
                    traefik_name(model.default_backend),
                    entrypoint,
                    tls,
                )
        http: dict[str, Any] = {"routers": routers}
        if services:
            http["serversTransports"] = {SERVERS_TRANSPORT: {"forwardingTimeouts": FORWARDING_TIMEOUTS}}
            # Traefik rejects the whole file for an empty `services:` ("cannot be a standalone element") and
            # keeps the previous routes live: a cluster with no backends left must still reach it.
            http["services"] = services
        if middlewares:
            http["middlewares"] = middlewares
        config: dict[str, Any] = {"http": http}
        files: dict[str, bytes] = {}
        if model.certificates:
            if not self.config_dir.startswith("/"):
                raise ConfigError("traefik.config-dir must be an absolute path (the output folder as Traefik sees it)")
            entries = []
            for cert in model.certificates:
                tag = hashlib.sha256(cert.cert_pem + cert.key_pem).hexdigest()[:12]
                stem = f"certs/{traefik_name(cert.name)}-{tag}"
                files[f"{stem}.crt"], files[f"{stem}.key"] = cert.cert_pem, cert.key_pem
                entries.append(
                    {"certFile": f"{self.config_dir}/{stem}.crt", "keyFile": f"{self.config_dir}/{stem}.key"}
                )
            config["tls"] = {"certificates": entries}
        # The generation marker names this exact revision, so anyone can check through Traefik's API that it is live.
        generation = hashlib.sha256(jsoncodec.dumps_compact_strict(config)).hexdigest()[:16]
        routers[GENERATION_ROUTER] = {
            "entryPoints": [self.http_entrypoint],
            "rule": f"Host({go_string(f'g-{generation}.generation.invalid')})",
            "priority": 2,
            "service": "noop@internal",
        }
        files[CONFIG_FILE] = self._dump(config)  # last: it names the certificate files
        return files

    def _add_vhost(
        self,
        routers: dict[str, dict[str, Any]],
        middlewares: dict[str, dict[str, Any]],
        vhost: VirtualHost,
        default_backend: str | None,
    ) -> None:
        host = host_rule(vhost)
        entrypoints = [(self.https_entrypoint, True)] if vhost.tls_cert else []
        if vhost.tls_cert and self.redirect_https:
            name = f"redirect-{traefik_name(vhost.hostname)}"
            middlewares.setdefault("redirect-https", {"redirectScheme": {"scheme": "https", "permanent": True}})
            routers[name] = {
                "entryPoints": [self.http_entrypoint],
                "rule": host or f"PathPrefix({go_string('/')})",
                "priority": _TIER_BASE[vhost.host_tier()] + 1,
                "middlewares": ["redirect-https"],
                "service": "noop@internal",
            }
        else:
            entrypoints.insert(0, (self.http_entrypoint, False))
        for entrypoint, tls in entrypoints:
            for route in vhost.routes:
                rule = f"{host} && {path_rule(route)}" if host else path_rule(route)
                routers[f"{traefik_name(route.name)}-{entrypoint}"] = self._router(
                    rule, route_priority(vhost, route), traefik_name(route.backend), entrypoint, tls
                )
            if host is not None:
                # The host is chosen first: a request for it that none of its paths match gets the default
                # backend, or 404, but never a less specific host's route (which Traefik would try next).
                name = f"fallback-{traefik_name(vhost.hostname)}-{entrypoint}"
                priority = _TIER_BASE[vhost.host_tier()] + 1
                if default_backend is not None:
                    routers[name] = self._router(host, priority, traefik_name(default_backend), entrypoint, tls)
                else:
                    middlewares.setdefault(NOT_FOUND_MIDDLEWARE, _NOT_FOUND)
                    routers[name] = self._router(host, priority, "noop@internal", entrypoint, tls)
                    routers[name]["middlewares"] = [NOT_FOUND_MIDDLEWARE]

    @staticmethod
    def _router(rule: str, priority: int, service: str, entrypoint: str, tls: bool) -> dict[str, Any]:
        router: dict[str, Any] = {"entryPoints": [entrypoint], "rule": rule, "priority": priority, "service": service}
        if tls:
            router["tls"] = {}
        return router

    @staticmethod
    def _service(endpoints: tuple[Any, ...]) -> dict[str, Any]:
        # An empty server list makes Traefik answer 503; a missing service would disable the router and
        # let the request fall through to a less specific one.
        servers = [{"url": f"http://{_host_port(e.address, e.port)}"} for e in endpoints]
        return {"loadBalancer": {"servers": servers, "serversTransport": SERVERS_TRANSPORT}}

    @staticmethod
    def _dump(config: dict[str, Any]) -> bytes:
        # JSON is YAML, and Traefik loads it from a .yaml file; a JSON encoder is ~20x faster than a YAML one
        # at 10,000 routers, and every name and rule is plain ASCII anyway (go_string escapes the rest).
        # Compact JSON never holds `{{` (an object is never a member of an object without a key).
        body = jsoncodec.dumps_lines(config, depth=3)  # one router, service or certificate per line
        if b"{{" in body:
            # Traefik runs every dynamic file through Go templates first: this must never reach it.
            raise RenderError("rendered Traefik configuration contains '{{'; refusing to write it")
        return body


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def bootstrap_config(
    output_dir: str,
    *,
    http_address: str = ":80",
    https_address: str = ":443",
    admin_address: str = "127.0.0.1:8082",
    entrypoint_http: str = "web",
    entrypoint_https: str = "websecure",
    throttle: str = "200ms",
    log_level: str = "INFO",
) -> str:
    """A Traefik static configuration that loads the rendered folder.

    The file provider watches the folder; a short throttle lets a change go live within a fraction of a
    second (Traefik's 2 s default would delay every update). Ping and the API (for the generation marker)
    live on their own entry point, on loopback unless told otherwise.
    """
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            entrypoint_http: {"address": http_address},
            entrypoint_https: {"address": https_address},
            "traefik": {"address": admin_address},
        },
        "ping": {"entryPoint": "traefik"},
        "api": {"insecure": True, "dashboard": False},
        "log": {"level": log_level},
        "providers": {
            "providersThrottleDuration": throttle,
            "file": {"directory": output_dir, "watch": True},
        },
    }
    header = (
        "# Traefik static configuration for ingress-syncer (generated by `syncer bootstrap traefik`).\n"
        "# Run: traefik --configFile=THIS_FILE\n"
    )
    return header + yaml.dump(static, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
