"""The output folder's lock: one process at a time reads and rewrites its files and manifest. Disk I/O.

An exclusive flock(2) on `.ingress-syncer/lock`, a file created once and never renamed or removed (a lock on a
file that gets replaced locks nothing). Neither proxy notices it: Traefik loads only `*.yaml`/`*.yml`/`*.toml`
and does not watch subfolders, Envoy watches only the files it was pointed at. While the lock is held the file
holds the holder's pid, so a process that waits in vain can name it; released, the file is empty again. The
kernel drops the lock when its holder dies, `kill -9` included: a crash never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from syncer.deadline import Deadline
from syncer.errors import OutputLocked, WriteError

log = logging.getLogger("syncer.output.lock")

LOCK_NAME = ".ingress-syncer/lock"
POLL_SECONDS = 0.05  # between tries while another process holds it: a write takes milliseconds to seconds
# flock(2) refused by the filesystem itself (some FUSE and network mounts): the folder is still written, unlocked.
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class OutputLock:
    """Held with `held(deadline)` around each read-then-write of one output folder; never across idle time."""

    def __init__(self, output_dir: str | Path, poll: float = POLL_SECONDS) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self._poll = poll
        self._warned = False

    @contextlib.contextmanager
    def held(self, deadline: Deadline | None) -> Iterator[None]:
        """Waits for the lock until `deadline` (None: as long as it takes), then holds it inside the block.

        OutputLocked (a WriteError) names the holder's pid when the deadline passes first; WriteError when the
        lock file cannot be opened.
        """
        fd = self._open()
        locked = False
        try:
            locked = self._acquire(fd, deadline)
            if locked:
                _note(fd, f"{os.getpid()}\n")
            yield
        finally:
            try:
                if locked:
                    _note(fd, "")
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(mode=0o755, exist_ok=True)
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except PermissionError:
                # Created by another user: flock needs no write access, only the pid note is lost.
                return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise WriteError(
                f"cannot lock output folder {self.output_dir}: {exc.strerror or exc} ({exc.filename or self.path})"
            ) from exc

    def _acquire(self, fd: int, deadline: Deadline | None) -> bool:
        """True once locked; False when the filesystem has no flock (the write goes ahead unlocked)."""
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if waiting:
                    log.info("output folder %s unlocked: going on", self.output_dir)
                return True
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise WriteError(f"cannot lock output folder {self.output_dir}: {exc.strerror or exc}") from exc
                if not self._warned:
                    log.warning(
                        "the filesystem of %s does not support flock (%s): overlapping runs are not kept apart",
                        self.output_dir,
                        exc.strerror or exc,
                    )
                    self._warned = True
                return False
            if deadline is not None and deadline.expired():
                raise OutputLocked(
                    f"output folder {self.output_dir} is locked by {_holder(fd)} (another ingress-syncer writing "
                    f"it); gave up waiting when {deadline} passed; nothing written"
                )
            if not waiting:
                log.info("output folder %s is locked by %s; waiting for it", self.output_dir, _holder(fd))
                waiting = True
            time.sleep(self._poll if deadline is None else deadline.cap(self._poll))


def _note(fd: int, text: str) -> None:
    """The lock file's content: the holder's pid, or nothing. Best effort (a read-only descriptor, a full disk)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        if text:
            os.pwrite(fd, text.encode(), 0)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    # Empty between the holder's flock and its pid note, just after its release, or if it could not write it.
    return f"pid {text}" if text.isdigit() else "another process"
