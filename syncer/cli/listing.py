"""`syncer renderers`: the renderer plugins installed, and which package provides each."""

from __future__ import annotations

import click

from syncer.render.plugins import available_renderers


@click.command()
def renderers() -> None:
    """List the renderers found through the `syncer.renderers` entry-point group."""
    for name, provider in available_renderers().items():
        click.echo(f"{name}\t{provider}")
