"""The `syncer` command line: each command in a module of its own; options validate, then hand over to run/."""

from __future__ import annotations

import click

from syncer import __version__
from syncer.cli.bootstrap import bootstrap
from syncer.cli.listing import renderers
from syncer.cli.loop import run
from syncer.cli.once import once


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncer")
def main() -> None:
    """Turns Kubernetes Ingresses into Traefik or Envoy configuration files, atomically."""


for command in (once, run, bootstrap, renderers):
    main.add_command(command)

__all__ = ["main"]
