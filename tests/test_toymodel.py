"""The toy model that ships with xstilts (trainables/prebuilt/toy-model): it is the current recipe's, a cache
gets a copy of it for exactly that recipe, and any other recipe is built.

Run: pytest tests/test_toymodel.py
"""

import filecmp

from trainables.config import load_config, update
from trainables.toymodel import SHIPPED, shipped_entry, toy_entry, toy_model


def test_the_shipped_model_is_the_current_recipes(toy_dir, tmp_path):
    """Fails after any change to the toy data, the toy preset's model settings, the code of the modules that
    build it (trainables/codever.py) or the pinned libraries: the shipped model would be ignored and every
    fresh clone would build it again (~3 minutes)."""
    expected = toy_entry(toy_dir, tmp_path, load_config("toy").model).path.name
    assert shipped_entry() == expected, ("the shipped toy model was built from another recipe: rebuild it with "
                                         "`python -m trainables.toymodel ship` and commit trainables/prebuilt")


def test_a_cache_gets_the_shipped_model_for_its_recipe_only(toy_dir, tmp_path):
    said = []
    cfg = load_config("toy").model
    path = toy_model(toy_dir, tmp_path / "cache", cfg, log=said.append)
    if shipped_entry() == path.name:  # (the test above says when it is not)
        assert any("ships with xstilts" in s for s in said), said
        assert (path / "model.safetensors").stat().st_size > 1_000_000
        assert filecmp.cmp(path / "model.safetensors", SHIPPED / "model.safetensors", shallow=False)

    said.clear()
    small = update(cfg, {"hidden_size": 32, "layers": 1, "heads": 2, "mlm_steps": 3})
    other = toy_model(toy_dir, tmp_path / "cache", small, log=said.append)
    assert other != path and not any("ships" in s for s in said), said
    assert '"hidden_size": 32' in (other / "config.json").read_text()
