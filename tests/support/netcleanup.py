"""Cleanup after network tests, also after failed ones: iptables, links, namespaces.

    snap = IptablesSnapshot.take()      before the test
    snap.new_lines(pattern=None) -> list[str]   rules added since (optionally matching)
    snap.restore()                      delete the rules and chains added since, in every
                                        table (only what was not there before is touched)
    delete_links(names)                 ``ip link del`` each that exists
    count_links(prefix) -> int

Nothing is removed by name pattern alone: only rules and chains that did not exist when
the snapshot was taken, so rules of other CNI users (podman, containerd) stay.
"""

from __future__ import annotations

import os
import shlex
import subprocess

TABLES = ("filter", "nat", "mangle", "raw")


def _save(table: str) -> list[str]:
    proc = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def _chains(lines: list[str]) -> list[str]:
    return [line[1:].split()[0] for line in lines if line.startswith(":")]


def _rules(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("-A ")]


class IptablesSnapshot:
    def __init__(self, saved: dict[str, list[str]]) -> None:
        self.saved = saved

    @classmethod
    def take(cls) -> IptablesSnapshot:
        return cls({t: _save(t) for t in TABLES})

    def new_lines(self, *needles: str) -> list[str]:
        out = []
        for table in TABLES:
            before = set(self.saved[table])
            for line in _rules(_save(table)) + [":" + c for c in _chains(_save(table))]:
                if line in before or any(line.startswith(":" + c) for c in _chains(self.saved[table])):
                    continue
                if not needles or any(n in line for n in needles):
                    out.append(f"{table}: {line}")
        return out

    def restore(self) -> list[str]:
        """Remove what was added since the snapshot; returns the errors (empty if none)."""
        errors = []
        for table in TABLES:
            now = _save(table)
            before_rules = set(_rules(self.saved[table]))
            before_chains = set(_chains(self.saved[table]))
            new_rules = [r for r in _rules(now) if r not in before_rules]
            new_chains = [c for c in _chains(now) if c not in before_chains]
            if not new_rules and not new_chains:
                continue
            script = [f"*{table}"]
            script += ["-D" + r[2:] for r in reversed(new_rules)
                       if shlex.split(r)[1] not in new_chains]
            script += [f"-F {c}" for c in new_chains]
            script += [f"-X {c}" for c in new_chains]
            script += ["COMMIT", ""]
            proc = subprocess.run(["iptables-restore", "--noflush"], input="\n".join(script),
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                errors.append(f"{table}: {proc.stderr.strip()}")
        return errors


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def delete_links(names: list[str]) -> None:
    for name in names:
        if link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def count_links(prefix: str = "") -> int:
    return sum(1 for n in os.listdir("/sys/class/net") if n.startswith(prefix))
