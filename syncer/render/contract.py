"""The renderer contract: the one place that says what a renderer plugin must offer and what it may offer. No I/O.

A renderer is a class registered in the `syncer.renderers` entry-point group (the built-ins too). Required:

    name: ClassVar[str]                                   the entry-point name
    __init__(options, output_dir="")                      its `--renderer-opt` pairs; unknown keys -> ConfigError
    render(model) -> Mapping[str, bytes]                  pure: no clock, no environment, no disk;
                                                          same model -> same bytes; mapping order = write order
                                                          (a file appears only after the files it names)

Optional capabilities, each a Protocol below that the pipeline asks for by type (`isinstance`):

    ChecksFiles.check(files)                              after render, before anything is written; may do I/O
                                                          (a validator binary); raising keeps the last good files
    TransitionsFiles.transition(read, files)              intermediate file sets written (nothing pruned) before
                                                          `files`, given `read(name)` of the files on disk: how a
                                                          proxy that applies each file on its own moves from the
                                                          old state to the new one with no dangling reference
    DelaysPruning.prune_delay(name) -> seconds            a file no longer produced stays that long (draining)
    DeclaresSecrets.holds_secret(name) -> bool            which files hold private keys: mode 0600 in folders
                                                          0700. A renderer that does not say is treated as if
                                                          every file did (fail closed: a key is never 0644)
    Bootstraps.bootstrap(output_dir, settings) -> str     the proxy's static configuration that loads the files,
        with bootstrap_options: ClassVar[Mapping[str, tuple[str, str]]]
                                                          flag name -> (default, help); each becomes an option of
                                                          `syncer bootstrap NAME`; bad settings -> ConfigError

Renderers import only `syncer.model`, `syncer.errors`, `syncer.jsoncodec` and their own options; they never
import this module (the Protocols are structural), so a plugin depends on the model, not on the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from syncer.model import RoutingModel

BootstrapOptions = Mapping[str, tuple[str, str]]  # flag name (without dashes) -> (default, help)


class Renderer(Protocol):
    """The required part: turns a RoutingModel into files."""

    name: ClassVar[str]

    def __init__(self, options: Mapping[str, str], output_dir: str = "") -> None:
        """`options` are this renderer's `--renderer-opt` pairs (reject unknown keys with ConfigError);
        `output_dir` is the absolute output folder, for renderers whose files name each other by path."""

    def render(self, model: RoutingModel) -> Mapping[str, bytes]: ...


@runtime_checkable
class ChecksFiles(Protocol):
    def check(self, files: Mapping[str, bytes]) -> None: ...


@runtime_checkable
class TransitionsFiles(Protocol):
    def transition(
        self, read: Callable[[str], bytes | None], files: Mapping[str, bytes]
    ) -> Sequence[Mapping[str, bytes]]: ...


@runtime_checkable
class DelaysPruning(Protocol):
    def prune_delay(self, name: str) -> float: ...


@runtime_checkable
class DeclaresSecrets(Protocol):
    def holds_secret(self, name: str) -> bool: ...


@runtime_checkable
class Bootstraps(Protocol):
    bootstrap_options: ClassVar[BootstrapOptions]

    def bootstrap(self, output_dir: str, settings: Mapping[str, str]) -> str: ...


def prune_delay_of(renderer: Renderer) -> Callable[[str], float]:
    """How long a file the renderer no longer produces stays on disk (0: removed after the write)."""
    return renderer.prune_delay if isinstance(renderer, DelaysPruning) else _no_delay


def secret_files_of(renderer: Renderer) -> Callable[[str], bool]:
    """Which of the renderer's files hold secrets; every file, when the renderer does not say."""
    return renderer.holds_secret if isinstance(renderer, DeclaresSecrets) else _every_file


def bootstrap_options_of(factory: object) -> BootstrapOptions | None:
    """The options of a renderer class's bootstrap, read before an instance exists (to build the command line);
    None when the class offers no bootstrap."""
    options = getattr(factory, "bootstrap_options", None)
    if not callable(getattr(factory, "bootstrap", None)) or not isinstance(options, Mapping):
        return None
    return options


def _no_delay(name: str) -> float:
    return 0.0


def _every_file(name: str) -> bool:
    return True
