"""What a cache key says about the code that computed the entry, so that a fix can never leave a shared cache
serving what the old code produced: a digest of the source of the modules that compute that kind of entry and
the versions of the libraries its numbers depend on. No hand-bumped constant to forget.

The source is hashed as its syntax tree without docstrings (`ast.dump`: comments, blank lines and formatting are
not in it), so editing prose keeps every entry; any change to code does not. The module lists are
deliberately generous (a change to orchestration code in `pipeline.py` also renews phase-3 entries): computing
again is the safe mistake, serving stale numbers the one this prevents.

  code_version("phase3") -> {"source": "<sha256 prefix>", "libraries": {"torch": "2.13.0", ...}}
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets")

# entry kind -> the trainables modules whose code decides what the entry holds
MODULES = {
    "features": ("featcache", "features", "kinds", "readers"),
    "toy-model": ("model", "toy", "toy_world", "toymodel", "train"),
    "phase2": ("data", "distributed", "features", "heads", "kinds", "mixture", "model", "phase2", "readers", "train"),
    "phase3": ("data", "distributed", "evaluate", "features", "heads", "kinds", "metrics", "model", "pipeline",
               "predictions", "readers", "retrieval", "train"),
}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """sha256 of a Python file's syntax tree without docstrings."""
    tree = _without_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _library(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def _code(kind: str) -> tuple[str, tuple]:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for module in MODULES[kind]:
        digest.update(module.encode() + b"\0" + source_digest(here / f"{module}.py").encode())
    return digest.hexdigest()[:20], tuple((lib, _library(lib)) for lib in LIBRARIES)


def code_version(kind: str) -> dict:
    """The code part of a `kind` entry's key (module docstring)."""
    source, libraries = _code(kind)
    return {"source": source, "libraries": dict(libraries)}
