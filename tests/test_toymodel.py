"""The toy model that ships with xstilts (trainables/prebuilt/toy-model): it is the current recipe's, a cache
gets a checked copy of it for exactly that recipe, and anything else (another recipe, a shipped file that does not
match its record) is built.

Run: pytest tests/test_toymodel.py
"""

import filecmp
import json
import shutil

import pytest

from trainables import toymodel
from trainables.config import load_config, update
from trainables.toymodel import SHIPPED, shipped_entry, toy_entry, toy_model


def test_the_shipped_model_is_the_current_recipes(toy_dir, tmp_path):
    """Fails after any change to the toy data, the toy preset's model settings, the code of the modules that
    build it (trainables/codever.py) or the pinned libraries: the shipped model would be ignored and every
    fresh clone would build it again (~3 minutes)."""
    expected = toy_entry(toy_dir, tmp_path, load_config("toy").model).path.name
    assert shipped_entry() == expected, ("the shipped toy model was built from another recipe: rebuild it with "
                                         "`python -m trainables.toymodel ship` and commit trainables/prebuilt")


@pytest.mark.slow  # seconds: the fast layer stays under a minute
def test_a_cache_gets_the_shipped_model_for_its_recipe_only(toy_dir, tmp_path):
    cfg = load_config("toy").model
    if shipped_entry() != toy_entry(toy_dir, tmp_path, cfg).path.name:
        pytest.skip("the shipped model is another recipe's (the test above fails); this would build it in full")
    said = []
    path = toy_model(toy_dir, tmp_path / "cache", cfg, log=said.append)
    assert any("ships with xstilts" in s for s in said), said
    assert (path / "model.safetensors").stat().st_size > 1_000_000
    assert filecmp.cmp(path / "model.safetensors", SHIPPED / "model.safetensors", shallow=False)

    said.clear()
    small = update(cfg, {"hidden_size": 32, "layers": 1, "heads": 2, "mlm_steps": 3})
    other = toy_model(toy_dir, tmp_path / "cache", small, log=said.append)
    assert other != path and not any("ships" in s for s in said), said
    assert '"hidden_size": 32' in (other / "config.json").read_text()


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_a_shipped_file_that_does_not_match_its_record_is_never_used(toy_dir, tmp_path, monkeypatch):
    """A cut download or an LFS pointer in place of the weights: the cache builds instead of publishing it."""
    cfg = update(load_config("toy").model, {"hidden_size": 32, "layers": 1, "heads": 2, "mlm_steps": 3})
    fake = tmp_path / "shipped"
    shutil.copytree(toy_model(toy_dir, tmp_path / "built", cfg), fake,
                    ignore=shutil.ignore_patterns("xstilts-*", ".*"))
    key = toy_entry(toy_dir, tmp_path, cfg).path.name
    record = {"entry": key, "files": toymodel._listing(fake)}
    (fake / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    (fake / toymodel.SHIPPED_KEY).write_text(json.dumps(record))
    monkeypatch.setattr(toymodel, "SHIPPED", fake)
    said = []
    path = toy_model(toy_dir, tmp_path / "cache", cfg, log=said.append)
    assert any("do not match their record" in s for s in said), said
    assert (path / "model.safetensors").stat().st_size == record["files"]["model.safetensors"][0]  # built, whole
