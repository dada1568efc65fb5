"""`syncer bootstrap NAME`: the proxy's static configuration, asked of the renderer plugin NAME.

Each renderer that offers a bootstrap becomes a subcommand whose options are the ones it declares
(syncer.render.contract.Bootstraps), plus `--output-dir` and `--renderer-opt` for every one of them.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import click

from syncer.cli.options import env
from syncer.errors import ConfigError
from syncer.render.contract import BootstrapOptions, Bootstraps, bootstrap_options_of
from syncer.render.plugins import available_renderers, load_renderer_class, split_renderer_options


class BootstrapCommands(click.Group):
    """Subcommands found through the `syncer.renderers` entry points, not written here: a third-party renderer
    offers a bootstrap the same way the built-in ones do."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = []
        for name in available_renderers():
            try:
                if bootstrap_options_of(load_renderer_class(name)) is not None:
                    names.append(name)
            except ConfigError:
                continue  # a broken plugin is reported when it is asked for by name
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command:
        try:
            factory = load_renderer_class(cmd_name)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from exc
        options = bootstrap_options_of(factory)
        if options is None:
            raise click.UsageError(
                f"renderer {cmd_name!r} offers no bootstrap: configure its proxy by hand to load the files in "
                "--output-dir (see the renderer's documentation)",
                ctx,
            )
        return _bootstrap_command(cmd_name, factory, options)


def _bootstrap_command(name: str, factory: Any, declared: BootstrapOptions) -> click.Command:
    def callback(output_dir: str, renderer_opts: tuple[str, ...], **settings: str) -> None:
        folder = os.path.abspath(output_dir)
        try:
            renderer = factory(split_renderer_options(renderer_opts).get(name, {}), output_dir=folder)
            if not isinstance(renderer, Bootstraps):
                raise ConfigError(f"renderer {name!r} declares bootstrap options but has no bootstrap()")
            text = renderer.bootstrap(folder, {flag: settings[_param(flag)] for flag in declared})
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        click.echo(text, nl=False)

    params: list[click.Parameter] = [
        click.Option(
            ["--output-dir"],
            required=True,
            type=click.Path(file_okay=False),
            help=f"The folder syncer writes to, as {name} sees it.",
            **env("OUTPUT_DIR"),
        ),
        click.Option(
            ["--renderer-opt", "renderer_opts"],
            multiple=True,
            metavar=f"{name}.KEY=VALUE",
            help="Renderer options, as given to `syncer run`.",
            **env("RENDERER_OPT"),
        ),
    ]
    for flag, (default, text) in declared.items():
        params.append(click.Option([f"--{flag}", _param(flag)], default=default, show_default=True, help=text))
    text = inspect.getdoc(factory.bootstrap) or f"Print a static configuration of {name} that loads --output-dir."
    return click.Command(name, callback=callback, params=params, help=text)


def _param(flag: str) -> str:
    return flag.replace("-", "_")


@click.group(cls=BootstrapCommands)
def bootstrap() -> None:
    """Print a proxy configuration that loads the files `syncer` writes (asked of the renderer plugin)."""
