#!/bin/bash
# Idempotent setup of a Debian 12 machine for Berth, as root.
#
#   scripts/setup.sh               Debian packages for the runtime and the demo, then .venv
#   scripts/setup.sh --with-peers  also the peers that the client and registry tests drive
#                                  (docker.io, containerd, docker-registry, skopeo, umoci,
#                                  docker-compose)
#
# Installs a Debian package only when dpkg says it is missing (apt-get update only then),
# creates .venv with Debian's /usr/bin/python3 when it is missing, and reinstalls Berth
# into it (editable, compat mode) only when pyproject.toml changed since the last install.
set -euo pipefail

die() { echo "setup: error: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

with_peers=0
for arg in "$@"; do
    case "$arg" in
        --with-peers) with_peers=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (expected --with-peers)" ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages and runs containers)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script expects Debian 12"

# --- Debian packages -------------------------------------------------------
packages=(python3-venv python3-pip busybox-static libseccomp2 runc iptables time tini)  # tini: --init (tini-static)
packages+=(containernetworking-plugins iproute2)  # CNI plugins in /usr/lib/cni; ip (berth.network)
if [ "$with_peers" -eq 1 ]; then
    packages+=(docker.io containerd docker-registry skopeo umoci openssl docker-compose)  # compose: v1.29 (python)
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    trap 'rm -f "$apt_log"' EXIT
    apt_opts=(-o DPkg::Lock::Timeout=600 -o APT::Get::Assume-Yes=true -q)
    if ! apt-get "${apt_opts[@]}" update >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        die "apt-get update failed (see above)"
    fi
    if ! apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        tail -n 40 "$apt_log" >&2
        die "apt-get install ${missing[*]} failed (last lines above)"
    fi
fi

[ -x /bin/busybox ] || die "/bin/busybox is missing although busybox-static is installed"

# --- virtual environment ---------------------------------------------------
python=/usr/bin/python3
[ -x "$python" ] || die "$python not found (Debian's python3 is required for the venv)"
venv="$repo/.venv"

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $python"
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "'$python -m venv $venv' failed (is python3-venv installed?)"
fi

stamp="$venv/.berth-installed"
want=$( { sha256sum pyproject.toml; echo "editable_mode=compat"; } | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    say "installing berth into $venv (editable, with test extras)"
    pip_log=$(mktemp)
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q \
            -e '.[test]' --config-settings editable_mode=compat >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log" "$stamp"
        die "pip install -e '.[test]' failed (output above)"
    fi
    rm -f "$pip_log"
    echo "$want" >"$stamp"
fi

# berth-runtime starts on every container start, like runc: replace pip's launcher (which
# imports re and processes site-packages) with one that starts Python isolated (-IS) and
# imports only the runtime, and compile the bytecode once so no run compiles anything.
# berth-shim gets the same launcher: it lives as long as its container, and every module
# it does not import is resident memory saved per container.
write_launcher() {  # NAME MODULE
    local launcher="$venv/bin/$1"
    cat >"$launcher.tmp" <<LAUNCHER
#!$venv/bin/python -IS
import sys
sys.path.insert(0, "$repo/src")
from $2 import main
sys.exit(main())
LAUNCHER
    chmod 755 "$launcher.tmp"
    mv -f "$launcher.tmp" "$launcher"
}
write_launcher berth-runtime berth.cli.runtime
write_launcher berth-shim berth.shim.main
write_launcher berth berth.cli.berth  # the CLI starts on every `berth run` too; it needs only the stdlib
"$venv/bin/python" -m compileall -q "$repo/src" >/dev/null || die "compileall of $repo/src failed"

# The default image: busybox:latest in the default data root, made offline from
# busybox-static (berth.daemon.default_image); a lookup and nothing more when present.
data_root=${BERTH_DATA_ROOT:-/var/lib/berth}
made=$("$venv/bin/python" -m berth.daemon.default_image --data-root "$data_root") \
    || die "could not create the default image busybox:latest in $data_root (output above)"
say "$made"

say "ok ($venv)"
