"""The mixture of intermediate tasks as a value: weights -> probabilities -> a seeded per-batch task stream.

Samplers (jiant's, `jiant/proj/main/components/task_sampler.py`), with n_i = training features of task i
(`phase2.mixture_sizes`: a long SQuAD context gives several windows):
  explicit      p_i ∝ w_i^(1/T)                 (the search's weights; T = 1 by default)
  uniform       p_i = 1 / k
  proportional  p_i ∝ n_i
  capped        p_i ∝ min(n_i, cap)
  temperature   p_i ∝ min(n_i, cap)^(1/T)       (T = 1: proportional; T -> inf: uniform)
Sampling is per optimiser step (one task per step, its grad_accum micro-batches included, as jiant does), not a
concatenation shuffled once.
The empty mixture is the pretrained baseline: phase 2 is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from trainables.errors import XstiltsError


@dataclass(frozen=True)
class Mixture:
    weights: Mapping[str, float] = field(default_factory=dict)
    sampler: str = "explicit"
    temperature: float = 1.0
    cap: int | None = None

    def is_empty(self) -> bool:
        return not any(w > 0 for w in self.weights.values())

    def probabilities(self, sizes: Mapping[str, int] | None = None) -> dict[str, float]:
        """Normalised task probabilities (sorted by name); `sizes` are needed for size-based samplers."""
        names = sorted(n for n, w in self.weights.items() if w > 0)
        if any(w < 0 for w in self.weights.values()):
            raise XstiltsError(f"negative mixture weight in {dict(self.weights)} — weights must be >= 0")
        if not names:
            return {}
        if self.sampler == "explicit":
            raw = np.array([self.weights[n] for n in names], dtype=float) ** (1.0 / self.temperature)
        elif self.sampler == "uniform":
            raw = np.ones(len(names))
        else:
            if sizes is None or any(n not in sizes for n in names):
                raise XstiltsError(f"sampler {self.sampler!r} needs the training-set size of every task")
            n = np.array([sizes[k] for k in names], dtype=float)
            if self.sampler in ("capped", "temperature") and self.cap:
                n = np.minimum(n, self.cap)
            raw = n ** (1.0 / self.temperature) if self.sampler == "temperature" else n
        if raw.sum() <= 0:
            raise XstiltsError("mixture probabilities sum to zero — give a task a positive weight")
        return dict(zip(names, (raw / raw.sum()).tolist()))

    def stream(self, seed: int, sizes: Mapping[str, int] | None = None) -> Iterator[str]:
        """An endless, seeded stream of task names, one per batch."""
        probs = self.probabilities(sizes)
        names, p = list(probs), np.array(list(probs.values()))
        rng = np.random.default_rng(seed)
        while True:
            yield names[rng.choice(len(names), p=p)]
