"""The architecture's hard lines: trainables/ never imports Ray or Optuna; mlflow/ holds no Python.

Run: pytest tests/test_layout.py
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_trainables_source_never_imports_ray_or_optuna():
    pattern = re.compile(r"^\s*(import|from)\s+(ray|optuna)\b", re.M)
    offenders = [p.name for p in (ROOT / "trainables").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_importing_every_trainables_module_loads_neither():
    modules = [f"trainables.{p.stem}" for p in (ROOT / "trainables").glob("*.py") if p.stem != "__main__"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_mlflow_folder_has_no_python():
    assert not list((ROOT / "mlflow").rglob("*.py"))
