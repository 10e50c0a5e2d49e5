#!/usr/bin/env python3
"""Layer unpack: Berth's overlay snapshots against ``umoci unpack``, side by side.

One OCI image layout is generated (once; ``--keep DIR`` reuses it between runs) with
umoci itself: a synthetic tree of ~20,000 small files and a few big ones spread over
three gzip layers (the third modifies, adds and deletes: whiteouts), >100 MB
uncompressed. Then rounds alternate between:

- **berth**: ``unpack_layers`` into a fresh ``OverlaySnapshotter`` (decompress, hash
  the diff ID, apply each layer into its own snapshot in overlay form, commit under
  its chain ID), in this process;
- **berth-plain**: the same layers through ``apply_layer_plain`` into one flat
  directory (the shape ``umoci unpack`` writes), in this process;
- **umoci**: ``umoci unpack --image LAYOUT:bench BUNDLE`` (a flat rootfs), a process;
- **tar** (optional, a floor rather than a peer): GNU ``tar -xzf`` of each layer into one
  directory, whiteouts left as plain files, no digests checked.

Each run writes into a new directory, ``sync`` is called between runs (untimed) so that
one run's write-back does not land in the next one's time, and outputs are deleted only
at the end: ext4 skips recently freed inodes when it allocates new ones, and a run just
after a large delete is several times slower whoever makes it (run the benchmark twice
in a row and the second suffers from the first's cleanup: wait a few minutes). Reports the median (and min) of each,
and the ratios to umoci. As root (umoci keeps owners only as root; overlay needs root).

    bench_unpack.py [--runs 3] [--keep DIR] [--out DIR] [--files 20000] [--json]
                    [--only berth,berth-serial,berth-plain,umoci,tar]

``berth-serial`` is ``berth`` with one worker (layers one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "src")]

from berth.image.compression import open_decompressed  # noqa: E402
from berth.image.layers import apply_layer_plain  # noqa: E402
from berth.snapshots.overlay import OverlaySnapshotter  # noqa: E402
from berth.image.unpack import unpack_layers  # noqa: E402

TAG = "bench"
WORDS = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         b"sigma tau upsilon phi chi psi omega container layer overlay snapshot digest manifest").split()


# --- the image --------------------------------------------------------------------------


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def _small_files(rng: random.Random, root: str, prefix: str, count: int) -> int:
    total = 0
    for i in range(count):
        d = os.path.join(root, prefix, f"d{i % 97:02d}", f"s{i % 7}")
        os.makedirs(d, exist_ok=True)
        size = int(min(64 * 1024, rng.lognormvariate(7.6, 1.0)))  # median ~2 KB
        data = _text(rng, size) if rng.random() < 0.7 else rng.randbytes(size)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(data)
        total += size
    return total


def _big_file(rng: random.Random, path: str, size: int, compressible: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = _text(rng, 1 << 20) if compressible else None
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block if block is not None else rng.randbytes(1 << 20))


def build_image(layout: str, files: int, log: Callable[[str], None]) -> dict:
    """Make the OCI layout with umoci (init, new, then unpack/edit/repack per layer)."""
    rng = random.Random(20240601)
    work = tempfile.mkdtemp(prefix="bench-build-", dir=os.path.dirname(layout))
    bundle = os.path.join(work, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
    try:
        run("umoci", "init", "--layout", layout)
        run("umoci", "new", "--image", f"{layout}:{TAG}")
        run("umoci", "unpack", "--image", f"{layout}:{TAG}", bundle)
        total = 0
        # layer 1: half of the small files, two big ones
        total += _small_files(rng, rootfs, "usr/lib/a", files // 2)
        _big_file(rng, os.path.join(rootfs, "opt/big/random1"), 24 << 20, False)
        _big_file(rng, os.path.join(rootfs, "opt/big/text1"), 24 << 20, True)
        total += 48 << 20
        run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", bundle)
        log("layer 1 packed")
        # layer 2: the other half, two more big ones, hard links and symlinks
        total += _small_files(rng, rootfs, "usr/share/b", files - files // 2)
        _big_file(rng, os.path.join(rootfs, "opt/big/random2"), 16 << 20, False)
        _big_file(rng, os.path.join(rootfs, "opt/big/text2"), 16 << 20, True)
        total += 32 << 20
        for i in range(200):
            os.symlink(f"../a/d{i % 97:02d}", os.path.join(rootfs, "usr/lib", f"link{i}"))
        os.link(os.path.join(rootfs, "opt/big/text2"), os.path.join(rootfs, "opt/big/text2.hard"))
        run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", bundle)
        log("layer 2 packed")
        # layer 3: delete a directory tree and some files, modify some, add a few
        shutil.rmtree(os.path.join(rootfs, "usr/lib/a/d00"))
        for i in range(1, 97, 5):
            os.unlink(os.path.join(rootfs, f"usr/share/b/d{i:02d}/s{i % 7}", os.listdir(
                os.path.join(rootfs, f"usr/share/b/d{i:02d}/s{i % 7}"))[0]))
        for i in range(500):
            with open(os.path.join(rootfs, "usr/lib/a", f"d{1 + i % 96:02d}", "s0", f"new{i}"), "wb") as f:
                f.write(_text(rng, 1500))
        _big_file(rng, os.path.join(rootfs, "opt/big/text1"), 8 << 20, True)
        run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", bundle)
        log("layer 3 packed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"approx_bytes": total}


def read_layout(layout: str) -> tuple[list[str], list[str]]:
    """(layer blob paths, diff IDs) of the tagged image, read straight from the layout."""
    blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))  # noqa: E731
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG)
    with open(blob(desc["digest"])) as f:
        manifest = json.load(f)
    with open(blob(manifest["config"]["digest"])) as f:
        config = json.load(f)
    return [blob(layer["digest"]) for layer in manifest["layers"]], config["rootfs"]["diff_ids"]


# --- the contenders ---------------------------------------------------------------------


def run_berth(layers: list[str], diff_ids: list[str], out: str, workers: int = 2) -> None:
    snapshotter = OverlaySnapshotter(out)
    try:
        unpack_layers(snapshotter, layers, diff_ids, workers=workers)
    finally:
        snapshotter.close()


def run_berth_plain(layers: list[str], _diff_ids: list[str], out: str) -> None:
    os.mkdir(out)
    for path in layers:
        with open(path, "rb", buffering=0) as raw:
            apply_layer_plain(open_decompressed(raw), out)


def run_tar(layers: list[str], out: str) -> None:
    os.mkdir(out)
    for path in layers:
        subprocess.run(["tar", "-xzf", path, "-C", out, "--xattrs", "--same-owner", "--numeric-owner"], check=True)


def run_umoci(layout: str, out: str) -> None:
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{TAG}", out], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="build the layout in DIR once and reuse it")
    parser.add_argument("--files", type=int, default=20000, help="small files in the image")
    parser.add_argument("--only", default="berth,berth-plain,umoci", help="comma-separated contenders")
    parser.add_argument("--out", metavar="DIR", help="write the runs' trees under DIR (default: beside the layout)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_unpack: run as root (overlay snapshots, umoci keeping owners)", file=sys.stderr)
        return 2
    if shutil.which("umoci") is None:
        print("bench_unpack: umoci is not installed (scripts/setup.sh --with-peers)", file=sys.stderr)
        return 2
    log = (lambda msg: print(f"bench_unpack: {msg}", file=sys.stderr)) if not args.json else (lambda msg: None)
    base = args.keep or tempfile.mkdtemp(prefix="bench-unpack-", dir="/var/tmp")
    os.makedirs(base, exist_ok=True)
    layout = os.path.join(base, "layout")
    if not os.path.exists(os.path.join(layout, "index.json")):
        log(f"building the image in {layout} ...")
        shutil.rmtree(layout, ignore_errors=True)
        build_image(layout, args.files, log)
    layers, diff_ids = read_layout(layout)
    compressed = sum(os.path.getsize(p) for p in layers)

    contenders: dict[str, Callable[[str], None]] = {
        "berth": lambda out: run_berth(layers, diff_ids, out),
        "berth-serial": lambda out: run_berth(layers, diff_ids, out, workers=1),
        "berth-plain": lambda out: run_berth_plain(layers, diff_ids, out),
        "umoci": lambda out: run_umoci(layout, out),
        "tar": lambda out: run_tar(layers, out),
    }
    chosen = [c for c in args.only.split(",") if c]
    for name in chosen:
        if name not in contenders:
            parser.error(f"unknown contender {name!r}")
    times: dict[str, list[float]] = {name: [] for name in chosen}
    uncompressed = 0
    outs = os.path.join(args.out or base, f"runs-{os.getpid()}")
    os.mkdir(outs)
    try:
        for r in range(args.runs):
            order = chosen if r % 2 == 0 else list(reversed(chosen))
            for name in order:
                # Every run writes to a new directory and nothing is deleted until the end:
                # ext4 skips recently freed inodes when it allocates (recently_deleted()),
                # so a run right after a large delete pays for it, whoever it is.
                out = os.path.join(outs, f"{name}-{r}")
                os.sync()
                t0 = time.perf_counter()
                contenders[name](out)
                times[name].append(time.perf_counter() - t0)
                if name == "berth-plain" and not uncompressed:
                    uncompressed = _tree_bytes(out)
                log(f"round {r + 1}: {name} {times[name][-1]:.2f} s")
    finally:
        os.sync()
        shutil.rmtree(outs, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    medians = {n: statistics.median(t) for n, t in times.items()}
    result = {
        "layers": len(layers),
        "compressed_bytes": compressed,
        "unpacked_bytes": uncompressed or None,
        "runs": args.runs,
        "median_s": medians,
        "min_s": {n: min(t) for n, t in times.items()},
        "ratio_to_umoci": {n: medians[n] / medians["umoci"] for n in medians if "umoci" in medians},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"image: {len(layers)} gzip layers, {compressed / 1e6:.1f} MB compressed"
              + (f", {uncompressed / 1e6:.1f} MB unpacked" if uncompressed else ""))
        for n in chosen:
            ratio = f"  {medians[n] / medians['umoci']:.2f}x umoci" if "umoci" in medians else ""
            print(f"{n:12s} median {medians[n]:6.2f} s  min {min(times[n]):6.2f} s{ratio}")
    return 0


def _tree_bytes(root: str) -> int:
    total = 0
    for d, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


if __name__ == "__main__":
    sys.exit(main())
