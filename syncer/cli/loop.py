"""`syncer run`: cycles every --interval seconds until SIGTERM/SIGINT, with optional health and metrics."""

from __future__ import annotations

import sys
from typing import Any

import click

from syncer.cli.options import env, shared_options
from syncer.cli.wiring import build_config, build_syncer, leading
from syncer.run.loop import RunLoop
from syncer.run.metrics import HealthServer


@click.command()
@shared_options
@click.option(
    "--interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds from the start of one cycle to the start of the next (±10% jitter).",
    **env("INTERVAL"),
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    help="Serve /healthz, /readyz and /metrics (Prometheus) here; off by default.",
    **env("METRICS_ADDRESS"),
)
def run(**options: Any) -> None:
    """Sync every --interval seconds until SIGTERM/SIGINT; SIGHUP syncs at once.

    A failed cycle keeps the last good files and tries again at the next interval."""
    config = build_config(options)
    syncer = build_syncer(config)
    server = None
    if options.get("metrics_address"):
        assert syncer.metrics is not None
        try:
            server = HealthServer(options["metrics_address"], syncer.metrics, lambda: 3 * config.interval + 1)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--metrics-address {options['metrics_address']}: {exc}") from exc
        server.start()
    try:
        with leading(syncer.elector):
            code = RunLoop(syncer, config.interval).run()
    finally:
        if server is not None:
            server.stop()
    sys.exit(code)
