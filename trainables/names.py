"""Names of metrics and parameters: built and parsed here, and nowhere else.

Metric keys are hierarchical (test split unprefixed, validation under `validation/`):

  average                      mean of the task scores present ("average of k targets")
  xtreme                       the same, only when all nine targets are scored (XTREME's own score)
  target/xnli/score            one target's task score
  target/xnli/de/accuracy      one language's metric
  category/qa                  one XTREME category
  validation/<any of those>    the same on validation splits (the search's objective: validation/average)
  seed/<s>/validation/average  one seed of a repeated configuration
  cost/gpu_hours, cost/cpu_hours, time/total_s, ...   bookkeeping (no split)

Parameters: `weight/<task>` (a searched weight), `mix/<task>` (the probability a trial trained with).
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("validation", "test")
OBJECTIVE = "validation/average"  # what the search maximises: validation splits only
WEIGHT, MIX = "weight/", "mix/"


def _prefix(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    return "" if split == "test" else f"{split}/"


def average(split: str = "test") -> str:
    return f"{_prefix(split)}average"


def average_std(split: str = "test") -> str:
    """The spread (std) over seeds of a repeated configuration's average."""
    return f"{average(split)}_std"


def xtreme(split: str = "test") -> str:
    return f"{_prefix(split)}xtreme"


def target_score(target: str, split: str = "test") -> str:
    return f"{_prefix(split)}target/{target}/score"


def language_metric(target: str, lang: str, metric: str, split: str = "test") -> str:
    return f"{_prefix(split)}target/{target}/{lang}/{metric}"


def category(name: str, split: str = "test") -> str:
    return f"{_prefix(split)}category/{name}"


def seed_metric(seed: int, key: str) -> str:
    return f"seed/{seed}/{key}"


def note_tag(target: str, key: str) -> str:
    """A run tag carrying a target's note (e.g. `note/bucc2018/threshold_from`)."""
    return f"note/{target}/{key}"


def weight_param(task: str) -> str:
    return f"{WEIGHT}{task}"


def mix_param(task: str) -> str:
    return f"{MIX}{task}"


@dataclass(frozen=True)
class MetricName:
    """A parsed metric key. `kind` is average | xtreme | score | language | category | seed | other."""

    kind: str
    split: str | None = None
    target: str | None = None
    lang: str | None = None
    metric: str | None = None
    seed: int | None = None
    rest: str | None = None  # seed: the key logged for that seed; other: the whole key


def parse_metric(key: str) -> MetricName:
    parts = key.split("/")
    if parts[0] == "seed" and len(parts) > 2 and parts[1].lstrip("-").isdigit():
        return MetricName("seed", seed=int(parts[1]), rest="/".join(parts[2:]))
    split = "test"
    if parts[0] in SPLITS and len(parts) > 1:
        split, parts = parts[0], parts[1:]
    if parts == ["average"] or parts == ["xtreme"]:
        return MetricName(parts[0], split)
    if parts[0] == "target" and len(parts) == 3 and parts[2] == "score":
        return MetricName("score", split, target=parts[1])
    if parts[0] == "target" and len(parts) == 4:
        return MetricName("language", split, target=parts[1], lang=parts[2], metric=parts[3])
    if parts[0] == "category" and len(parts) == 2:
        return MetricName("category", split, metric=parts[1])
    return MetricName("other", rest=key)


def _collect(metrics: dict[str, float], keep) -> dict:
    """{label: value} for every key whose parsed name `keep` labels (None: skip)."""
    out = {}
    for key, value in metrics.items():
        label = keep(parse_metric(key))
        if label is not None:
            out[label] = value
    return out


def target_scores(metrics: dict[str, float], split: str) -> dict[str, float]:
    """{target: task score} of one split from a flat metrics dict."""
    return _collect(metrics, lambda n: n.target if n.kind == "score" and n.split == split else None)


def seed_values(metrics: dict[str, float], key: str) -> dict[int, float]:
    """{seed: value} of `key` logged per seed (`seed/<s>/<key>`)."""
    return _collect(metrics, lambda n: n.seed if n.kind == "seed" and n.rest == key else None)


def params_with(params: dict[str, str], prefix: str) -> dict[str, float]:
    """{task: float} of `weight/<task>` or `mix/<task>` params."""
    return {k[len(prefix):]: float(v) for k, v in params.items() if k.startswith(prefix)}
