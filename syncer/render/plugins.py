"""Renderer plugins: discovery and loading through the `syncer.renderers` entry-point group (the contract they
follow is syncer.render.contract). Reads installed package metadata."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from syncer.errors import ConfigError
from syncer.render.contract import Renderer

ENTRY_POINT_GROUP = "syncer.renderers"


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


def load_renderer_class(name: str) -> Any:
    """The factory (class) registered under `name`; ConfigError when none, several or a broken one is."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ConfigError(f"unknown renderer {name!r}; available: {known}")
    distinct = {ep.value for ep in eps[name]}
    if len(distinct) > 1:
        providers = "; ".join(sorted(f"{_provider(ep)} ({ep.value})" for ep in eps[name]))
        raise ConfigError(f"renderer {name!r} is provided by more than one package: {providers}; uninstall one")
    try:
        return eps[name][0].load()
    except Exception as exc:  # a third-party plugin can fail to import in any way
        raise ConfigError(f"renderer {name!r} ({eps[name][0].value}) failed to load: {exc}") from exc


def load_renderer(name: str, options: Mapping[str, str], output_dir: str = "") -> Renderer:
    renderer: Renderer = load_renderer_class(name)(options, output_dir=output_dir)
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
