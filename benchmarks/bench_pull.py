#!/usr/bin/env python3
"""Pull + unpack from a local registry: Berth against skopeo+umoci, ctr and docker.

One image is generated (``bench_unpack.build_image``: ~20,000 small files and a few big
ones in three gzip layers, >100 MB unpacked; ``--keep DIR`` reuses it), pushed by skopeo
to Debian's docker-registry on 127.0.0.1, then rounds alternate between:

- **berth**: ``berth.image.pull.pull`` into a fresh data root (download, verify, unpack
  into overlay snapshots, layers in parallel), in a fresh Python process;
- **skopeo+umoci**: ``skopeo copy docker://… oci:DIR`` then ``umoci unpack`` (each part
  timed too);
- **ctr**: ``ctr image pull --plain-http`` (fetch + unpack into containerd's overlayfs
  snapshotter) against a containerd started for the run with fresh roots (its start is
  not timed);
- **docker**: ``docker pull`` against a dockerd (20.10, overlay2) started for the run with
  fresh roots and its own containerd (its start is not timed).

Every run starts cold: fresh roots, and ``sync`` (untimed) before it. Reports the median
and min of each and the ratios to berth. As root. Daemons are stopped by pid at the end,
their mounts undone, their roots deleted.

    bench_pull.py [--runs 3] [--keep DIR] [--out DIR] [--files 20000] [--only berth,skopeo+umoci,ctr,docker] [--json]

``--out`` puts the runs' roots (and the registry's storage) elsewhere, e.g. on /dev/shm:
on a shared, noisy disk that compares the work rather than the disk's write-back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "src"), REPO, os.path.join(REPO, "benchmarks")]

from bench_unpack import TAG, _tree_bytes, build_image  # noqa: E402

from tests.support.cleanup import unmount_under  # noqa: E402
from tests.support.registry import RegistryProcess  # noqa: E402

IMAGE_PATH = "bench/pull:v1"


def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stdout.decode(errors='replace')[-2000:]}")


def _timed(fn: Callable[[], None]) -> float:
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Daemon:
    """A daemon of one run: started with fresh roots, stopped by pid, roots removed."""

    def __init__(self, argv: list[str], root: str, ready: Callable[[], bool], what: str) -> None:
        self.root = root
        self.log = open(os.path.join(root, f"{what}.log"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _quiet_ok(*argv: str, env: dict[str, str] | None = None) -> bool:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env, timeout=10).returncode == 0


# --- contenders ----------------------------------------------------------------------------------


def run_berth(ref: str, out: str) -> None:
    code = ("import sys; from berth.image.pull import pull; "
            "pull(sys.argv[1], store_root=sys.argv[2])")
    _run(sys.executable, "-c", code, ref, out, env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "src")))


def run_skopeo_umoci(ref: str, out: str, parts: dict[str, list[float]]) -> None:
    os.makedirs(out)
    t0 = time.perf_counter()
    _run("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/layout:{TAG}")
    t1 = time.perf_counter()
    _run("umoci", "unpack", "--image", f"{out}/layout:{TAG}", f"{out}/bundle")
    t2 = time.perf_counter()
    parts.setdefault("skopeo", []).append(t1 - t0)
    parts.setdefault("umoci", []).append(t2 - t1)


def with_containerd(out: str, fn: Callable[[str], None]) -> float:
    os.makedirs(out)
    sock = os.path.join(out, "containerd.sock")
    config = os.path.join(out, "config.toml")
    with open(config, "w") as f:
        f.write(f'version = 2\nroot = "{out}/root"\nstate = "{out}/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
                f'[debug]\n  address = "{out}/debug.sock"\n[metrics]\n  address = ""\n')
    daemon = Daemon(["containerd", "--config", config], out,
                    lambda: os.path.exists(sock) and _quiet_ok("ctr", "--address", sock, "version"), "containerd")
    try:
        return _timed(lambda: fn(sock))
    finally:
        daemon.stop()


def run_ctr(ref: str, out: str) -> float:
    return with_containerd(out, lambda sock: _run("ctr", "--address", sock, "--namespace", "bench", "image", "pull",
                                                  "--plain-http", ref))


def run_docker(ref: str, registry: str, out: str) -> float:
    os.makedirs(out)
    sock = os.path.join(out, "docker.sock")
    config = {
        "data-root": f"{out}/data", "exec-root": f"{out}/exec", "pidfile": f"{out}/docker.pid",
        "hosts": [f"unix://{sock}"], "storage-driver": "overlay2", "insecure-registries": [registry],
        "bridge": "none", "iptables": False, "ip6tables": False, "ip-masq": False, "ip-forward": False,
    }
    with open(f"{out}/daemon.json", "w") as f:
        json.dump(config, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = f"{out}/cli"
    daemon = Daemon(["dockerd", "--config-file", f"{out}/daemon.json"], out,
                    lambda: os.path.exists(sock) and _quiet_ok("docker", "-H", f"unix://{sock}", "version", env=env),
                    "dockerd")
    try:
        return _timed(lambda: _run("docker", "-H", f"unix://{sock}", "pull", "-q", ref, env=env))
    finally:
        daemon.stop()


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="build the image layout in DIR once and reuse it")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--out", metavar="DIR", help="where the runs write (default: beside the image; "
                        "/dev/shm takes the disk's noise out)")
    parser.add_argument("--only", default="berth,skopeo+umoci,ctr,docker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_pull: run as root (overlay snapshots, daemons)", file=sys.stderr)
        return 2
    chosen = [c for c in args.only.split(",") if c]
    needs = {"berth": [], "skopeo+umoci": ["skopeo", "umoci"], "ctr": ["containerd", "ctr"],
             "docker": ["dockerd", "docker", "containerd"]}
    for name in chosen:
        if name not in needs:
            parser.error(f"unknown contender {name!r}")
    missing = [b for b in ("skopeo", "umoci", "/usr/bin/docker-registry") if shutil.which(b) is None]
    if missing:
        print(f"bench_pull: {', '.join(missing)} not installed (scripts/setup.sh --with-peers)", file=sys.stderr)
        return 2
    skipped = {}
    for name in list(chosen):
        absent = [b for b in needs[name] if shutil.which(b) is None]
        if absent:
            skipped[name] = f"{', '.join(absent)} not installed"
            chosen.remove(name)
    log = (lambda msg: print(f"bench_pull: {msg}", file=sys.stderr)) if not args.json else (lambda msg: None)

    base = args.keep or tempfile.mkdtemp(prefix="bench-pull-", dir="/var/tmp")
    os.makedirs(base, exist_ok=True)
    layout = os.path.join(base, "layout")
    if not os.path.exists(os.path.join(layout, "index.json")):
        log(f"building the image in {layout} ...")
        shutil.rmtree(layout, ignore_errors=True)
        build_image(layout, args.files, log)
    runs_dir = tempfile.mkdtemp(prefix="bench-pull-runs-", dir=args.out or base)
    registry = RegistryProcess(Path(runs_dir) / "registry")
    times: dict[str, list[float]] = {name: [] for name in chosen}
    parts: dict[str, list[float]] = {}
    try:
        registry.start()
        ref = f"{registry.host}/{IMAGE_PATH}"
        _run("skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:{TAG}",
             f"docker://{ref}")
        manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                             capture_output=True, check=True).stdout)
        compressed = sum(layer["size"] for layer in manifest["layers"])
        unpacked = 0
        for r in range(args.runs):
            order = chosen if r % 2 == 0 else list(reversed(chosen))
            for name in order:
                out = os.path.join(runs_dir, f"{name}-{r}")
                try:
                    if name == "berth":
                        elapsed = _timed(lambda: run_berth(ref, out))
                        if not unpacked:
                            unpacked = _tree_bytes(os.path.join(out, "snapshots"))  # the layers as unpacked, whiteouts included
                    elif name == "skopeo+umoci":
                        elapsed = _timed(lambda: run_skopeo_umoci(ref, out, parts))
                    elif name == "ctr":
                        elapsed = run_ctr(ref, out)
                    else:
                        elapsed = run_docker(ref, registry.host, out)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    skipped[name] = str(e).splitlines()[0][:300]
                    chosen = [c for c in chosen if c != name]
                    times.pop(name, None)
                    log(f"{name} failed, dropped: {skipped[name]}")
                    continue
                finally:
                    unmount_under([out])
                    shutil.rmtree(out, ignore_errors=True)
                times[name].append(elapsed)
                log(f"round {r + 1}: {name} {elapsed:.2f} s")
    finally:
        registry.stop()
        unmount_under([runs_dir])
        shutil.rmtree(runs_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    medians = {n: statistics.median(t) for n, t in times.items() if t}
    result = {
        "layers": len(manifest["layers"]),
        "compressed_bytes": compressed,
        "unpacked_bytes": unpacked or None,
        "runs": args.runs,
        "out": args.out or base,
        "median_s": medians,
        "min_s": {n: min(t) for n, t in times.items() if t},
        "parts_median_s": {n: statistics.median(t) for n, t in parts.items()},
        "ratio_to_berth": {n: medians[n] / medians["berth"] for n in medians if "berth" in medians},
        "skipped": skipped,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"image: {result['layers']} gzip layers, {compressed / 1e6:.1f} MB compressed"
              + (f", {unpacked / 1e6:.1f} MB unpacked" if unpacked else ""))
        for n, m in medians.items():
            ratio = f"  {m / medians['berth']:.2f}x berth's time" if "berth" in medians else ""
            extra = ""
            if n == "skopeo+umoci" and parts:
                extra = f"  (skopeo {statistics.median(parts['skopeo']):.2f} s + umoci {statistics.median(parts['umoci']):.2f} s)"
            print(f"{n:13s} median {m:6.2f} s  min {min(times[n]):6.2f} s{ratio}{extra}")
        for n, why in skipped.items():
            print(f"{n:13s} skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
