#!/bin/bash
# docker-py's own integration tests (tests/integration of its PyPI sdist) against a berthd
# of this script's own: temporary roots, its own socket and cgroup parent, stopped and
# cleaned up at the end (also on failure or ^C). Results: tests/DOCKER_PY.md.
#
#   scripts/run_docker_py_suite.sh [PYTEST ARGS...]      e.g. -k exec, or -x
#
# Environment:
#   DOCKER_PY_VERSION  the sdist whose tests run (default 6.1.3: 7.x sdists ship no tests/)
#   WORK               where the sdist, its venv, berthd's roots and the logs go
#                      (default /tmp/berth-docker-py; the venv and sdist are reused)
#   FILES              the test files to run (default: all but the ones named below)
#   TIMEOUT            per-test timeout in seconds (default 60)
#
# Needs root and PyPI (pip: the sdist, docker==VERSION, requests<2.32, paramiko, pytest,
# pytest-timeout), nothing else from the internet. docker-py's tests pull alpine:3.10,
# alpine:latest, busybox:latest and hello-world from Docker Hub; without internet those
# names are tags of berthd's embedded busybox (so tests that only need the name pass, and
# pulls fail). Not run: swarm, services, nodes, secrets, configs, plugins,
# volumes, builds (features berthd does not have), ssh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${DOCKER_PY_VERSION:-6.1.3}"
work="${WORK:-/tmp/berth-docker-py}"
timeout="${TIMEOUT:-60}"
berth_py="$repo/.venv/bin/python"
[ -x "$berth_py" ] || { echo "no $berth_py: run scripts/setup.sh first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (berthd runs containers)" >&2; exit 1; }
mkdir -p "$work"

# --- docker-py's sources and a venv with that docker-py -----------------------------------
src="$work/docker-$version"
if [ ! -d "$src/tests/integration" ]; then
    "$berth_py" -m pip download -q --no-binary :all: --no-deps "docker==$version" -d "$work" 2>&1 \
        | grep -v "^WARNING: Location" >&2 || true
    tar -xzf "$work/docker-$version.tar.gz" -C "$work"
    [ -d "$src/tests/integration" ] || { echo "docker $version's sdist has no tests/integration" >&2; exit 1; }
fi
venv="$work/venv-$version"
if ! "$venv/bin/python" -c "import docker, paramiko, pytest, pytest_timeout; assert docker.__version__ == '$version'" 2>/dev/null; then
    /usr/bin/python3 -m venv "$venv"
    # requests 2.32 broke docker-py < 7.1 ("Not supported URL scheme http+docker");
    # the suite's helpers import paramiko (its ssh tests are not run)
    "$venv/bin/pip" install -q "docker==$version" "requests<2.32" paramiko pytest pytest-timeout 2>&1 \
        | grep -v "^WARNING: Location" >&2 || true
fi

# --- run ------------------------------------------------------------------------------------
run="$(mktemp -d "$work/run.XXXXXX")"
echo "docker-py $version against berthd; roots and logs in $run"
exec "$berth_py" - "$repo" "$src" "$venv" "$run" "$timeout" "$@" <<'PY'
import json, os, signal, subprocess, sys, time
import xml.etree.ElementTree as ET

repo, src, venv, run, timeout, *pytest_args = sys.argv[1:]
sys.path.insert(0, repo)
from tests.support.daemon import Berthd  # noqa: E402 - temporary roots, cleanup by pid

SKIPPED_FILES = {  # features berthd does not have (or ssh)
    "api_build_test.py", "api_config_test.py", "api_plugin_test.py",
    "api_secret_test.py", "api_service_test.py", "api_swarm_test.py", "api_volume_test.py",
    "models_nodes_test.py", "models_services_test.py", "models_swarm_test.py",
    "models_volumes_test.py", "ssh_test.py", "api_ssh_test.py",
}
TAGS = ["alpine:3.10", "alpine:latest", "busybox:buildroot-2014.02", "hello-world:latest"]

integration = os.path.join(src, "tests", "integration")
files = os.environ.get("FILES", "").split() or sorted(
    f for f in os.listdir(integration) if f.endswith("_test.py") and f not in SKIPPED_FILES)

d = Berthd(run)
d.data_root.mkdir(parents=True, exist_ok=True)
subprocess.run([sys.executable, "-m", "berth.daemon.default_image", "--data-root", str(d.data_root)], check=True,
               stdout=subprocess.DEVNULL)
env = dict(os.environ, DOCKER_HOST=f"unix://{d.socket}", HOME=os.path.join(run, "home"),
           DOCKER_CONFIG=os.path.join(run, "home", ".docker"), PYTHONDONTWRITEBYTECODE="1")
env.pop("DOCKER_TLS_VERIFY", None)
env.pop("DOCKER_CERT_PATH", None)
os.makedirs(env["DOCKER_CONFIG"], exist_ok=True)
with open(os.path.join(env["DOCKER_CONFIG"], "config.json"), "w") as f:
    f.write("{}\n")  # else docker-py keeps its contexts in ./contexts (the sdist's directory)
subprocess.run(["rm", "-rf", os.path.join(src, "contexts")], check=False)
results = {}
interrupted = False


def on_term(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, on_term)
try:
    d.start()
    for tag in TAGS:
        repo_name, _, tag_name = tag.rpartition(":")
        status, body = d.api.post("/images/busybox:latest/tag", repo=repo_name, tag=tag_name)
        assert status == 201, (tag, status, body)
    for name in files:
        junit = os.path.join(run, name.replace(".py", ".xml"))
        log = os.path.join(run, name.replace(".py", ".log"))
        argv = [os.path.join(venv, "bin", "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs",
                f"--timeout={timeout}", f"--junitxml={junit}", os.path.join("tests", "integration", name),
                *pytest_args]
        started = time.monotonic()
        with open(log, "w") as out:
            subprocess.run(argv, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        try:
            for case in ET.parse(junit).iter("testcase"):
                kinds = {child.tag for child in case}
                counts["failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"] += 1
        except (OSError, ET.ParseError):
            counts["failed"] = -1  # pytest did not get as far as a report: see the log
        results[name] = counts
        print(f"{name:34} passed {counts['passed']:3}  failed {counts['failed']:3}  skipped {counts['skipped']:3}"
              f"  ({time.monotonic() - started:.0f}s, log {log})", flush=True)
except KeyboardInterrupt:
    interrupted = True
finally:
    try:
        status, listed = d.api.get("/containers/json", all=1)
        for c in listed if status == 200 else []:
            d.api.delete(f"/containers/{c['Id']}", force=1)
    except Exception:  # noqa: BLE001 - berthd may be gone; cleanup() kills by pid
        pass
    d.stop()
    d.cleanup()

total = {k: sum(r[k] for r in results.values() if r[k] >= 0) for k in ("passed", "failed", "skipped")}
print(f"{'total':34} passed {total['passed']:3}  failed {total['failed']:3}  skipped {total['skipped']:3}")
with open(os.path.join(run, "summary.json"), "w") as f:
    json.dump({"files": results, "total": total}, f, indent=1)
print(f"summary: {os.path.join(run, 'summary.json')}; berthd's log: {d.log_path}")
sys.exit(130 if interrupted else 0)
PY
