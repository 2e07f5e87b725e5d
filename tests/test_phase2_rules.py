"""jiant's phase-2 rules (jiant/proj/main/runner.py `run_train_step`, `jiant/proj/main/components/task_sampler.py`):
one task per optimiser step — its `grad_accum` micro-batches all come from the task drawn for that step — and
training-set sizes counted in features, so a long SQuAD context that gives several windows counts several times
in the epochs rule and in proportional sampling. Run: pytest tests/test_phase2_rules.py
"""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(toy_dir, tmp_path_factory):
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tok = AutoTokenizer.from_pretrained(str(toy_dir / "tokenizer"))
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, pad_token_id=tok.pad_token_id),
                    add_pooling_layer=False).save_pretrained(str(out := tmp_path_factory.mktemp("tiny")))
    tok.save_pretrained(str(out))
    return out


def _cfg(toy_dir, tmp_path, base, *extra):
    from trainables.config import load_config

    return load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={toy_dir}", f"cache_dir={tmp_path}",
                                                          f"model.name={base}", "tracking.enabled=false",
                                                          "progress=false", *extra])


def _phase2(cfg, base, out):
    from trainables.jobs import run_job

    out.mkdir()
    return run_job({"kind": "phase2", "cfg": cfg.model_dump(), "base": str(base), "data_dir": cfg.data_dir,
                    "out": str(out), "key": "x"})


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_one_task_per_optimiser_step(toy_dir, tiny, tmp_path):
    cfg = _cfg(toy_dir, tmp_path, tiny, "intermediate.mixture={mnli: 1.0, qqp: 1.0, sst2: 1.0}",
               "intermediate.steps=6", "intermediate.grad_accum=8", "intermediate.batch_size=4",
               "intermediate.max_train_examples=64")
    got = _phase2(cfg, tiny, tmp_path / "out")
    assert sum(got["batches"].values()) == 6 * 8
    assert all(n % 8 == 0 for n in got["batches"].values()), got["batches"]  # whole steps per task
    assert sum(n > 0 for n in got["batches"].values()) >= 2


def test_sizes_are_counted_in_features(toy_dir, tiny, tmp_path):
    """With a window shorter than SQuAD's contexts, the proportional sampler and the epochs rule count windows."""
    from transformers import AutoTokenizer

    from trainables import data as D
    from trainables.mixture import Mixture
    from trainables.phase2 import mixture_sizes

    cfg = _cfg(toy_dir, tmp_path, tiny, "intermediate.mixture={mnli: 1.0, squad_v1: 1.0}",
               "intermediate.sampler=proportional", "intermediate.max_length=24", "intermediate.max_train_examples=200",
               "intermediate.epochs=1", "intermediate.steps=null", "intermediate.batch_size=10")
    examples, _ = D.load_mixture(cfg.intermediate.mixture, Path(toy_dir))
    sizes = mixture_sizes(cfg, AutoTokenizer.from_pretrained(str(tiny)), examples)
    assert sizes["mnli"] == 200 and sizes["squad_v1"] > 200, sizes  # several windows per SQuAD example
    probs = Mixture(cfg.intermediate.mixture, "proportional").probabilities(sizes)
    assert probs["squad_v1"] > 0.5 > probs["mnli"]
    assert cfg.intermediate.total_steps(sizes) == 20 + -(-sizes["squad_v1"] // 10)
    explicit = _cfg(toy_dir, tmp_path, tiny, "intermediate.mixture={mnli: 1.0, squad_v1: 1.0}")
    assert mixture_sizes(explicit, None, examples) == {"mnli": len(examples["mnli"]), "squad_v1": len(examples["squad_v1"])}


def test_the_paper_grids_all_tasks_point_samples_as_jiant():
    """Equal explicit weights over nine tasks would give CommonsenseQA ~76 epochs and ANLI+ ~0.7; jiant (and the
    paper) sample in proportion to size."""
    from search.config import load_search_config
    from search.space import TrialSpec
    from search.tuner import base_config
    from trainables.mixture import Mixture

    cfg = load_search_config("paper")
    spec = TrialSpec(mixture=cfg.points_to_evaluate[-1])
    assert len(spec.mixture) == 9
    ic = spec.pipeline_config(base_config(cfg)).intermediate
    sizes = {t: 1000 * (i + 1) for i, t in enumerate(sorted(spec.mixture))}
    probs = Mixture(ic.mixture, ic.sampler, ic.temperature, ic.cap).probabilities(sizes)
    assert ic.sampler == "proportional" and probs == {t: n / sum(sizes.values()) for t, n in sizes.items()}
