"""The `syncer` command line: validates options, builds the pieces, hands over to the loop. Wiring only."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from syncer import __version__
from syncer.config import LOG_FORMATS, LOG_LEVELS, Config
from syncer.errors import ConfigError, SyncerError
from syncer.guard import RemovalGuard
from syncer.identity import run_identity
from syncer.kube import KubeClient
from syncer.kubeconfig import in_cluster_namespace, load_cluster_config
from syncer.leader import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, LeaderElector
from syncer.loop import RunLoop, Syncer
from syncer.metrics import HealthServer, Metrics
from syncer.plugins import available_renderers, load_renderer, split_renderer_options
from syncer.source import ApiSource, DirectorySource, Source
from syncer.status import PublishTarget, StatusPublisher
from syncer.translate import TranslateOptions
from syncer.translate_backends import UPSTREAM_MODES
from syncer.writer import FileWriter

log = logging.getLogger("syncer.cli")


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"SYNCER_{name}", "show_envvar": True}


def shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--renderer",
            default="traefik",
            show_default=True,
            help="Renderer plugin that writes the files (see `syncer renderers`).",
            **_env("RENDERER"),
        ),
        click.option(
            "--renderer-opt",
            "renderer_opts",
            multiple=True,
            metavar="NAME.KEY=VALUE",
            help="A renderer option, e.g. traefik.entrypoint-http=web; repeatable.",
            **_env("RENDERER_OPT"),
        ),
        click.option(
            "--output-dir",
            type=click.Path(file_okay=False),
            help="Folder the proxy reads its configuration from (must exist).",
            **_env("OUTPUT_DIR"),
        ),
        click.option(
            "--source",
            "source_dir",
            type=click.Path(file_okay=False),
            help="Read manifests from this folder instead of the Kubernetes API.",
            **_env("SOURCE"),
        ),
        click.option(
            "--kubeconfig",
            help="kubeconfig file (default: KUBECONFIG, then in-cluster, then ~/.kube/config).",
            **_env("KUBECONFIG"),
        ),
        click.option("--context", help="kubeconfig context (default: its current-context).", **_env("CONTEXT")),
        click.option(
            "--namespace",
            "namespaces",
            multiple=True,
            help="Only this namespace; repeatable (default: all namespaces).",
            **_env("NAMESPACE"),
        ),
        click.option(
            "--ingress-class",
            default="syncer",
            show_default=True,
            help="IngressClass name this syncer serves.",
            **_env("INGRESS_CLASS"),
        ),
        click.option(
            "--controller-name",
            default="ingress-syncer.dev/controller",
            show_default=True,
            help="spec.controller of IngressClasses that are ours.",
            **_env("CONTROLLER_NAME"),
        ),
        click.option(
            "--watch-ingress-without-class",
            is_flag=True,
            help="Also serve Ingresses that name no class at all.",
            **_env("WATCH_INGRESS_WITHOUT_CLASS"),
        ),
        click.option(
            "--upstream",
            type=click.Choice(UPSTREAM_MODES),
            default="endpoints",
            show_default=True,
            help="Route to pod endpoints, or to the Service's ClusterIP (when the proxy cannot reach pod IPs).",
            **_env("UPSTREAM"),
        ),
        click.option(
            "--allow-external-name",
            is_flag=True,
            help="Serve ExternalName Services (off: they can point a public host at any internal name).",
            **_env("ALLOW_EXTERNAL_NAME"),
        ),
        click.option(
            "--publish-address",
            "publish_addresses",
            multiple=True,
            metavar="ADDR",
            help="Address written to the status of the Ingresses served (an IP or a DNS name); repeatable.",
            **_env("PUBLISH_ADDRESS"),
        ),
        click.option(
            "--publish-service",
            metavar="NAMESPACE/NAME",
            help="Copy this Service's status.loadBalancer to the Ingresses served.",
            **_env("PUBLISH_SERVICE"),
        ),
        click.option(
            "--max-removal-ratio",
            type=click.FloatRange(0.0, 1.0),
            default=0.5,
            show_default=True,
            help="Hold back a model that removes more than this share of the routes last written.",
            **_env("MAX_REMOVAL_RATIO"),
        ),
        click.option(
            "--removal-confirmations",
            type=click.IntRange(1),
            default=3,
            show_default=True,
            help="Consecutive cycles that must see the same held-back model before it is written.",
            **_env("REMOVAL_CONFIRMATIONS"),
        ),
        click.option(
            "--allow-mass-removal",
            is_flag=True,
            help="Write a model that removes most routes at once, without waiting for confirmations.",
            **_env("ALLOW_MASS_REMOVAL"),
        ),
        click.option(
            "--leader-elect",
            is_flag=True,
            help="Run several replicas: only the holder of a coordination.k8s.io Lease writes Ingress status.",
            **_env("LEADER_ELECT"),
        ),
        click.option(
            "--leader-elect-namespace",
            default=lambda: in_cluster_namespace() or "default",
            show_default="the pod's namespace, else default",
            help="Namespace of the Lease.",
            **_env("LEADER_ELECT_NAMESPACE"),
        ),
        click.option(
            "--leader-elect-name",
            default="ingress-syncer",
            show_default=True,
            help="Name of the Lease; replicas that share it elect one leader.",
            **_env("LEADER_ELECT_NAME"),
        ),
        click.option(
            "--leader-elect-lease-duration",
            type=float,
            default=LEASE_DURATION,
            show_default=True,
            help="Seconds a candidate waits, from the last change it saw, before taking over an unrenewed Lease.",
            **_env("LEADER_ELECT_LEASE_DURATION"),
        ),
        click.option(
            "--leader-elect-renew-deadline",
            type=float,
            default=RENEW_DEADLINE,
            show_default=True,
            help="Seconds the leader keeps leading without a successful renewal (less than the lease duration).",
            **_env("LEADER_ELECT_RENEW_DEADLINE"),
        ),
        click.option(
            "--leader-elect-retry-period",
            type=float,
            default=RETRY_PERIOD,
            show_default=True,
            help="Seconds between tries to acquire or renew the Lease.",
            **_env("LEADER_ELECT_RETRY_PERIOD"),
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print a unified diff of what would change; write nothing.",
            **_env("DRY_RUN"),
        ),
        click.option(
            "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True, **_env("LOG_LEVEL")
        ),
        click.option(
            "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True, **_env("LOG_FORMAT")
        ),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncer")
def main() -> None:
    """Turns Kubernetes Ingresses into Traefik or Envoy configuration files, atomically."""


@main.command()
@shared_options
def once(**options: Any) -> None:
    """Run one sync cycle. Exit 0 on success, 1 when the cycle failed (files untouched), 2 on usage errors."""
    config = _config(options)
    syncer = _build(config)
    with _leading(syncer.elector):
        try:
            syncer.cycle()
        except SyncerError as exc:
            log.error("cycle failed, files untouched: %s", exc)
            sys.exit(1)


@main.command()
@shared_options
@click.option(
    "--interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds from the start of one cycle to the start of the next (±10% jitter).",
    **_env("INTERVAL"),
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    help="Serve /healthz, /readyz and /metrics (Prometheus) here; off by default.",
    **_env("METRICS_ADDRESS"),
)
def run(**options: Any) -> None:
    """Sync every --interval seconds until SIGTERM/SIGINT; SIGHUP syncs at once.

    A failed cycle keeps the last good files and tries again at the next interval."""
    config = _config(options)
    syncer = _build(config)
    server = None
    if options.get("metrics_address"):
        assert syncer.metrics is not None
        try:
            server = HealthServer(options["metrics_address"], syncer.metrics, lambda: 3 * config.interval + 1)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--metrics-address {options['metrics_address']}: {exc}") from exc
        server.start()
    try:
        with _leading(syncer.elector):
            code = RunLoop(syncer, config.interval).run()
    finally:
        if server is not None:
            server.stop()
    sys.exit(code)


@main.group()
def bootstrap() -> None:
    """Print a proxy configuration that loads the files `syncer` writes."""


@bootstrap.command("traefik")
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The folder syncer writes to.",
    **_env("OUTPUT_DIR"),
)
@click.option("--http-address", default=":80", show_default=True, help="Address of the HTTP entry point.")
@click.option("--https-address", default=":443", show_default=True, help="Address of the HTTPS entry point.")
@click.option("--admin-address", default="127.0.0.1:8082", show_default=True, help="Address of /ping and the API.")
@click.option("--throttle", default="200ms", show_default=True, help="providers.providersThrottleDuration.")
@click.option(
    "--renderer-opt",
    "renderer_opts",
    multiple=True,
    metavar="traefik.KEY=VALUE",
    help="Entry point names, as given to `syncer run`.",
    **_env("RENDERER_OPT"),
)
def bootstrap_traefik(
    output_dir: str,
    http_address: str,
    https_address: str,
    admin_address: str,
    throttle: str,
    renderer_opts: tuple[str, ...],
) -> None:
    """Print a Traefik static configuration (entry points, file provider watching --output-dir, ping)."""
    from renderers.traefik import TraefikRenderer, bootstrap_config

    try:
        options = split_renderer_options(renderer_opts).get("traefik", {})
        renderer = TraefikRenderer(options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(
        bootstrap_config(
            os.path.abspath(output_dir),
            http_address=http_address,
            https_address=https_address,
            admin_address=admin_address,
            entrypoint_http=renderer.http_entrypoint,
            entrypoint_https=renderer.https_entrypoint,
            throttle=throttle,
        ),
        nl=False,
    )


@bootstrap.command("envoy")
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The folder syncer writes to, as Envoy sees it.",
    **_env("OUTPUT_DIR"),
)
@click.option(
    "--admin-address",
    default="127.0.0.1:9901",
    show_default=True,
    help="Envoy's admin interface (keep it on loopback).",
)
@click.option("--node-id", default="ingress-syncer", show_default=True, help="node.id of this Envoy.")
@click.option("--node-cluster", default="ingress-syncer", show_default=True, help="node.cluster of this Envoy.")
def bootstrap_envoy(output_dir: str, admin_address: str, node_id: str, node_cluster: str) -> None:
    """Print an Envoy bootstrap (JSON) that loads the rendered files through file-based LDS and CDS.

    Run Envoy with `--reject-unknown-dynamic-fields` (a misspelt field is otherwise only a warning) and, where
    several Envoys share a host, `--disable-hot-restart` (or a distinct `--base-id`).
    """
    from renderers.envoy_bootstrap import bootstrap_config

    try:
        config = bootstrap_config(
            os.path.abspath(output_dir), admin_address=admin_address, node_id=node_id, node_cluster=node_cluster
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(config, indent=2, sort_keys=True))


@main.command()
def renderers() -> None:
    """List the renderers found through the `syncer.renderers` entry-point group."""
    for name, provider in available_renderers().items():
        click.echo(f"{name}\t{provider}")


def _config(options: dict[str, Any]) -> Config:
    try:
        config = Config(
            output_dir=options.get("output_dir") or "",
            renderer=options["renderer"],
            renderer_options=split_renderer_options(options.get("renderer_opts") or ()),
            source_dir=options.get("source_dir"),
            kubeconfig=options.get("kubeconfig"),
            context=options.get("context"),
            namespaces=tuple(options.get("namespaces") or ()),
            ingress_class=options["ingress_class"],
            controller_name=options["controller_name"],
            watch_ingress_without_class=bool(options.get("watch_ingress_without_class")),
            upstream=options["upstream"],
            allow_external_name=bool(options.get("allow_external_name")),
            publish_addresses=tuple(options.get("publish_addresses") or ()),
            publish_service=options.get("publish_service"),
            max_removal_ratio=float(options.get("max_removal_ratio", 0.5)),
            removal_confirmations=int(options.get("removal_confirmations", 3)),
            allow_mass_removal=bool(options.get("allow_mass_removal")),
            dry_run=bool(options.get("dry_run")),
            leader_elect=bool(options.get("leader_elect")),
            leader_elect_namespace=options.get("leader_elect_namespace") or "default",
            leader_elect_name=options.get("leader_elect_name") or "ingress-syncer",
            leader_elect_lease_duration=float(options.get("leader_elect_lease_duration", LEASE_DURATION)),
            leader_elect_renew_deadline=float(options.get("leader_elect_renew_deadline", RENEW_DEADLINE)),
            leader_elect_retry_period=float(options.get("leader_elect_retry_period", RETRY_PERIOD)),
            interval=float(options.get("interval") or 10.0),
            log_level=options["log_level"],
            log_format=options["log_format"],
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from syncer.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    return config


def _build(config: Config) -> Syncer:
    output_dir = os.path.abspath(config.output_dir)
    metrics = Metrics()
    try:
        renderer = load_renderer(
            config.renderer, config.renderer_options.get(config.renderer, {}), output_dir=output_dir
        )
        target = PublishTarget.from_options(config.publish_addresses, config.publish_service)
        if target is not None:
            target.check_namespaces(config.namespaces)
        source, client = _source(config, metrics)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    publisher = StatusPublisher(client, target) if (target is not None and client is not None) else None
    writer = FileWriter(output_dir)
    try:
        writer.check()
    except SyncerError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("syncing %s -> %s (renderer %s)", source.describe(), output_dir, config.renderer)
    options = TranslateOptions(
        config.ingress_class,
        config.controller_name,
        config.watch_ingress_without_class,
        config.upstream,
        config.allow_external_name,
    )
    if publisher is not None:
        log.info("publishing %s as the address of the Ingresses served", publisher.target.describe())
    guard = RemovalGuard(config.max_removal_ratio, config.removal_confirmations, config.allow_mass_removal)
    return Syncer(
        source,
        renderer,
        writer,
        options,
        dry_run=config.dry_run,
        publisher=publisher,
        guard=guard,
        metrics=metrics,
        elector=_elector(config, client, metrics),
        identity=run_identity(
            {
                "renderer": config.renderer,
                "renderer_options": config.renderer_options.get(config.renderer, {}),
                "output_dir": output_dir,
                "translate": dataclasses.asdict(options),
            },
            renderer,
        ),
    )


def _elector(config: Config, client: KubeClient | None, metrics: Metrics) -> LeaderElector | None:
    """The Lease campaign, with a client of its own (its thread must not share the cycle's) and short timeouts."""
    if not config.leader_elect or client is None:
        return None
    timeout = max(0.5, config.leader_elect_renew_deadline / 4)  # a hung request must not outlast the deadline
    elector_client = KubeClient(
        client.cluster,
        connect_timeout=min(5.0, timeout),
        read_timeout=min(30.0, timeout),
        on_response=metrics.count_api_request,
    )
    return LeaderElector(
        elector_client,
        config.leader_elect_namespace,
        config.leader_elect_name,
        lease_duration=config.leader_elect_lease_duration,
        renew_deadline=config.leader_elect_renew_deadline,
        retry_period=config.leader_elect_retry_period,
    )


@contextmanager
def _leading(elector: LeaderElector | None) -> Iterator[None]:
    """Campaigns for the Lease around the cycles and gives it up on the way out (SIGTERM/SIGINT, exit, error)."""
    if elector is None:
        yield
        return
    elector.start()
    try:
        yield
    finally:
        elector.stop(release=True)


def _source(config: Config, metrics: Metrics) -> tuple[Source, KubeClient | None]:
    """The snapshot source, and the API client when there is one (status write-back shares it)."""
    if config.source_dir:
        return DirectorySource(config.source_dir, config.namespaces), None
    cluster = load_cluster_config(config.kubeconfig, config.context)
    client = KubeClient(cluster, on_response=metrics.count_api_request)
    return ApiSource(client, config.namespaces, server=cluster.server), client
