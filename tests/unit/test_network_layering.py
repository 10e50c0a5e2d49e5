"""berth.network is layer 1: it imports only berth._sys, berth.spec, berth.errors, itself
and the stdlib (docs: /work/shared/DESIGN.md, "Layers")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import berth.network

ALLOWED = ("berth._sys", "berth.spec", "berth.errors", "berth.network")


def test_network_imports_only_layer_0_and_the_stdlib() -> None:
    package = Path(berth.network.__file__).parent
    bad = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "berth":
                    if not any(name == a or name.startswith(a + ".") for a in ALLOWED):
                        bad.append(f"{path.name}: {name}")
                elif top not in sys.stdlib_module_names and top != "__future__":
                    bad.append(f"{path.name}: {name}")
    assert bad == []
