"""`syncer once`: one cycle, then exit (0 written or nothing to do, 1 failed, 2 usage)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from syncer.cli.options import shared_options
from syncer.cli.wiring import build_config, build_syncer, leading
from syncer.errors import SyncerError

log = logging.getLogger("syncer.cli")


@click.command()
@shared_options
def once(**options: Any) -> None:
    """Run one sync cycle. Exit 0 on success, 1 when the cycle failed (files untouched), 2 on usage errors."""
    config = build_config(options)
    syncer = build_syncer(config)
    with leading(syncer.elector):
        try:
            syncer.cycle()
        except SyncerError as exc:
            log.error("cycle failed, files untouched: %s", exc)
            sys.exit(1)
