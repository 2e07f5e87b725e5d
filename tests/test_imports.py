"""The import graph of `trainables/` and `search/` has no cycle — function-level imports included (they hide a
cycle from Python, not from a reader): the toy model's builder lives beside the toy (`trainables/toymodel.py`),
the heads in `trainables/heads.py`, so `model.py` needs neither the training loop nor the per-kind table's imports.

Run: pytest tests/test_imports.py
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search")


def graph() -> dict[str, set[str]]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).glob("*.py"):
            deps = set()
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    if node.module in PACKAGES:  # from trainables import data
                        deps |= {f"{node.module}.{a.name}" for a in node.names}
                    else:
                        deps.add(node.module)
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
            out[f"{pkg}.{f.stem}"] = deps - {f"{pkg}.{f.stem}"}
    return out


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search, three colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if dep not in g:
                continue
            if colour.get(dep) == "grey":
                return stack[stack.index(dep):] + [dep]
            if dep not in colour:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(g):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def test_the_finder_finds_a_planted_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_trainables_and_search():
    g = graph()
    assert len(g) > 40 and "trainables.model" in g
    assert cycle(g) is None, " -> ".join(cycle(g))
