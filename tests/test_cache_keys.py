"""Cache keys change exactly when what they cache would change. Run: pytest tests/test_cache_keys.py"""

import shutil
from pathlib import Path

from trainables.config import load_config
from trainables.pipeline import phase3_key

ROOT = Path(__file__).resolve().parents[1]


def test_phase3_key_follows_the_targets_own_data(toy_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data}"])
    key = lambda: phase3_key(cfg, "xnli", "phase2-abc", data)  # noqa: E731
    before = key()
    with (data / "google/xtreme/PAN-X.de/test.parquet").open("ab") as fh:  # another task's file
        fh.write(b"\0")
    assert key() == before
    with (data / "facebook/xnli/de/test.parquet").open("ab") as fh:  # an XNLI evaluation file
        fh.write(b"\0")
    assert key() != before
    assert phase3_key(cfg, "xnli", "phase2-abd", data) != key()  # another encoder
