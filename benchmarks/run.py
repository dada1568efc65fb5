"""The performance benchmark: `syncer once` against its floor, and propagation through real proxies. Does I/O.

    .venv/bin/python benchmarks/run.py            # N = 1,000 and 10,000, both renderers, 5 runs, propagation
    .venv/bin/python benchmarks/run.py --quick    # N = 1,000 only, 3 runs, 20 changes

For each N a fake Kubernetes API in its own process (benchmarks/apiserver.py) serves the synthetic cluster of
benchmarks/cluster.py over loopback HTTP, 500 items a page. Each round measures, side by side: the floor
(benchmarks/floor.py: list and parse, nothing else), then for each renderer `syncer once` cold (empty
folder), warm (nothing changed), after one Ingress changed and after one EndpointSlice changed. Each is a
child process: wall time around it, CPU time and peak RSS from its own rusage (os.wait4), API requests and
response bytes from the server, files written from the output folder before and after (a file counts when
its inode, mtime or size changed, or it is new). The table shows the median of the rounds and the ratio
to the floor's median. Then, at N = 1,000, `syncer run --interval 1` feeds a real Traefik and a real Envoy
(benchmarks/propagation.py) and the time from an API change to the proxy serving it is measured.

Progress goes to stderr; the report (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.apiserver import ApiServer  # noqa: E402
from benchmarks.cluster import endpoint_address  # noqa: E402
from benchmarks.propagation import Propagation, measure_propagation, subprocess_env  # noqa: E402

RENDERERS = ("traefik", "envoy")
SCENARIOS = ("cold", "warm", "ingress changed", "slice changed")
ONCE_TIMEOUT = 900.0  # one `syncer once`; a cold run at 10,000 takes seconds to tens of seconds
SLOW_COLD = 120.0  # reported when a single cold run takes longer
CHANGED = 1  # the Ingress and EndpointSlice the change scenarios touch (index; no TLS)
MANIFEST = ".ingress-syncer/manifest.json"
LOCK = ".ingress-syncer/lock"  # the output lock: its pid note changes every write, it is not output
PROPAGATION_N = 1000
INTERVAL = 1.0
# Which files a change may rewrite (besides the writer's manifest), per renderer and scenario.
AFFECTED = {
    ("traefik", "ingress changed"): ("ingress-syncer.yaml",),
    ("traefik", "slice changed"): ("ingress-syncer.yaml",),
    ("envoy", "ingress changed"): ("rds/",),
    ("envoy", "slice changed"): ("eds/",),
}


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    requests: int
    api_mb: float
    api_cpu: float
    files: int
    written_mb: float
    names: tuple[str, ...] = ()


@dataclass
class Row:
    count: int
    renderer: str
    scenario: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(s, attribute) for s in self.samples))

    def names(self) -> set[str]:
        return {name for s in self.samples for name in s.names}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- measuring one child process -----------------------------------------------------------------


def folder_state(folder: Path | None) -> dict[str, tuple[int, int, int]]:
    """relative path -> (inode, mtime_ns, size) of every file below `folder` (dotfiles included, the lock not)."""
    if folder is None:
        return {}
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if relative != LOCK:
                st = path.stat()
                state[relative] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return state


def measure(argv: Sequence[str], api: ApiServer, log_path: Path, output: Path | None = None) -> Sample:
    """Runs `argv` to completion (killed after ONCE_TIMEOUT) and measures it; fails unless it exits 0."""
    before = folder_state(output)
    requests_before, bytes_before = api.stats()
    api_cpu_before = api.cpu_seconds()
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), cwd=REPO, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        watchdog = threading.Timer(ONCE_TIMEOUT, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C: the child goes too
            process.kill()
            process.wait(timeout=10)
            raise
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {process.returncode}; log tail:\n{tail}")
    api_cpu = api.cpu_seconds() - api_cpu_before
    requests_after, bytes_after = api.stats()
    after = folder_state(output)
    changed = sorted(name for name, state in after.items() if before.get(name) != state)
    return Sample(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=usage.ru_maxrss * 1024 / 1e6,  # Linux: kilobytes
        requests=requests_after - requests_before,
        api_mb=(bytes_after - bytes_before) / 1e6,
        api_cpu=api_cpu,
        files=len(changed),
        written_mb=sum(after[name][2] for name in changed) / 1e6,
        names=tuple(changed),
    )


def syncer_once(renderer: str, kubeconfig: Path, output: Path) -> list[str]:
    argv = [sys.executable, "-m", "syncer", "once", "--kubeconfig", str(kubeconfig), "--output-dir", str(output)]
    argv += ["--renderer", renderer]
    if renderer == "envoy":
        argv += ["--renderer-opt", "envoy.address=127.0.0.1"]
    return argv


def write_access(api: ApiServer, folder: Path) -> tuple[Path, Path]:
    """A kubeconfig for `syncer` and a token file for the floor, both naming the fake API."""
    kubeconfig = folder / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": api.url}}],
        "users": [{"name": "syncer", "user": {"token": api.token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "syncer"}}],
        "current-context": "bench",
    }
    kubeconfig.write_text(json.dumps(config))  # JSON is YAML
    token = folder / "token"
    token.write_text(api.token)
    return kubeconfig, token


# --- the once benchmarks -------------------------------------------------------------------------


class Toggles:
    """Each change flips one object between two states, so every change scenario really changes something."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.path_changed = False
        self.slice_changed = False

    def change_ingress(self) -> None:
        self.path_changed = not self.path_changed
        self.api.call("set_path", index=CHANGED, path="/api-v2" if self.path_changed else "/api")

    def change_slice(self) -> None:
        self.slice_changed = not self.slice_changed
        addresses = [endpoint_address(CHANGED, e) for e in range(5)]
        if self.slice_changed:
            addresses[0] = "127.31.255.254"  # outside every generated address
        self.api.call("set_endpoints", index=CHANGED, addresses=addresses)


def bench_size(
    count: int, renderers: Sequence[str], runs: int, work: Path, profile: bool
) -> tuple[list[Row], list[str]]:
    """Every row at one N, and the notes worth reporting (slow cold runs, profiles)."""
    folder = work / f"n{count}"
    folder.mkdir()
    progress(f"N={count}: generating the cluster and starting the API server")
    notes: list[str] = []
    with ApiServer(count, folder / "apiserver.log") as api:
        kubeconfig, token = write_access(api, folder)
        toggles = Toggles(api)
        floor = Row(count, "-", "floor")
        rows = {(r, s): Row(count, r, s) for r in renderers for s in SCENARIOS}
        floor_argv = [sys.executable, str(REPO / "benchmarks" / "floor.py"), "--server", api.url]
        floor_argv += ["--token-file", str(token)]
        log = folder / "runs.log"
        for round_number in range(1, runs + 1):
            sample = measure(floor_argv, api, log)
            floor.samples.append(sample)
            progress(f"N={count} round {round_number}/{runs}: floor {sample.wall:.2f}s")
            for renderer in renderers:
                parent = folder / f"{renderer}-{round_number}"  # the writer's staging folder goes beside `out`
                output = parent / "out"
                output.mkdir(parents=True)
                argv = syncer_once(renderer, kubeconfig, output)
                for scenario in SCENARIOS:
                    if scenario == "ingress changed":
                        toggles.change_ingress()
                    elif scenario == "slice changed":
                        toggles.change_slice()
                    sample = measure(argv, api, log, output)
                    rows[(renderer, scenario)].samples.append(sample)
                    progress(f"N={count} round {round_number}/{runs}: {renderer} {scenario} {sample.wall:.2f}s")
                    if scenario == "cold" and sample.wall > SLOW_COLD:
                        notes.append(f"N={count} {renderer}: a cold run took {sample.wall:.0f} s (> {SLOW_COLD:g} s)")
                # Kept until the benchmark ends: on ext4 without a journal, the kernel's inode allocator skips
                # inodes freed in the last 60-300 s one by one (recently_deleted), so deleting 11,000 files
                # here made the next cold run's file creation 2-10x slower (measured: 0.7-3.4 s of system
                # time for the same 11,000 creates).
        if profile:
            notes += profile_cycles(count, renderers, api, kubeconfig, folder, toggles)
    return [floor, *rows.values()], notes


# --- profiles ------------------------------------------------------------------------------------


def profile_cycles(
    count: int, renderers: Sequence[str], api: ApiServer, kubeconfig: Path, folder: Path, toggles: Toggles
) -> list[str]:
    """py-spy (wall clock, idle included: fsync and socket waits count) of a cold, a warm and a `syncer once` after
    one EndpointSlice changed."""
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    notes = []
    for renderer in renderers:
        output = folder / f"profile-{renderer}" / "out"
        output.mkdir(parents=True)
        for scenario in ("cold", "warm", "slice changed"):
            if scenario == "slice changed":
                toggles.change_slice()
            argv = syncer_once(renderer, kubeconfig, output)
            target = folder / f"profile-{renderer}-{scenario.replace(' ', '-')}"
            progress(f"N={count}: profiling {renderer} {scenario}")
            if py_spy:
                command = [py_spy, "record", "--format", "raw", "--rate", "250", "--nolineno", "--idle"]
                command += ["-o", str(target), "--", *argv]
            else:
                command = [sys.executable, "-m", "cProfile", "-o", str(target), *argv[1:]]
            done = subprocess.run(
                command, cwd=REPO, env=subprocess_env(), capture_output=True, timeout=ONCE_TIMEOUT, check=False
            )
            if done.returncode != 0:
                notes.append(f"profile of {renderer} {scenario} failed: {done.stderr.decode()[-500:]}")
                continue
            summary = summarise_py_spy(target) if py_spy else summarise_cprofile(target)
            notes.append(
                f"Profile, N={count}, {renderer}, {scenario} ({'py-spy' if py_spy else 'cProfile'}):\n{summary}"
            )
    return notes


_ENTRY_FRAMES = ("<module> (syncer/__main__.py)", "once (syncer/cli/once.py)", "Syncer.cycle (", "Syncer._cycle (")


def _short(frame: str) -> str:
    """`func (/abs/path/site-packages/pkg/mod.py)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def summarise_py_spy(path: Path, top: int = 10) -> str:
    """Where the samples went: phases of the cycle, the hottest project functions, the hottest own time.

    Cumulative counts skip pass-through frames (one callee takes >= 97% of their samples: the callee
    tells the same story), so a call chain such as KubeClient.list -> ... -> _request shows once.
    """
    cumulative: dict[str, int] = {}
    own: dict[str, int] = {}
    callees: dict[str, dict[str, int]] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        frames = [_short(f) for f in stack.split(";") if f]
        total += samples
        seen: set[str] = set()
        for i, frame in enumerate(frames):
            if frame in seen:  # recursion: count a function once per sample
                continue
            seen.add(frame)
            cumulative[frame] = cumulative.get(frame, 0) + samples
            callee = frames[i + 1] if i + 1 < len(frames) else "(own time)"
            per_callee = callees.setdefault(frame, {})
            per_callee[callee] = per_callee.get(callee, 0) + samples
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + samples
    if not total:
        return "    (no samples)"

    def share(samples: int) -> str:
        return f"{100 * samples / total:5.1f}%"

    def passes_through(frame: str) -> bool:
        return max(callees.get(frame, {"": 0}).values()) >= 0.97 * cumulative[frame]

    phases = callees.get("Syncer._cycle (syncer/run/cycle.py)", {})
    in_cycle = cumulative.get("Syncer.cycle (syncer/run/cycle.py)", 0)
    lines = [f"    {total} samples at 250 Hz ({total / 250:.1f} s, wall clock: waits on the API and fsync count)"]
    lines.append(f"    outside the cycle (interpreter start, imports, setup): {share(total - in_cycle).strip()}")
    lines.append(
        "    cycle phases: "
        + ", ".join(
            f"{frame.split(' (')[0]} {share(n).strip()}" for frame, n in sorted(phases.items(), key=lambda kv: -kv[1])
        )
    )
    project = {
        f: n
        for f, n in cumulative.items()
        if ("(syncer/" in f or "(renderers/" in f) and not f.startswith(_ENTRY_FRAMES) and not passes_through(f)
    }
    lines.append(f"    top {top} cumulative, project code (pass-through frames folded):")
    lines += [f"    {share(n)}  {f}" for f, n in sorted(project.items(), key=lambda kv: -kv[1])[:top]]
    lines.append(f"    top {top} own time, any code:")
    lines += [f"    {share(n)}  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def summarise_cprofile(path: Path, top: int = 10) -> str:
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("cumulative").print_stats(top)
    return "\n".join("    " + line for line in text.getvalue().splitlines() if line.strip())


# --- report --------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{memory_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown memory"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cores} cores ({model}), {memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, output on {filesystem_of(Path(tempfile.gettempdir()))}"
    )


def load_average() -> str:
    """The 1-minute load average: above the core count, other work shared the machine with the benchmark."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def filesystem_of(path: Path) -> str:
    best, kind = "", "unknown filesystem"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def format_table(rows: list[Row]) -> str:
    header = (
        "| N | renderer | scenario | wall s | CPU s | peak RSS MB | API requests | API MB | API server CPU s "
        "| files written | MB written | x floor (wall) | x floor (CPU) |"
    )
    lines = [header, "|" + "---|" * 13]
    floors = {row.count: row for row in rows if row.scenario == "floor"}
    for row in rows:
        floor = floors[row.count]
        wall, cpu = row.median("wall"), row.median("cpu")
        lines.append(
            f"| {row.count:,} | {row.renderer} | {row.scenario} | {wall:.2f} | {cpu:.2f} | {row.median('rss_mb'):.0f} "
            f"| {row.median('requests'):.0f} | {row.median('api_mb'):.1f} | {row.median('api_cpu'):.2f} "
            f"| {row.median('files'):.0f} "
            f"| {row.median('written_mb'):.3f} | {wall / floor.median('wall'):.2f} | {cpu / floor.median('cpu'):.2f} |"
        )
    return "\n".join(lines)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def format_propagation(results: list[Propagation]) -> str:
    lines = [
        "| renderer | p50 s | p99 s | max s | n | lost | API -> file p50 / p99 s | file -> served p50 / p99 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.seconds:
            total = result.seconds
            p50, p99, worst = percentile(total, 0.5), percentile(total, 0.99), max(total)
            proxy = [t - f for t, f in zip(result.seconds, result.to_file, strict=True)]
            lines.append(
                f"| {result.renderer} | {p50:.2f} | {p99:.2f} | {worst:.2f} | {len(total)} | {result.lost} "
                f"| {percentile(result.to_file, 0.5):.2f} / {percentile(result.to_file, 0.99):.2f} "
                f"| {percentile(proxy, 0.5):.2f} / {percentile(proxy, 0.99):.2f} |"
            )
        else:
            lines.append(f"| {result.renderer} | - | - | - | 0 | {result.lost} | - | - |")
    for result in results:
        if result.skipped:
            lines.append(f"\n{result.renderer} not measured: {result.skipped}")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check_targets(rows: list[Row], propagation: list[Propagation]) -> list[str]:
    """One PASS/FAIL line per target, at the largest N measured."""
    lines = []
    sizes = sorted({row.count for row in rows})
    if sizes:
        largest = sizes[-1]
        at = {(r.renderer, r.scenario): r for r in rows if r.count == largest}
        floor = at[("-", "floor")]
        floor_wall, floor_cpu = floor.median("wall"), floor.median("cpu")
        limits = {"cold": 1.5, "warm": 1.15, "ingress changed": 1.25, "slice changed": 1.25}
        renderers = sorted({r.renderer for r in rows if r.renderer != "-"})
        for renderer in renderers:
            for scenario, limit in limits.items():
                row = at[(renderer, scenario)]
                wall, cpu = row.median("wall") / floor_wall, row.median("cpu") / floor_cpu
                extra = ""
                ok = wall <= limit
                if scenario == "warm":
                    files = row.median("files")
                    ok = ok and files == 0
                    extra = f", {files:.0f} files written (target 0)"
                if scenario in ("ingress changed", "slice changed"):
                    allowed = AFFECTED[(renderer, scenario)]
                    names = sorted(row.names() - {MANIFEST})
                    stray = [n for n in names if not n.startswith(allowed)]
                    ok = ok and not stray
                    extra = f", rewrote {', '.join(names) or 'nothing'}" + (
                        f" (not only {'/'.join(allowed)})" if stray else ""
                    )
                    if MANIFEST in row.names():
                        extra += f" and {MANIFEST}"
                lines.append(
                    f"{verdict(ok)}  N={largest:,} {renderer} {scenario}: {wall:.2f}x floor wall "
                    f"(target <= {limit}x; CPU {cpu:.2f}x){extra}"
                )
        syncer_rows = [r for r in rows if r.count == largest and r.renderer != "-"]
        if syncer_rows:
            worst = max(syncer_rows, key=lambda r: max(s.rss_mb for s in r.samples))
            rss = max(s.rss_mb for s in worst.samples)
            lines.append(
                f"{verdict(rss <= 400)}  N={largest:,} peak RSS {rss:.0f} MB ({worst.renderer} {worst.scenario}; "
                "target <= 400 MB)"
            )
        if len(sizes) >= 2:
            small = sizes[0]
            small_at = {(r.renderer, r.scenario): r for r in rows if r.count == small}
            factor = largest / small
            for key, row in sorted(at.items()):
                if key[0] == "-" or key not in small_at:
                    continue
                wall = row.median("wall") / small_at[key].median("wall")
                cpu = row.median("cpu") / small_at[key].median("cpu")
                lines.append(
                    f"{verdict(wall <= 1.1 * factor)}  N={small:,} -> {largest:,} {key[0]} {key[1]}: wall {wall:.1f}x, "
                    f"CPU {cpu:.1f}x (target <= {1.1 * factor:.0f}x)"
                )
            floor_scale = floor.median("wall") / small_at[("-", "floor")].median("wall")
            lines.append(f"info  N={small:,} -> {largest:,} floor: wall {floor_scale:.1f}x")
    for result in propagation:
        limit = INTERVAL + result.throttle + 1.0
        if result.seconds:
            p99 = percentile(result.seconds, 0.99)
            ok = p99 <= limit and result.lost == 0
            lines.append(
                f"{verdict(ok)}  propagation {result.renderer}: p99 {p99:.2f} s over {len(result.seconds)} changes, "
                f"{result.lost} lost (target <= {limit:.1f} s)"
            )
        elif result.skipped:
            lines.append(f"FAIL  propagation {result.renderer}: not measured: {result.skipped}")
        else:
            lines.append(f"FAIL  propagation {result.renderer}: no change was served")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="syncer performance benchmark (prints one Markdown report)")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated N (default: 1000,10000)")
    parser.add_argument("--renderers", default=",".join(RENDERERS), help="comma-separated (default: traefik,envoy)")
    parser.add_argument("--runs", type=int, default=5, help="rounds per N; the table shows medians (default: 5)")
    parser.add_argument("--changes", type=int, default=50, help="API changes per proxy for propagation (default: 50)")
    parser.add_argument("--quick", action="store_true", help="N=1000 only, 3 runs, 20 changes")
    parser.add_argument("--no-once", action="store_true", help="skip the `syncer once` table")
    parser.add_argument("--no-propagation", action="store_true", help="skip the propagation benchmark")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy (else cProfile) of cold, warm and slice changed at the largest N"
    )
    parser.add_argument("--work-dir", help="where output folders, logs and profiles go (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles, output folders)")
    args = parser.parse_args(argv)
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    runs = 3 if args.quick else max(1, args.runs)
    changes = 20 if args.quick else max(1, args.changes)
    renderers = [r.strip() for r in args.renderers.split(",") if r.strip()]
    unknown = set(renderers) - set(RENDERERS)
    if unknown:
        parser.error(f"unknown renderer(s) {', '.join(sorted(unknown))}; known: {', '.join(RENDERERS)}")
    if args.work_dir:
        work = Path(args.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="syncer-bench-"))
    started = time.monotonic()
    load_before = load_average()
    rows: list[Row] = []
    notes: list[str] = []
    propagation: list[Propagation] = []
    try:
        if not args.no_once:
            for count in sizes:
                size_rows, size_notes = bench_size(count, renderers, runs, work, args.profile and count == max(sizes))
                rows += size_rows
                notes += size_notes
        if not args.no_propagation:
            folder = work / "propagation"
            folder.mkdir()
            progress(f"propagation: N={PROPAGATION_N}, {changes} changes per proxy")
            with ApiServer(PROPAGATION_N, folder / "apiserver.log") as api:
                kubeconfig, _ = write_access(api, folder)
                for renderer in renderers:
                    propagation.append(
                        measure_propagation(
                            renderer,
                            api,
                            kubeconfig,
                            folder / renderer,
                            changes=changes,
                            interval=INTERVAL,
                            progress=progress,
                        )
                    )
    finally:
        if args.keep or args.work_dir:
            progress(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    print(f"Machine: {machine()}; load average (1 min) {load_before} before, {load_average()} after")
    print(f"Command: `{command.strip()}` ({time.monotonic() - started:.0f} s; medians of {runs} runs)")
    print()
    if rows:
        print(format_table(rows))
        print()
    if propagation:
        print(f"Propagation at N={PROPAGATION_N:,}, `syncer run --interval {INTERVAL:g}` (Traefik throttle 200 ms):")
        print()
        print(format_propagation(propagation))
        print()
    print("Targets:")
    for line in check_targets(rows, propagation):
        print(f"- {line}")
    for note in notes:
        print()
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
