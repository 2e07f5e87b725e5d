"""The toy world's planted scaling truth: a known answer for `xstilts scaling` to find (issue 23, item 4).

Real models answer "does the intermediate gain shrink as the model grows?" with whatever trend they have, so a
study's verdict cannot be checked against them. With `planted_scaling.slope: S` (toy model only; 0 = off), every
score of a run that trained on intermediate tasks is shifted by

    S x log10(params / 1e6)      points (per target and language, so every average moves by the same amount)

where `params` is `planted_scaling.params` (a nominal size) or else the toy encoder's parameter count. The
baseline (no intermediate task) is never shifted, so each paired gain moves by exactly that amount and the gain's
slope per 10x parameters moves by exactly S. The shift is applied where a run's results are read, after the
phase-3 cache: cached scores stay the model's own, and the same runs scored with the knob off give the unshifted
study. Results carry `planted_scaling` so that a shifted score is never mistaken for a measured one.

A world with no trend at all: one toy model under several nominal sizes (`params` per model of the scaling
config, each with its own seeds), knob off; with the knob on, the truth is exactly S (configs/search/
scaling_planted.yaml, tests/test_planted.py).
"""

from __future__ import annotations

import math
from pathlib import Path

from trainables.tasks import TASKS

REFERENCE_PARAMS = 1e6  # the size at which the planted shift is zero


def encoder_params(path: Path | str) -> float:
    """Parameters of the encoder at `path` (what `xstilts scaling` puts on its x axis for a toy model)."""
    from trainables.model import load_encoder

    return float(sum(p.numel() for p in load_encoder(path).parameters()))


def shift(slope: float, params: float) -> float:
    """Points added to every score of a run with intermediate training."""
    return slope * math.log10(params / REFERENCE_PARAMS)


def shifted(target: str, splits: dict, delta: float) -> dict:
    """A target's per-split, per-language metrics with the metrics its score is made of moved by `delta` (QA:
    exact match and F1; others: the task's metric), so its score and every average over targets move by `delta`."""
    if not delta:
        return splits
    task = TASKS[target]
    keys = ("exact_match", "f1") if task.kind == "span_qa" else (task.metric,)
    return {split: {lang: {k: v + delta if k in keys else v for k, v in metrics.items()}
                    for lang, metrics in langs.items()}
            for split, langs in splits.items()}
