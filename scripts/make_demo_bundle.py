#!/usr/bin/env python3
"""Build the demo bundle: a busybox rootfs (kept if present), /bin/hello and a fresh config.json.

Usage: make_demo_bundle.py BUNDLE_DIR
"""

from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "src")]

from berth.runtime.spec_cmd import default_spec  # noqa: E402
from tests.support.bundle import make_rootfs  # noqa: E402

GREETING = """\
#!/bin/sh
echo "Hello from $(hostname), a busybox container started by berth-runtime."
echo
echo "id: $(id)"
echo
echo "processes:"
ps -o pid,user,comm
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bundle = os.path.abspath(argv[1])
    rootfs = os.path.join(bundle, "rootfs")
    if not os.path.exists(os.path.join(rootfs, "bin", "busybox")):
        make_rootfs(rootfs)
    script = os.path.join(rootfs, "bin", "hello")
    with open(script, "w") as f:
        f.write(GREETING)
    os.chmod(script, 0o755)
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/hello"]
    spec["hostname"] = "berth-demo"
    tmp = os.path.join(bundle, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(spec, f, indent="\t")
    os.replace(tmp, os.path.join(bundle, "config.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
