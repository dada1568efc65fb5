"""The writer: atomic replace, unchanged-skip, manifest-based pruning, file modes, preview, failures."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from syncer.errors import WriteError
from syncer.output.atomic import atomic_write
from syncer.output.preview import redact
from syncer.output.writer import MANIFEST_NAME, FileWriter

KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def edit_in_place_later(path: Path, head: bytes) -> None:
    """Overwrites the start of `path` in place (same inode, same size), then dates it a second after the write it
    replaced: file timestamps are coarse (a clock tick), so an edit right after a write may otherwise keep its
    mtime (git's racy-clean case), which is not what these tests are about."""
    written = path.stat().st_mtime_ns
    with open(path, "r+b") as handle:
        handle.write(head)
    os.utime(path, ns=(written, written + 1_000_000_000))


def test_writes_files_and_manifest(tmp_path: Path) -> None:
    result = FileWriter(tmp_path).write({"a.yaml": b"a: 1\n", "sub/b.json": b"{}\n"})
    assert result.written == ("a.yaml", "sub/b.json")
    assert (tmp_path / "a.yaml").read_bytes() == b"a: 1\n"
    assert (tmp_path / "sub/b.json").read_bytes() == b"{}\n"
    assert FileWriter(tmp_path).owned_files() == ["a.yaml", "sub/b.json"]
    assert mode_of(tmp_path / "a.yaml") == 0o644


def test_unchanged_bytes_are_not_rewritten(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.yaml": b"a: 1\n"})
    target = tmp_path / "a.yaml"
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    inode = target.stat().st_ino
    result = writer.write({"a.yaml": b"a: 1\n"})
    assert result.written == () and result.unchanged == ("a.yaml",) and not result.changed
    assert target.stat().st_mtime_ns == 1_000_000_000
    assert target.stat().st_ino == inode


def test_changed_file_is_replaced_by_rename(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.yaml": b"a: 1\n"})
    inode = (tmp_path / "a.yaml").stat().st_ino
    writer.write({"a.yaml": b"a: 2\n"})
    assert (tmp_path / "a.yaml").read_bytes() == b"a: 2\n"
    assert (tmp_path / "a.yaml").stat().st_ino != inode  # a new file renamed into place, never an in-place write


def test_stale_owned_files_are_pruned_foreign_files_kept(tmp_path: Path) -> None:
    (tmp_path / "mine-not.yaml").write_bytes(b"hand written\n")
    writer = FileWriter(tmp_path)
    writer.write({"a.yaml": b"1", "b.yaml": b"2"})
    result = writer.write({"a.yaml": b"1"})
    assert result.removed == ("b.yaml",)
    assert not (tmp_path / "b.yaml").exists()
    assert (tmp_path / "mine-not.yaml").read_bytes() == b"hand written\n"
    assert writer.owned_files() == ["a.yaml"]


def test_files_declared_secret_are_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = {"certs.yaml": b"key: |\n" + KEY_PEM, "plain.yaml": b"x: 1\n", "token.txt": b"no PEM marker\n"}
        FileWriter(tmp_path).write(files, secret=lambda name: name != "plain.yaml")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "certs.yaml") == 0o600
    assert mode_of(tmp_path / "token.txt") == 0o600  # the renderer's word, not the bytes, decides
    assert mode_of(tmp_path / "plain.yaml") == 0o644


def test_a_file_that_becomes_secret_is_rewritten_owner_only(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.pem": KEY_PEM})
    assert mode_of(tmp_path / "a.pem") == 0o644  # not declared: the writer does not read the bytes
    writer.write({"a.pem": KEY_PEM}, secret=lambda name: True)
    assert mode_of(tmp_path / "a.pem") == 0o600


def test_no_temp_files_are_left_behind(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    for i in range(5):
        writer.write({"a.yaml": f"n: {i}\n".encode()})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ingress-syncer", "a.yaml"]


@pytest.mark.parametrize("name", ["../escape.yaml", "/abs.yaml", "", MANIFEST_NAME, "a/../../b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(WriteError, match="unsafe file name"):
        FileWriter(tmp_path).write({name: b"x"})
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(WriteError, match=str(missing)):
        FileWriter(missing).write({"a.yaml": b"x"})


def test_output_path_that_is_a_file_is_named(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(WriteError, match=f"{not_a_folder} is not a folder"):
        FileWriter(not_a_folder).check()


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.yaml": b"good\n", "b.yaml": b"good\n"})
    # A folder where a file must go makes the rename fail mid-cycle, like a full or broken disk would.
    (tmp_path / "c.yaml").mkdir()
    with pytest.raises(WriteError, match=r"c\.yaml"):
        writer.write({"a.yaml": b"good\n", "c.yaml": b"new\n"})
    assert (tmp_path / "a.yaml").read_bytes() == b"good\n"
    assert (tmp_path / "b.yaml").read_bytes() == b"good\n"  # not pruned: the cycle did not complete
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_preview_shows_a_diff_and_writes_nothing(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.yaml": b"a: 1\n", "old.yaml": b"x\n"})
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    text = writer.preview({"a.yaml": b"a: 2\n", "key.yaml": KEY_PEM})
    assert "-a: 1" in text and "+a: 2" in text
    assert "a/old.yaml" in text and "+++ /dev/null" in text
    assert "MIIEvQIBADANBg" not in text and "redacted" in text
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_redact_hides_every_private_key_block() -> None:
    assert "MIIE" not in redact("x\n" + KEY_PEM.decode() + "y\n" + KEY_PEM.decode().replace("PRIVATE", "EC PRIVATE"))


def test_readers_never_see_a_partial_or_empty_file(tmp_path: Path) -> None:
    """A reader in a tight loop while the writer replaces the file many times only ever sees whole versions."""
    target = tmp_path / "config.yaml"
    versions = [(f"version: {i}\n" + "x" * (50_000 + 997 * i) + "\nend\n").encode() for i in range(40)]
    valid = set(versions)
    atomic_write(target, versions[0], 0o644)
    seen_bad: list[int] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            content = target.read_bytes()
            reads += 1
            if content not in valid:
                seen_bad.append(len(content))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(5):
            for content in versions:
                atomic_write(target, content, 0o644)
    finally:
        done.set()
        thread.join(timeout=35)
    assert reads > 50, "the reader did not run concurrently"
    assert seen_bad == []


def test_temp_files_are_staged_beside_the_output_folder_not_in_it(tmp_path: Path) -> None:
    """Traefik reloads on any event in its folder: only the final rename may happen there."""
    out = tmp_path / "dynamic"
    out.mkdir()
    writer = FileWriter(out)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            seen.update(os.listdir(out))

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for i in range(200):
            writer.write({"a.yaml": f"n: {i}\n".encode() + b"x" * 20_000, "sub/b.json": f"{i}".encode()})
    finally:
        done.set()
        thread.join(timeout=35)
    assert not [name for name in seen if name.endswith(".tmp")]
    assert writer.staging_dir == tmp_path / ".dynamic.syncer-staging"
    assert list(writer.staging_dir.iterdir()) == []


def test_without_a_sibling_folder_temp_files_go_in_the_output_folder(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path, staging_dir=tmp_path)
    writer.write({"a.yaml": b"1\n"})
    writer.write({"a.yaml": b"2\n"})
    assert (tmp_path / "a.yaml").read_bytes() == b"2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ingress-syncer", "a.yaml"]


def test_leftover_temp_files_of_a_killed_writer_are_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    staging = tmp_path / ".out.syncer-staging"
    staging.mkdir()
    (staging / ".a.yaml.dead.tmp").write_bytes(b"half")
    FileWriter(out).write({"a.yaml": b"1\n"})
    assert list(staging.iterdir()) == []


def test_stale_files_wait_for_the_prune_delay(tmp_path: Path) -> None:
    """Envoy's draining listeners read removed files for a while: they go only after the delay."""
    now = [1000.0]
    writer = FileWriter(tmp_path, clock=lambda: now[0])
    writer.write({"a.json": b"1", "b.json": b"2"})
    first = writer.write({"a.json": b"1"}, prune_delay=60)
    assert first.removed == () and (tmp_path / "b.json").exists()
    assert writer.owned_files() == ["a.json", "b.json"]
    now[0] += 59
    assert writer.write({"a.json": b"1"}, prune_delay=60).removed == ()
    now[0] += 1
    assert writer.write({"a.json": b"1"}, prune_delay=60).removed == ("b.json",)
    assert not (tmp_path / "b.json").exists() and writer.owned_files() == ["a.json"]


def test_a_stale_file_produced_again_is_no_longer_stale(tmp_path: Path) -> None:
    now = [0.0]
    writer = FileWriter(tmp_path, clock=lambda: now[0])
    writer.write({"a.json": b"1", "b.json": b"2"})
    writer.write({"a.json": b"1"}, prune_delay=60)
    writer.write({"a.json": b"1", "b.json": b"3"}, prune_delay=60)
    now[0] += 120
    assert writer.write({"a.json": b"1", "b.json": b"3"}, prune_delay=60).removed == ()
    assert (tmp_path / "b.json").read_bytes() == b"3"


def test_an_intermediate_write_prunes_nothing(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.json": b"1", "b.json": b"2"})
    assert writer.write({"a.json": b"1"}, prune=False).removed == ()
    assert (tmp_path / "b.json").exists() and writer.read("b.json") == b"2"
    assert writer.write({"a.json": b"1"}).removed == ("b.json",)
    assert writer.read("b.json") is None


def test_key_files_live_in_an_owner_only_folder(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    (tmp_path / "certs").mkdir(mode=0o755)
    (tmp_path / "certs").chmod(0o755)
    files = {"certs/a.key": KEY_PEM, "certs/a.crt": b"-----BEGIN CERTIFICATE-----\n", "eds/x.json": b"{}"}
    writer.write(files, secret=lambda name: name.endswith(".key"))
    assert mode_of(tmp_path / "certs") == 0o700
    assert mode_of(tmp_path / "certs/a.key") == 0o600
    assert mode_of(tmp_path / "eds") == 0o755


def test_a_file_changed_behind_the_writers_back_is_rewritten_even_at_the_same_size(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    assert writer.write({"a.json": b"12345\n", "b.json": b"x\n"}).written == ("a.json", "b.json")
    edit_in_place_later(tmp_path / "a.json", b"9")  # same inode, same size, new bytes, new mtime
    again = writer.write({"a.json": b"12345\n", "b.json": b"x\n"})
    assert again.written == ("a.json",) and again.unchanged == ("b.json",)  # b: by its recorded stat, unread
    assert (tmp_path / "a.json").read_bytes() == b"12345\n"


def test_records_carried_through_manifest_only_updates_are_checked_again(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    writer.write({"a.json": b"12345\n"})
    edit_in_place_later(tmp_path / "a.json", b"9")
    writer.save_meta({"routes": 1})  # rewrites the manifest, carrying a.json's record from before the edit
    assert not writer.intact()
    assert writer.write({"a.json": b"12345\n", "c.json": b"{}"}).written == ("a.json", "c.json")
    assert (tmp_path / "a.json").read_bytes() == b"12345\n" and writer.intact()


def test_a_secret_file_group_may_read_the_keys_and_their_folder(tmp_path: Path) -> None:
    group = 101 if os.geteuid() == 0 and os.getegid() != 101 else os.getegid()
    files = {"certs/a.key": KEY_PEM, "certs/a.crt": b"-----BEGIN CERTIFICATE-----\n", "main.yaml": b"x: 1\n"}
    secret = lambda name: name.endswith(".key")  # noqa: E731
    FileWriter(tmp_path, secret_group=group).write(files, secret=secret)
    key, folder = tmp_path / "certs/a.key", tmp_path / "certs"
    assert (mode_of(key), key.stat().st_gid) == (0o640, group)
    assert (mode_of(folder), folder.stat().st_gid) == (0o750, group)
    assert mode_of(tmp_path / "main.yaml") == 0o644
    if os.geteuid() == 0:  # a key handed to another group by hand is handed back by the next write
        os.chown(key, -1, 0)
        assert FileWriter(tmp_path, secret_group=group).write(files, secret=secret).written == ("certs/a.key",)
        assert key.stat().st_gid == group
    FileWriter(tmp_path).write(files, secret=secret)
    assert (mode_of(key), mode_of(folder)) == (0o600, 0o700)
