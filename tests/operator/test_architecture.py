"""docs/architecture.md's module table is the operator's import order: every module of
the package is in it, and none imports a module listed below itself (imports inside
functions count too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "voicefleet_operator"
PAGE = REPO / "docs" / "architecture.md"
ROW = re.compile(r"^\| `([a-z_]+)\.py` \|", re.M)


def page_order() -> list[str]:
    return ROW.findall(PAGE.read_text())


def imports_of(module: str) -> set[str]:
    """The package's modules `module` imports (relative or absolute)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                out.update([node.module.split(".")[0]] if node.module else
                           [a.name for a in node.names])  # fmt: skip
            elif node.level == 0 and (node.module or "").startswith("voicefleet_operator."):
                out.add((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("voicefleet_operator."):
                    out.add(a.name.split(".")[1])
    return out - {module}


def test_every_module_is_on_the_page_once() -> None:
    order = page_order()
    on_disk = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert sorted(order) == on_disk, "docs/architecture.md's table and the package differ"


def test_no_module_imports_one_listed_below_it() -> None:
    order = page_order()
    place = {m: i for i, m in enumerate(order)}
    upward = [
        f"{m}.py imports {d}.py"
        for m in order
        for d in sorted(imports_of(m))
        if d in place and place[d] > place[m]
    ]
    assert not upward, "imports against docs/architecture.md's order: " + "; ".join(upward)


def test_the_check_sees_an_upward_import() -> None:
    """The check itself: main.py imports handlers.py, so handlers.py must be above it."""
    assert "handlers" in imports_of("main")
    order = page_order()
    assert order.index("handlers") < order.index("main")
