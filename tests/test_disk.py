"""A full disk, a file size limit, a missing or read-only output folder: files kept, errors name the folder. Disk I/O.

Disk full is a real 1 MiB tmpfs filled to the last byte (the tests run as root; without `mount` they skip, and the
RLIMIT_FSIZE variant still runs). "Not writable" is a read-only bind mount of the output folder: as root, permission
bits would not stop a write. Every mount is undone in a `finally`.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncer.source import DirectorySource
from tests.cluster import (
    RENDERERS,
    REPO,
    SyncerProcess,
    folder_bytes,
    folder_state,
    fresh_render,
    make_dir,
    mentions,
    syncer_env,
)

DEMO = REPO / "fixtures" / "demo"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path / "manifests"))


def change(source: Path, new: str = "/v2/api") -> None:
    """A change every renderer writes: the `/api` paths of the demo Ingresses move."""
    ingresses = source / "ingresses.yaml"
    text = ingresses.read_text()
    assert "path: /api" in text
    ingresses.write_text(text.replace("path: /api", f"path: {new}"))


def once(
    source: Path, out: Path, renderer: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["once", "--source", str(source), "--renderer", renderer, "--output-dir", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args],
        cwd=REPO,
        env=syncer_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec_fn,
    )


def run_mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def mounted(path: Path, *args: str) -> Iterator[Path]:
    """`mount ARGS PATH` for the duration (skips the test when mounting is not allowed here)."""
    try:
        run_mount(*args, str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount here: {getattr(exc, 'stderr', '') or exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of `folder`'s filesystem."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


def no_bigger_files() -> None:
    """In the child: any write that grows a file fails with EFBIG (SIGXFSZ ignored, or it would kill the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if " ERROR " in line), "")


@pytest.mark.parametrize("renderer", RENDERERS)
def test_disk_full_keeps_the_files_and_the_next_cycle_writes(source: Path, tmp_path: Path, renderer: str) -> None:
    with mounted(make_dir(tmp_path / "disk"), "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = make_dir(disk / "out")  # the staging folder beside it is on the same tmpfs
        first = once(source, out, renderer)
        assert first.returncode == 0, first.stderr
        before = folder_state(out)
        change(source)
        filler = fill(disk)

        full = once(source, out, renderer)
        assert full.returncode == 1, full.stderr
        line = error_line(full.stderr)
        assert "no space left" in line and str(out) in line and "previous files kept" in line, full.stderr
        assert folder_state(out) == before

        filler.unlink()
        again = once(source, out, renderer)
        assert again.returncode == 0, again.stderr
        assert mentions(out, b"/v2/api")
        assert folder_bytes(out) == fresh_render(renderer, out, DirectorySource(source))
        assert not [p for p in disk.rglob("*.tmp")], "temp files left on the disk"


@pytest.mark.parametrize("renderer", RENDERERS)
def test_file_size_limit_keeps_the_files_and_the_next_cycle_writes(source: Path, tmp_path: Path, renderer: str) -> None:
    """The same without a mount: RLIMIT_FSIZE 0 in the child, so the first byte written fails with EFBIG."""
    out = make_dir(tmp_path / "out")
    assert once(source, out, renderer).returncode == 0
    before = folder_state(out)
    change(source)

    limited = once(source, out, renderer, preexec_fn=no_bigger_files)
    assert limited.returncode == 1, limited.stderr
    line = error_line(limited.stderr)
    assert "file too large" in line.lower() and str(out) in line and "previous files kept" in line, limited.stderr
    assert folder_state(out) == before

    again = once(source, out, renderer)
    assert again.returncode == 0, again.stderr
    assert folder_bytes(out) == fresh_render(renderer, out, DirectorySource(source))
    assert not [p for p in tmp_path.rglob("*.tmp")], "temp files left"


@pytest.mark.parametrize("renderer", RENDERERS)
def test_missing_output_folder_is_named_at_start_up(source: Path, tmp_path: Path, renderer: str) -> None:
    absent = tmp_path / "absent"
    result = once(source, absent, renderer)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert f"output folder {absent} does not exist" in line, result.stderr
    assert not absent.exists()


@pytest.mark.parametrize("renderer", RENDERERS)
def test_file_in_place_of_the_output_folder_is_a_usage_error(source: Path, tmp_path: Path, renderer: str) -> None:
    """Caught by the option's own check (click.Path(file_okay=False)) before anything starts: exit 2."""
    in_place = tmp_path / "out"
    in_place.write_text("not a folder\n")
    result = once(source, in_place, renderer)
    assert result.returncode == 2
    assert f"'{in_place}' is a file" in result.stderr, result.stderr
    assert in_place.read_text() == "not a folder\n"


@contextmanager
def bind_mounted(folder: Path) -> Iterator[Path]:
    """`folder` bind-mounted onto itself: a mount point of its own, on the same filesystem as its parent."""
    with mounted(folder, "--bind", str(folder)):
        yield folder


@pytest.mark.parametrize("renderer", RENDERERS)
def test_read_only_output_folder_is_named_at_start_up(source: Path, tmp_path: Path, renderer: str) -> None:
    """A read-only bind mount of the output folder (as root, permission bits would not stop a write)."""
    out = make_dir(tmp_path / "out")
    assert once(source, out, renderer).returncode == 0
    before = folder_state(out)
    change(source)
    with bind_mounted(out):
        run_mount("-o", "remount,ro,bind", str(out))
        for verb in ("once", "run"):
            with SyncerProcess([verb, "--source", str(source), "--renderer", renderer, "--output-dir", str(out)]) as p:
                assert p.wait(timeout=30) == 1, p.log
            assert f"output folder {out} is not writable" in error_line(p.log), p.log
            assert folder_state(out) == before


@pytest.mark.parametrize("renderer", RENDERERS)
def test_folder_turning_read_only_fails_cycles_until_writable(source: Path, tmp_path: Path, renderer: str) -> None:
    """The volume holding the output folder is remounted read-only under a running `run` (ext4's errors=remount-ro
    does that): cycles fail naming the folder and keep the files; the first cycle after it is writable again writes."""
    with mounted(make_dir(tmp_path / "volume"), "-t", "tmpfs", "-o", "size=4m", "tmpfs") as volume:
        out = make_dir(volume / "out")
        args = ["run", "--source", str(source), "--renderer", renderer, "--output-dir", str(out), "--interval", "30"]
        with SyncerProcess(args) as running:
            running.wait_for_log("wrote ")
            written = folder_state(out)
            run_mount("-o", "remount,ro", str(volume))
            change(source)
            mark = len(running.lines)
            running.proc.send_signal(signal.SIGHUP)
            line = running.wait_for_log("cycle failed, last good files kept", since=mark)
            assert f"output folder {out} is not writable" in line, running.log
            assert folder_state(out) == written

            run_mount("-o", "remount,rw", str(volume))
            mark = len(running.lines)
            running.proc.send_signal(signal.SIGHUP)
            running.wait_for_log("wrote ", since=mark)
            assert mentions(out, b"/v2/api")
            assert running.stop() == 0
        assert folder_bytes(out) == fresh_render(renderer, out, DirectorySource(source))


@pytest.mark.parametrize("renderer", RENDERERS)
def test_output_folder_that_is_a_bind_mount_of_its_own_is_written(source: Path, tmp_path: Path, renderer: str) -> None:
    """How container volumes and systemd BindPaths= look: the folder is a mount point, yet on the same filesystem
    (same st_dev) as its parent. A rename from a staging folder beside it crosses mounts: EXDEV."""
    out = make_dir(tmp_path / "out")
    with bind_mounted(out):
        result = once(source, out, renderer)
        written = folder_bytes(out)
    assert result.returncode == 0, error_line(result.stderr)
    assert written == fresh_render(renderer, out, DirectorySource(source))  # unmounted: a mount point cannot move
