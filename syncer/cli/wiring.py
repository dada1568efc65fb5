"""From validated options to a ready Syncer: config, source, renderer, writer, guard, publisher, elector."""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from syncer.config import Config
from syncer.deadline import DEFAULT_CYCLE_TIMEOUT
from syncer.errors import ConfigError, SyncerError
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import load_cluster_config
from syncer.output.guard import RemovalGuard
from syncer.output.identity import run_identity
from syncer.output.writer import FileWriter
from syncer.render.plugins import load_renderer, split_renderer_options
from syncer.run.cycle import Syncer
from syncer.run.leader import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, LeaderElector
from syncer.run.metrics import Metrics
from syncer.run.status import PublishTarget, StatusPublisher
from syncer.source import ApiSource, DirectorySource, Source
from syncer.translate import TranslateOptions

log = logging.getLogger("syncer.cli")


def build_config(options: dict[str, Any]) -> Config:
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
            cycle_timeout=float(options.get("cycle_timeout", DEFAULT_CYCLE_TIMEOUT)),
            secret_file_group=secret_file_group(options.get("secret_file_group")),
            log_level=options["log_level"],
            log_format=options["log_format"],
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from syncer.run.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    return config


def build_syncer(config: Config) -> Syncer:
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
    writer = FileWriter(output_dir, secret_group=config.secret_file_group)
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
                "secret_file_group": config.secret_file_group,
            },
            renderer,
        ),
        cycle_timeout=config.cycle_timeout,
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
def leading(elector: LeaderElector | None) -> Iterator[None]:
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


def secret_file_group(value: str | None) -> int | None:
    """`--secret-file-group`: a group id or name, one this process may give files to (a member, or root)."""
    if value is None or value == "":
        return None
    try:
        gid = int(value) if value.isdigit() else grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(f"--secret-file-group {value!r}: no such group") from None
    if os.geteuid() != 0 and gid not in {os.getegid(), *os.getgroups()}:
        raise ConfigError(
            f"--secret-file-group {value}: this user is not a member of group {gid}, so it cannot give files to it"
        )
    return gid
