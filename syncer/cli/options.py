"""The options `once` and `run` share, each with its SYNCER_* environment variable. Declarations only."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from syncer.config import LOG_FORMATS, LOG_LEVELS
from syncer.deadline import DEFAULT_CYCLE_TIMEOUT
from syncer.kube.kubeconfig import in_cluster_namespace
from syncer.run.leader import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD
from syncer.translate.backends import UPSTREAM_MODES


def env(name: str) -> dict[str, Any]:
    return {"envvar": f"SYNCER_{name}", "show_envvar": True}


def shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--renderer",
            default="traefik",
            show_default=True,
            help="Renderer plugin that writes the files (see `syncer renderers`).",
            **env("RENDERER"),
        ),
        click.option(
            "--renderer-opt",
            "renderer_opts",
            multiple=True,
            metavar="NAME.KEY=VALUE",
            help="A renderer option, e.g. traefik.entrypoint-http=web; repeatable.",
            **env("RENDERER_OPT"),
        ),
        click.option(
            "--output-dir",
            type=click.Path(file_okay=False),
            help="Folder the proxy reads its configuration from (must exist).",
            **env("OUTPUT_DIR"),
        ),
        click.option(
            "--source",
            "source_dir",
            type=click.Path(file_okay=False),
            help="Read manifests from this folder instead of the Kubernetes API.",
            **env("SOURCE"),
        ),
        click.option(
            "--kubeconfig",
            help="kubeconfig file (default: KUBECONFIG, then in-cluster, then ~/.kube/config).",
            **env("KUBECONFIG"),
        ),
        click.option("--context", help="kubeconfig context (default: its current-context).", **env("CONTEXT")),
        click.option(
            "--namespace",
            "namespaces",
            multiple=True,
            help="Only this namespace; repeatable (default: all namespaces).",
            **env("NAMESPACE"),
        ),
        click.option(
            "--ingress-class",
            default="syncer",
            show_default=True,
            help="IngressClass name this syncer serves.",
            **env("INGRESS_CLASS"),
        ),
        click.option(
            "--controller-name",
            default="ingress-syncer.dev/controller",
            show_default=True,
            help="spec.controller of IngressClasses that are ours.",
            **env("CONTROLLER_NAME"),
        ),
        click.option(
            "--watch-ingress-without-class",
            is_flag=True,
            help="Also serve Ingresses that name no class at all.",
            **env("WATCH_INGRESS_WITHOUT_CLASS"),
        ),
        click.option(
            "--upstream",
            type=click.Choice(UPSTREAM_MODES),
            default="endpoints",
            show_default=True,
            help="Route to pod endpoints, or to the Service's ClusterIP (when the proxy cannot reach pod IPs).",
            **env("UPSTREAM"),
        ),
        click.option(
            "--allow-external-name",
            is_flag=True,
            help="Serve ExternalName Services (off: they can point a public host at any internal name).",
            **env("ALLOW_EXTERNAL_NAME"),
        ),
        click.option(
            "--publish-address",
            "publish_addresses",
            multiple=True,
            metavar="ADDR",
            help="Address written to the status of the Ingresses served (an IP or a DNS name); repeatable.",
            **env("PUBLISH_ADDRESS"),
        ),
        click.option(
            "--publish-service",
            metavar="NAMESPACE/NAME",
            help="Copy this Service's status.loadBalancer to the Ingresses served.",
            **env("PUBLISH_SERVICE"),
        ),
        click.option(
            "--max-removal-ratio",
            type=click.FloatRange(0.0, 1.0),
            default=0.5,
            show_default=True,
            help="Hold back a model that removes more than this share of the routes last written.",
            **env("MAX_REMOVAL_RATIO"),
        ),
        click.option(
            "--removal-confirmations",
            type=click.IntRange(1),
            default=3,
            show_default=True,
            help="Consecutive cycles that must see the same held-back model before it is written.",
            **env("REMOVAL_CONFIRMATIONS"),
        ),
        click.option(
            "--allow-mass-removal",
            is_flag=True,
            help="Write a model that removes most routes at once, without waiting for confirmations.",
            **env("ALLOW_MASS_REMOVAL"),
        ),
        click.option(
            "--leader-elect",
            is_flag=True,
            help="Run several replicas: only the holder of a coordination.k8s.io Lease writes Ingress status.",
            **env("LEADER_ELECT"),
        ),
        click.option(
            "--leader-elect-namespace",
            default=lambda: in_cluster_namespace() or "default",
            show_default="the pod's namespace, else default",
            help="Namespace of the Lease.",
            **env("LEADER_ELECT_NAMESPACE"),
        ),
        click.option(
            "--leader-elect-name",
            default="ingress-syncer",
            show_default=True,
            help="Name of the Lease; replicas that share it elect one leader.",
            **env("LEADER_ELECT_NAME"),
        ),
        click.option(
            "--leader-elect-lease-duration",
            type=float,
            default=LEASE_DURATION,
            show_default=True,
            help="Seconds a candidate waits, from the last change it saw, before taking over an unrenewed Lease.",
            **env("LEADER_ELECT_LEASE_DURATION"),
        ),
        click.option(
            "--leader-elect-renew-deadline",
            type=float,
            default=RENEW_DEADLINE,
            show_default=True,
            help="Seconds the leader keeps leading without a successful renewal (less than the lease duration).",
            **env("LEADER_ELECT_RENEW_DEADLINE"),
        ),
        click.option(
            "--leader-elect-retry-period",
            type=float,
            default=RETRY_PERIOD,
            show_default=True,
            help="Seconds between tries to acquire or renew the Lease.",
            **env("LEADER_ELECT_RETRY_PERIOD"),
        ),
        click.option(
            "--cycle-timeout",
            type=float,
            default=DEFAULT_CYCLE_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="Seconds a cycle may wait in all (API requests and their retries, the output folder's lock); "
            "past them it fails and leaves the files untouched.",
            **env("CYCLE_TIMEOUT"),
        ),
        click.option(
            "--secret-file-group",
            metavar="GID",
            help="Give files holding private keys to this group (id or name), readable by it (0640, folders 0750): "
            "for a proxy running as another user (default: owner only, 0600 and 0700).",
            **env("SECRET_FILE_GROUP"),
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print a unified diff of what would change; write nothing.",
            **env("DRY_RUN"),
        ),
        click.option(
            "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True, **env("LOG_LEVEL")
        ),
        click.option(
            "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True, **env("LOG_FORMAT")
        ),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)
