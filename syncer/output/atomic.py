"""Replacing one file atomically: a temp file on the same filesystem, fsync, rename, fsync the folder. Disk I/O.

A reader sees the old bytes or the new bytes, never a mix, and after a crash the target is whole.
"""

from __future__ import annotations

import ctypes
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import cast

TEMP_SUFFIX = ".tmp"  # neither Traefik (*.yaml, *.yml, *.toml) nor Envoy (watched names only) loads these


def atomic_write(
    target: Path, content: bytes, mode: int, staging_dir: Path | None = None, group: int | None = None
) -> None:
    """Temp file on the target's filesystem (a name no proxy loads), fsync, rename, fsync the folder.

    A reader sees the old bytes or the new bytes, never a mix; after a crash the target is whole.
    """
    temp = stage_file(target, content, mode, staging_dir, group=group)
    try:
        os.replace(temp, target)
    except BaseException:
        unlink_quietly(temp)
        raise
    fsync_dir(target.parent)


def stage_file(
    target: Path, content: bytes, mode: int, staging_dir: Path | None, fsync: bool = True, group: int | None = None
) -> Path:
    """`content` in a new temp file beside `target` (or in `staging_dir`), with `mode` (and `group`), fsynced (unless
    the caller flushes the whole batch with `sync_filesystem`): ready to rename."""
    temp = (staging_dir or target.parent) / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if group is not None:
                os.fchown(fd, -1, group)  # before the chmod: a chown may clear mode bits
            os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(temp)
        raise
    return temp


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) (all dirty data of one filesystem to disk), None where the C library has none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_syncfs = _load_syncfs()


def sync_filesystem(folder: Path) -> None:
    """Everything written to the filesystem of `folder` is on disk when this returns (OSError otherwise)."""
    assert _syncfs is not None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(folder))
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CAN_SYNC_FILESYSTEM = _syncfs is not None


def sibling_staging_dir(output_dir: Path) -> Path | None:
    """A hidden folder beside the output folder on the same filesystem, or None when there cannot be one."""
    resolved = output_dir.resolve()
    if resolved.parent == resolved:
        return None  # the root folder has no sibling
    candidate = resolved.parent / f".{resolved.name}.syncer-staging"
    try:
        candidate.mkdir(mode=0o700, exist_ok=True)
        if candidate.stat().st_dev != output_dir.stat().st_dev:
            candidate.rmdir()  # a rename across filesystems is a copy, not atomic
            return None
        for leftover in candidate.glob(f"*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)  # from a process killed mid-write
    except OSError:
        return None
    return candidate
