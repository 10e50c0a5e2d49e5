#!/usr/bin/env python3
"""berth-runtime against runc, side by side: ``run`` of a busybox bundle running /bin/true.

One bundle is built, then N rounds run each runtime once (the order alternates between
rounds), each run with its own ``--root``, container id and cgroupsPath, and a
``delete --force`` after it. For each run it measures the wall time of the whole
``run`` command and the peak RSS of the runtime process tree (``ru_maxrss`` from
``wait4`` on the runtime's pid: the runtime and the children it reaped, such as the
container's init). Reports median and p90 time, median and max peak RSS, and the ratios
berth/runc.

Peak RSS comes from GNU time (``/usr/bin/time -f %M``, Debian's ``time``), which reads
``ru_maxrss`` with ``wait4`` on the runtime it forked. ``wait4`` from this script would
not do: Linux charges a process, at ``execve``, the peak RSS of the memory it had before
(for a child of Python, this Python's), so every figure would be at least this script's
own RSS. The wrapper adds about a millisecond to each wall time, the same for both
runtimes. Without GNU time the script falls back to ``wait4`` and says so.

    bench_runtime.py [--runs 30] [--warmup 1] [--only berth|runc] [--json]
                     [--berth PATH] [--runc PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "src")]

from tests.support.bundle import Bundle, make_bundle  # noqa: E402
from tests.support.cleanup import remove_cgroup_parent  # noqa: E402

DEFAULT_BERTH = os.path.join(REPO, ".venv", "bin", "berth-runtime")
DEFAULT_RUNC = shutil.which("runc") or "/usr/sbin/runc"
GNU_TIME: str | None = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass
class Series:
    name: str
    binary: str
    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    failure: str | None = None

    def summary(self) -> dict:
        if not self.times:
            return {"name": self.name, "binary": self.binary, "runs": 0, "failure": self.failure}
        return {
            "name": self.name,
            "binary": self.binary,
            "runs": len(self.times),
            "time_median_s": statistics.median(self.times),
            "time_p90_s": percentile(self.times, 90),
            "time_min_s": min(self.times),
            "rss_median_mib": statistics.median(self.rss_kib) / 1024,
            "rss_max_mib": max(self.rss_kib) / 1024,
            "failure": self.failure,
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def run_once(series: Series, bundle: Bundle, cgroup_parent: str, tag: str) -> tuple[float, int]:
    """One ``run`` with a fresh root, id and cgroup; returns (seconds, peak RSS KiB)."""
    container_id = f"bench-{series.name}-{tag}-{secrets.token_hex(3)}"
    bundle.config["linux"]["cgroupsPath"] = f"{cgroup_parent}/{container_id}"
    bundle.save()
    workdir = tempfile.mkdtemp(prefix=f"bench-{series.name}-")
    root = os.path.join(workdir, "root")
    os.mkdir(root, 0o700)
    cmd = [series.binary, "--root", root, "run", "--bundle", bundle.path, container_id]
    rss_file = os.path.join(workdir, "maxrss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd] if GNU_TIME else cmd
    try:
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            _pid, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()
                raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {message[-2000:]}")
        if GNU_TIME:
            with open(rss_file) as f:
                lines = [line for line in f.read().splitlines() if line.strip()]
            return elapsed, int(lines[-1])
        return elapsed, usage.ru_maxrss
    finally:
        subprocess.run(
            [series.binary, "--root", root, "delete", "--force", container_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def bench(series_list: list[Series], runs: int, warmup: int, workdir: str, progress: bool) -> None:
    cgroup_parent = f"/berth-bench-{secrets.token_hex(4)}"
    bundle = make_bundle(os.path.join(workdir, "bundle"), ["/bin/true"])
    try:
        for rnd in range(-warmup, runs):
            order = series_list if rnd % 2 == 0 else list(reversed(series_list))
            for s in order:
                if s.failure is not None:
                    continue
                try:
                    elapsed, rss = run_once(s, bundle, cgroup_parent, str(rnd))
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    s.failure = str(e)
                    print(f"{s.name}: failed: {e}", file=sys.stderr)
                    continue
                if rnd >= 0:
                    s.times.append(elapsed)
                    s.rss_kib.append(rss)
            if progress:
                print(f"\rround {rnd + 1}/{runs}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    finally:
        left = remove_cgroup_parent(cgroup_parent)
        if left:
            print(f"warning: could not remove cgroups {', '.join(left)}", file=sys.stderr)


def ratios(summaries: dict[str, dict]) -> dict[str, float] | None:
    b, r = summaries.get("berth"), summaries.get("runc")
    if not b or not r or not b["runs"] or not r["runs"]:
        return None
    return {
        "time_median": b["time_median_s"] / r["time_median_s"],
        "time_p90": b["time_p90_s"] / r["time_p90_s"],
        "rss_median": b["rss_median_mib"] / r["rss_median_mib"],
    }


def print_table(summaries: dict[str, dict], ratio: dict[str, float] | None, runs: int) -> None:
    print(f"run of a busybox bundle running /bin/true, {runs} runs each, interleaved")
    if GNU_TIME:
        print(f"peak RSS by {GNU_TIME} (wall times include its ~1 ms)\n")
    else:
        print("peak RSS by wait4 from Python: each figure is at least this script's own RSS\n")
    print(f"{'runtime':<10} {'runs':>4} {'median':>9} {'p90':>9} {'min':>9} {'RSS med':>9} {'RSS max':>9}")
    for name, s in summaries.items():
        if not s["runs"]:
            print(f"{name:<10} {0:>4}   failed: {s['failure']}")
            continue
        print(
            f"{name:<10} {s['runs']:>4} {s['time_median_s'] * 1000:>7.1f}ms {s['time_p90_s'] * 1000:>7.1f}ms "
            f"{s['time_min_s'] * 1000:>7.1f}ms {s['rss_median_mib']:>6.1f}MiB {s['rss_max_mib']:>6.1f}MiB"
        )
        if s["failure"]:
            print(f"{'':<10} (stopped after a failure: {s['failure']})")
    if ratio:
        print(
            f"\nberth/runc: median time x{ratio['time_median']:.2f}, p90 time x{ratio['time_p90']:.2f}, "
            f"median peak RSS x{ratio['rss_median']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per runtime (default 30)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per runtime first (default 1)")
    parser.add_argument("--only", choices=["berth", "runc"], help="run one runtime only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--berth", default=DEFAULT_BERTH, help=f"berth-runtime binary (default {DEFAULT_BERTH})")
    parser.add_argument("--runc", default=DEFAULT_RUNC, help=f"runc binary (default {DEFAULT_RUNC})")
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        parser.error("run as root: it runs real containers")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    wanted = [("berth", args.berth), ("runc", args.runc)]
    series_list = [Series(name, binary) for name, binary in wanted if args.only in (None, name)]
    for s in series_list:
        if not (os.path.isfile(s.binary) and os.access(s.binary, os.X_OK)):
            parser.error(f"{s.name}: {s.binary} is not an executable file")

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as workdir:
        bench(series_list, args.runs, args.warmup, workdir, progress=not args.json and sys.stderr.isatty())

    summaries = {s.name: s.summary() for s in series_list}
    ratio = ratios(summaries)
    if args.json:
        rss_by = f"{GNU_TIME} -f %M" if GNU_TIME else "wait4"
        print(json.dumps({"runs": args.runs, "rss_by": rss_by, "results": summaries, "ratios": ratio}, indent=2))
    else:
        print_table(summaries, ratio, args.runs)
    return 1 if any(s.failure for s in series_list) else 0


if __name__ == "__main__":
    sys.exit(main())
