"""Presets by name or path, shipped with the package; where relative paths point.

The YAML presets live in the repository's top-level `configs/` and are installed as the package data
`xstilts_configs` (pyproject: a package-dir mapping), read with importlib.resources, so a wheel installed
anywhere finds them. A preset is named by path (`configs/search/toy.yaml`, `my.yaml`) or by name (`toy`,
`paper`, `scaling_toy`): a file in the working directory wins over a packaged preset of the same name; an
unknown name lists the known ones.

Relative paths inside presets (toy data, caches, outputs, search storage, the SQLite tracking store) resolve
against `XSTILTS_HOME` when set, else the working directory. `XSTILTS_CACHE` sets the cache for every run that
does not name one on its command line, so runs from any folder share one toy model and one set of entries.

  xstilts presets         (name, kind, first line of its header)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from trainables.errors import XstiltsError

PACKAGE = "xstilts_configs"
KINDS = ("pipeline", "search")


def home() -> Path:
    """The folder relative paths resolve against: XSTILTS_HOME, else the working directory."""
    return Path(os.environ.get("XSTILTS_HOME") or ".").resolve()


def under_home(path: str | None) -> str | None:
    if path is None or "://" in str(path):
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else home() / p)


def _packaged(kind: str):
    try:
        return resources.files(PACKAGE) / kind
    except ModuleNotFoundError:  # running from a checkout without an install
        return Path(__file__).resolve().parents[1] / "configs" / kind


def listing() -> list[dict]:
    """Every packaged preset: {"name", "kind", "description"} (the first line of its header comment)."""
    out = []
    for kind in KINDS:
        folder = _packaged(kind)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml"):
                first = entry.read_text(encoding="utf-8").splitlines()[0] if entry.is_file() else ""
                out.append({"name": entry.name[:-5], "kind": kind, "description": first.lstrip("# ").strip()})
    return out


def find(ref: str | Path, kind: str) -> tuple[str, str]:
    """(where, YAML text) of a preset given by path or name. Order: the path as given (relative to the working
    directory), `<name>.yaml` in the working directory, the packaged preset (a `configs/<kind>/` prefix is
    accepted too, so paths written for the checkout work from an installed wheel)."""
    ref = str(ref)
    for candidate in (Path(ref).expanduser(), Path(f"{ref}.yaml")):
        if candidate.is_file():
            return str(candidate), candidate.read_text(encoding="utf-8")
    name = Path(ref).name.removesuffix(".yaml")
    parts = Path(ref).parts
    folder = parts[-2] if len(parts) >= 2 and parts[-2] in KINDS else kind  # configs/search/toy.yaml -> search
    entry = _packaged(folder) / f"{name}.yaml"
    if entry.is_file():
        return f"{PACKAGE}/{folder}/{name}.yaml", entry.read_text(encoding="utf-8")
    known = ", ".join(p["name"] for p in listing() if p["kind"] == kind)
    raise XstiltsError(f"{kind} preset {ref!r} not found (no such file here, and no packaged preset of that "
                       f"name) — known {kind} presets: {known}")
