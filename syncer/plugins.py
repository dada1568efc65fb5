"""Renderer plugins: the Renderer protocol and discovery through the `syncer.renderers` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol

from syncer.errors import ConfigError
from syncer.model import RoutingModel

ENTRY_POINT_GROUP = "syncer.renderers"


class Renderer(Protocol):
    """Turns a RoutingModel into files. Pure: no clock, no environment, same model -> same bytes.

    The mapping's order is the write order (referenced files before the files that reference them).
    """

    name: ClassVar[str]

    def __init__(self, options: Mapping[str, str], output_dir: str = "") -> None:
        """`options` are this renderer's `--renderer-opt` pairs (reject unknown keys with ConfigError);
        `output_dir` is the absolute output folder, for renderers whose files name each other by path."""

    def render(self, model: RoutingModel) -> Mapping[str, bytes]: ...

    # Optional: `check(files)` runs after render and before anything is written (it may run a validator);
    # raising there keeps the last good files in place.
    # Optional: `transition(read, files)` returns intermediate file sets written (without pruning) before
    # `files`, given `read(name) -> bytes | None` for the files on disk: how a proxy that applies each file
    # on its own is moved from the old state to the new one without a moment where a reference dangles.
    # Optional: `prune_delay(name) -> seconds` keeps a file no longer produced that long before removing it.


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def available_renderers() -> dict[str, str]:
    """Renderer name -> the distribution (or module) that provides it."""
    result = {}
    for name, eps in sorted(_entry_points().items()):
        result[name] = ", ".join(sorted({_provider(ep) for ep in eps}))
    return result


def _provider(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def load_renderer(name: str, options: Mapping[str, str], output_dir: str = "") -> Renderer:
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ConfigError(f"unknown renderer {name!r}; available: {known}")
    distinct = {ep.value for ep in eps[name]}
    if len(distinct) > 1:
        providers = "; ".join(sorted(f"{_provider(ep)} ({ep.value})" for ep in eps[name]))
        raise ConfigError(f"renderer {name!r} is provided by more than one package: {providers}; uninstall one")
    try:
        factory = eps[name][0].load()
    except Exception as exc:  # a third-party plugin can fail to import in any way
        raise ConfigError(f"renderer {name!r} ({eps[name][0].value}) failed to load: {exc}") from exc
    renderer: Renderer = factory(options, output_dir=output_dir)
    return renderer


def split_renderer_options(pairs: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """`traefik.entrypoint-http=web` -> {"traefik": {"entrypoint-http": "web"}}; malformed -> ConfigError."""
    result: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        renderer, dot, option = key.partition(".")
        if not sep or not dot or not renderer or not option:
            raise ConfigError(f"--renderer-opt {pair!r} must look like RENDERER.KEY=VALUE")
        result.setdefault(renderer, {})[option] = value
    return result
