"""Benchmark: this training loop vs Hugging Face Trainer, and the toy planted-transfer gain.

Prints, measured in the same run on the same tiny model, data and batch size:
  tokens/s of trainables.train (length-grouped dynamic padding) vs Trainer defaults (goal >= 1.3)
  and vs Trainer with group_by_length=True (goal >= 1.0);
  toy XNLI zero-shot accuracy with toy MNLI intermediate minus without, mean over 3 seeds (goal >= 2 points).

Run:  pip install -e '.[bench]' && python benchmarks/train_loop.py --data-dir toy_data [--steps 150]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def variable_length_data(data_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """Toy MNLI pairs whose premise repeats 1-8 facts: lengths from ~20 to ~120 tokens."""
    from trainables.data import load_split

    rows = load_split("mnli", "train", data_dir)["en"]
    rng = random.Random(seed)
    return [{"text_a": " ".join(rng.choice(rows)["text_a"] for _ in range(rng.randint(1, 8))),
             "text_b": r["text_b"], "label": r["label"]} for r in rows[:n]]


def tiny_model(tok):
    from transformers import AutoModelForSequenceClassification, XLMRobertaConfig

    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=512, max_position_embeddings=514, pad_token_id=tok.pad_token_id, num_labels=3)
    return AutoModelForSequenceClassification.from_config(cfg)


def ours(tok, feats, steps: int, batch: int) -> float:
    from trainables.train import epoch_batches, fit

    model = tiny_model(tok)
    batches = epoch_batches(feats, batch, tok.pad_token_id, 0)
    seen = [0]

    def step_loss():
        b = next(batches)
        seen[0] += int(b["attention_mask"].sum())
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss

    start = time.perf_counter()
    fit(model, step_loss, steps, 1e-4, torch.device("cpu"))
    return seen[0] / (time.perf_counter() - start)


def trainer(tok, feats, steps: int, batch: int, group_by_length: bool) -> float:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    ds = Dataset.from_list([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in feats])
    tokens = [0]

    collator = DataCollatorWithPadding(tok)

    def counting(features):
        out = collator(features)
        tokens[0] += int(out["attention_mask"].sum())
        return out

    args = TrainingArguments(output_dir=str(ROOT / ".xstilts/bench"), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=1e-4, report_to="none", save_strategy="no", logging_strategy="no",
                             use_cpu=True, dataloader_num_workers=0,
                             # transformers 5.x: the old group_by_length=True is this sampling strategy
                             **({"train_sampling_strategy": "group_by_length"} if group_by_length else {}),
                             disable_tqdm=True, seed=0)
    t = Trainer(model=tiny_model(tok), args=args, train_dataset=ds, data_collator=counting)
    start = time.perf_counter()
    t.train()
    return tokens[0] / (time.perf_counter() - start)


def planted_gain(data_dir: Path, seeds=(0, 1, 2)) -> tuple[float, list[float]]:
    from trainables.config import load_config
    from trainables.pipeline import run_pipeline

    gains = []
    for seed in seeds:
        scores = []
        for mix in ("{}", "{mnli: 1.0}"):
            cfg = load_config(ROOT / "configs/pipeline/toy.yaml", [f"data_dir={data_dir}", "targets=[xnli]",
                              f"intermediate.mixture={mix}", f"seed={seed}", "tracking.enabled=false"])
            r = run_pipeline(cfg, log=lambda *a: None)
            langs = r["targets"]["xnli"]["languages"]
            scores.append(sum(v["accuracy"] for l, v in langs.items() if l != "en") / (len(langs) - 1))
        gains.append(scores[1] - scores[0])
    return sum(gains) / len(gains), gains


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="toy_data")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-transfer", action="store_true")
    a = ap.parse_args()
    data_dir = Path(a.data_dir)
    if not (data_dir / "xstilts.json").exists():
        from trainables.toy import write_toy

        write_toy(data_dir)
    from trainables.kinds import featurize
    from trainables.model import load_tokenizer

    torch.set_num_threads(2)
    tok = load_tokenizer(data_dir / "tokenizer")
    feats = featurize("pair_classification", variable_length_data(data_dir, 3000), tok, 256)
    ours_tps = ours(tok, feats, a.steps, a.batch)
    default_tps = trainer(tok, feats, a.steps, a.batch, False)
    grouped_tps = trainer(tok, feats, a.steps, a.batch, True)
    print(f"tokens/s  ours {ours_tps:9.0f} | Trainer default {default_tps:9.0f} | Trainer group_by_length {grouped_tps:9.0f}")
    print(f"ratio vs Trainer default:          {ours_tps / default_tps:.2f}  (goal >= 1.3)")
    print(f"ratio vs Trainer group_by_length:  {ours_tps / grouped_tps:.2f}  (goal >= 1.0)")
    if not a.skip_transfer:
        mean, gains = planted_gain(data_dir)
        print(f"toy XNLI zero-shot gain from MNLI intermediate: {mean:+.1f} points (seeds: "
              f"{', '.join(f'{g:+.1f}' for g in gains)}; goal >= 2)")


if __name__ == "__main__":
    main()
