"""Envoy bootstraps: the one that loads the rendered files, and a static one for offline validation.

The real bootstrap points file-based LDS and CDS at the output folder (watched, so a rename into it
reloads). `envoy --mode validate` on that bootstrap would never read the dynamic files, so validation
builds a static bootstrap holding the rendered resources themselves (RDS and SDS inlined, EDS clusters
made STATIC) and runs the binary on it: the only complete offline check of what Envoy will accept.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syncer.errors import ConfigError, RenderError

VALIDATE_TIMEOUT = 120.0  # 10k clusters and virtual hosts validate in about 5 s on two cores


def bootstrap_config(output_dir: str, *, admin_address: str = "127.0.0.1:9901", node_id: str = "ingress-syncer",
                     node_cluster: str = "ingress-syncer") -> dict[str, Any]:  # fmt: skip
    host, _, port = admin_address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConfigError(f"--admin-address {admin_address!r} must be HOST:PORT")

    def source(name: str) -> dict[str, Any]:
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": f"{output_dir}/{name}", "watched_directory": {"path": output_dir}},
        }

    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": host, "port_value": int(port)}}},
        "dynamic_resources": {"lds_config": source("lds.json"), "cds_config": source("cds.json")},
    }


def static_bootstrap(files: Mapping[str, bytes]) -> dict[str, Any]:
    """The rendered resources as one static bootstrap: what `envoy --mode validate` can check completely."""
    resources = {name: json.loads(content)["resources"] for name, content in files.items()}
    routes = {r["name"]: r for name, items in resources.items() if name.startswith("rds/") for r in items}
    assignments = {a["cluster_name"]: a for name, items in resources.items() if name.startswith("eds/") for a in items}
    secrets = [_untyped(s) for name, items in resources.items() if name.startswith("sds/") for s in items]
    clusters = []
    for cluster in resources.get("cds.json", []):
        cluster = _untyped(cluster)
        if cluster.get("type") == "EDS":
            cluster.pop("eds_cluster_config", None)
            cluster["type"] = "STATIC"
            assignment = _untyped(assignments.get(cluster["name"], {"cluster_name": cluster["name"]}))
            cluster["load_assignment"] = assignment
        clusters.append(cluster)
    listeners = []
    for listener in resources.get("lds.json", []):
        listener = _untyped(listener)
        for chain in [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]:
            for network_filter in chain.get("filters", []):
                config = network_filter["typed_config"]
                rds = config.pop("rds", None)
                if rds is not None:
                    route = _untyped(routes[rds["route_config_name"]])
                    route.pop("@type", None)
                    config["route_config"] = route
            socket = chain.get("transport_socket")
            if socket is not None:
                for sds in socket["typed_config"]["common_tls_context"].get("tls_certificate_sds_secret_configs", []):
                    sds.pop("sds_config", None)  # a static secret of that name, below
        listeners.append(listener)
    return {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": {"listeners": listeners, "clusters": clusters, "secrets": secrets},
    }


def _untyped(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A top-level resource without its `@type` (static resources are not Any); nested configs keep theirs."""
    result = copy.deepcopy(dict(resource))
    result.pop("@type", None)
    return result


def validate_with_envoy(binary: str, files: Mapping[str, bytes]) -> None:
    """Runs `envoy --mode validate` on the static form of `files`; RenderError with Envoy's reason if rejected."""
    bootstrap = static_bootstrap(files)
    with tempfile.TemporaryDirectory(prefix="syncer-validate-") as folder:
        path = Path(folder) / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        try:
            result = subprocess.run(
                [binary, "--mode", "validate", "-c", str(path), "--log-level", "error", "--disable-hot-restart"],
                capture_output=True,
                text=True,
                timeout=VALIDATE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RenderError(f"envoy.validate-binary {binary}: could not run it: {exc}") from exc
    if result.returncode != 0:
        raise RenderError(
            f"envoy --mode validate rejected the rendered configuration: {_reason(result.stderr or result.stdout)}"
        )


def _reason(output: str) -> str:
    """Envoy's verdict without the proto dump it echoes: the innermost `caused by`, else the last words."""
    text = " ".join(output.split())
    innermost = text.rfind("caused by ")
    return text[innermost + len("caused by ") :].rstrip(")") if innermost >= 0 else text[-500:]
