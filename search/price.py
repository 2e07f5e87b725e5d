"""`xstilts plan SEARCH_PRESET`: a search priced before it runs — GPU-hours (CPU-hours with --gpu-type cpu) and
wall-clock hours on N GPUs, per phase and per target, with the assumptions printed.

    xstilts plan paper --gpus 8 --gpu-memory-gb 80 --gpu-type h100 --json paper-plan.json
    xstilts plan configs/search/toy.yaml --gpus 0 --gpu-type cpu

Throughput model (time = FLOPs / (peak x MFU)):
  FLOPs per token   training 6 N + 12 L h s (PaLM's count, as benchmarks/gpu_check.py: N non-embedding
                    parameters, L layers, h hidden, s the sequence's tokens); forward only (evaluation, model
                    selection, retrieval) a third of that
  MFU               0.377 t / (t + 5520 (1024/h)²), t = tokens in one micro-batch per GPU (rows x mean tokens:
                    batches are grouped by length, so they pad little). Fitted to XLM-R Large (h = 1024) on an H200
                    in bf16: 32 x 256 -> 22.5 %, 64 x 256 -> 28.2 % (docs/measurements/gpu_check-h200-2026-11-26.json
                    + probe). A 4 x 50 micro-batch gets 1.3 %: kernel launches, not FLOPs, bound tiny steps. Other
                    widths: a fixed overhead per layer against FLOPs that grow with h² (not measured: XL/XXL
                    figures are extrapolations).
  peak              dense bf16: H100 and H200 989 TFLOP/s, A100 312. CPU: the FLOP/s this machine reaches,
                    measured on the spot (a few training steps of the configured model at the phase-3 shape).
Workload of one trial: phase 2 (its steps x global batch x the mixture's mean tokens), each target's fine-tune
(epochs x English training features, plus a forward pass of `selection.subset` examples per validation —
patience ignored: an upper bound), its evaluation (every split in eval_splits, every language) and retrieval
(every sentence of BUCC's and Tatoeba's corpora embedded once). XQuAD and MLQA share one fine-tune. Row counts
and mean token lengths come from the data_dir when it holds the split (a sample of 200 rows tokenised with the
model's tokenizer), else from the table below (rows: shared/reference/datasets.md; mean tokens: estimates for
XLM-R's SentencePiece, printed as assumptions).
Search: trials = num_samples. The seeded points run every rung; under ASHA (grace g, reduction factor r) a free
trial runs rung k with probability r^-(milestones before k); a free trial's mixture includes each candidate with
probability 1/2. Test work the trials defer (`finalists`: BUCC's test mining, Tatoeba, a fine-tune serving only
test-only targets; trainables/rungs.py) is paid once per finalist (the seeded points plus `finalists`). Wall clock: total GPU-hours over the GPUs that run at once (trials in parallel x GPUs per
trial), at least the longest trial.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from trainables.plan import _shape, known_config

GPU_PEAK = {"h100": 989e12, "h200": 989e12, "a100": 312e12}
MFU_MAX, MFU_HALF = 0.377, 5520.0
SAMPLE = 200

# task -> split -> (rows over all languages, mean tokens per row); QA rows are features (windows), multiple
# choice rows count every choice's tokens. Rows from shared/reference/datasets.md; tokens estimated.
REAL = {
    "anli_plus": {"train": (1_105_000, 44)}, "mnli": {"train": (392_702, 44)}, "qqp": {"train": (363_846, 32)},
    "squad_v1": {"train": (88_600, 175), "validation": (10_600, 180)},
    "squad_v2": {"train": (131_900, 175)}, "sst2": {"train": (67_349, 14)}, "hellaswag": {"train": (39_905, 280)},
    "ccg": {"train": (38_015, 32)}, "cosmosqa": {"train": (25_262, 400)}, "commonsenseqa": {"train": (9_741, 125)},
    "xnli": {"validation": (37_350, 50), "test": (75_150, 50)},
    "pawsx": {"train": (49_401, 60), "validation": (14_000, 65), "test": (14_000, 65)},
    "udpos": {"train": (21_253, 35), "validation": (25_000, 35), "test": (85_000, 35)},
    "panx": {"train": (20_000, 20), "validation": (230_000, 22), "test": (230_000, 22)},
    "xquad": {"test": (14_400, 240)}, "mlqa": {"validation": (4_600, 250), "test": (46_000, 250)},
    "tydiqa": {"train": (3_900, 260), "test": (5_500, 260)},
    "bucc2018": {"validation": (320_000, 40), "test": (2_700_000, 40)}, "tatoeba": {"test": (72_000, 16)},
}


def flops_per_token(hidden: int, layers: int, intermediate: int, seq: float) -> float:
    """Training FLOPs per token, PaLM's count: 6 N (N the non-embedding parameters) + 12 L h s (attention); a
    forward pass is a third of it. benchmarks/gpu_check.py computes its measured MFU with the same count."""
    return 6 * layers * (4 * hidden * hidden + 2 * hidden * intermediate) + 12 * layers * hidden * seq


def mfu(tokens: float, hidden: int = 1024) -> float:
    """Model FLOPs utilisation of a micro-batch of `tokens` tokens. A step costs its FLOPs at the best MFU plus a
    fixed overhead per layer (kernel launches, synchronisation); a layer's FLOPs per token grow with hidden², so
    the tokens at which half the best MFU is reached shrink with 1/hidden² (calibrated at XLM-R Large's 1024)."""
    return MFU_MAX * tokens / (tokens + MFU_HALF * (1024 / hidden) ** 2)


class Throughput:
    """Seconds for a number of tokens, trained or forward only, at a micro-batch size (module docstring)."""

    def __init__(self, cfg, gpu_type: str):
        self.gpu_type = gpu_type
        name = cfg.model.name
        if name == "toy":
            self.h, self.layers, self.inter = cfg.model.hidden_size, cfg.model.layers, 4 * cfg.model.hidden_size
        else:
            config = known_config(name) if name in _known() else None
            if config is None:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(name)
            self.h, self.layers, self.inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
        self.cpu_flops = measure_cpu(cfg) if gpu_type == "cpu" else None

    def flops(self, tokens: float, seq: float, train: bool) -> float:
        return tokens * flops_per_token(self.h, self.layers, self.inter, seq) / (1 if train else 3)

    def seconds(self, tokens: float, seq: float, rows: int, train: bool = True) -> float:
        if tokens <= 0 or seq <= 0:  # a split the task does not have
            return 0.0
        rate = self.cpu_flops if self.cpu_flops else GPU_PEAK[self.gpu_type] * mfu(rows * seq, self.h)
        return self.flops(tokens, seq, train) / rate


def _known() -> set[str]:
    from trainables.plan import ALIASES, KNOWN_MODELS

    return set(KNOWN_MODELS) | set(ALIASES)


def measure_cpu(cfg) -> float:
    """FLOP/s this machine reaches training the configured model at the phase-3 shape, one thread per process as
    trials run (`threads`), a few steps after a warm-up."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from trainables.model import MultiTaskModel
    from trainables.train import make_optimizer

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        shape = _shape(cfg)
        rows, seq = cfg.target.batch_size, min(cfg.target.max_length, 48)
        enc = XLMRobertaModel(XLMRobertaConfig(vocab_size=1000, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                                               num_attention_heads=shape.heads, intermediate_size=4 * shape.hidden),
                              add_pooling_layer=False)
        model = MultiTaskModel(enc)
        model.add_head("x", "pair_classification", 3)
        opt, _ = make_optimizer(model, 1e-4, 100)
        ids = torch.randint(5, 1000, (rows, seq))

        def step():
            loss = torch.nn.functional.cross_entropy(model("x", ids, torch.ones_like(ids)), torch.zeros(rows, dtype=torch.long))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        started, n = time.perf_counter(), 6
        for _ in range(n):
            step()
        seconds = (time.perf_counter() - started) / n
        h, L = shape.hidden, shape.layers
        per_token = 6 * L * (4 * h * h + 2 * h * 4 * h) + 12 * L * h * seq
        return rows * seq * per_token / seconds
    finally:
        torch.set_num_threads(threads)


class Sizes:
    """(rows, mean tokens) of a task's split: measured in the data_dir when it holds it, else the table."""

    def __init__(self, cfg, data_dir: Path | None):
        self.cfg, self.data_dir = cfg, data_dir
        self.measured: set[str] = set()
        self._tok = None
        self._memo: dict = {}

    def tok(self):
        if self._tok is None:
            from trainables.model import load_tokenizer

            name = self.cfg.model.name
            self._tok = load_tokenizer(Path(self.data_dir) / "tokenizer" if name == "toy" else name,
                                       self.cfg.model.revision)
        return self._tok

    def __call__(self, task: str, split: str) -> tuple[float, float, float]:
        """(rows, mean tokens per feature, features per row): QA questions give one feature per window."""
        if (task, split) not in self._memo:
            self._memo[task, split] = self._measure(task, split) or self._table(task, split)
        return self._memo[task, split]

    def _table(self, task: str, split: str) -> tuple[float, float, float]:
        from trainables.tasks import TASKS

        t = TASKS[task]
        source = t.train_on if split == "train" and t.train_on else task
        if split == "selection":
            source, kind = t.selection or (task, "validation")
            split = "train" if kind == "holdout" else "validation"
        rows, tokens = REAL.get(source, {}).get(split) or REAL.get(task, {}).get(split, (0, 0))
        return float(rows), float(tokens), 1.0

    def _measure(self, task: str, split: str) -> tuple[float, float, float] | None:
        if self.data_dir is None or not Path(self.data_dir).exists():
            return None
        from trainables import data as D
        from trainables.kinds import KINDS, featurize, labels_of
        from trainables.tasks import TASKS

        t = TASKS[task]
        real = split
        if split == "selection":
            source, kind = t.selection or (task, "validation")
            t, real = TASKS[source], ("train" if kind == "holdout" else "validation")
        try:
            per_lang = D.load_split(t, real, Path(self.data_dir), **({"languages": ["en"]} if split in ("train", "selection") else {}))
        except Exception:  # not there (or not prepared): the table
            return None
        if not per_lang:
            return None
        tok = self.tok()
        if t.kind == "retrieval":
            sentences = [s for exs in per_lang.values() for ex in exs for s in (*ex["sources"], *ex["targets"])]
            sample = sentences[:: max(1, len(sentences) // SAMPLE)][:SAMPLE]
            mean = sum(len(tok(s)["input_ids"]) for s in sample) / max(1, len(sample))
            self.measured.add(f"{task}/{split}")
            return float(len(sentences)), float(mean), 1.0
        rows = sum(len(v) for v in per_lang.values())
        exs = [ex for v in per_lang.values() for ex in v]
        sample = exs[:: max(1, len(exs) // SAMPLE)][:SAMPLE]
        tc = self.cfg.target
        qa = KINDS[t.kind].qa
        feats = featurize(t.kind, sample, tok, tc.qa_max_length if qa else tc.max_length,
                          labels=tuple(labels_of(t, exs) or ()), doc_stride=tc.doc_stride)
        lengths = [_tokens(f["input_ids"]) for f in feats]
        self.measured.add(f"{task}/{split}")
        per_row = len(feats) / max(1, len(sample))  # QA: windows per question
        return float(rows), sum(lengths) / max(1, len(lengths)), per_row


def _tokens(ids) -> int:
    return sum(len(x) for x in ids) if len(ids) and not isinstance(ids[0], int) and hasattr(ids[0], "__len__") else len(ids)


def features(size: tuple[float, float, float], cap: int | None) -> tuple[float, float]:
    """(features, mean tokens) of (rows, mean, features per row), after a cap on rows."""
    rows, mean, per_row = size
    return (min(rows, cap) if cap else rows) * per_row, mean


def trial_cost(cfg, sizes: Sizes, speed: Throughput, mixture: dict[str, float],
               only: list[str] | None = None) -> dict:
    """Seconds of one trial (one seed) per part: {"phase2": s, "phase3": {target: s}, "evaluation": {target: s},
    "retrieval": {target: s}}; `mixture`: task -> probability (empty: the baseline, no phase 2). The targets and
    splits are those the configuration evaluates (`run_targets`, `target_splits`: a search's trials defer test
    work to its finalists); `only`: just these targets (a finalist's deferred work), phase 2 not counted."""
    from trainables.kinds import KINDS
    from trainables.rungs import finetune_group, run_targets, target_splits
    from trainables.tasks import TASKS

    ic, tc = cfg.intermediate, cfg.target
    workers = max(1, cfg.distributed.workers)
    out = {"phase2": 0.0, "phase3": {}, "evaluation": {}, "retrieval": {}}
    if mixture and only is None:
        train = {t: features(sizes(t, "train"), ic.max_train_examples) for t in mixture}
        steps = ic.steps or ic.total_steps({t: int(f) for t, (f, _) in train.items()})
        mean = sum(p * train[t][1] for t, p in mixture.items())
        rows = ic.batch_size * ic.grad_accum
        out["phase2"] = speed.seconds(steps * rows * mean, mean, max(1, ic.batch_size // workers))
    done_groups = set()
    for name in run_targets(cfg):  # a shared fine-tune is paid by the group's first target to run
        if only is not None and name not in only:
            continue
        task = TASKS[name]
        kind = KINDS[task.kind]
        if kind.head is not None:
            group = finetune_group(cfg, name)
            if group not in done_groups:
                done_groups.add(group)
                n, mean = features(sizes(name, "train"), tc.max_train_examples)
                batch = tc.qa_batch_size if kind.qa else tc.batch_size
                epochs = tc.epochs.get(name, task.epochs)
                steps = max(1, math.ceil(n / (batch * tc.grad_accum))) * epochs
                seconds = speed.seconds(steps * batch * tc.grad_accum * mean, mean, max(1, batch // workers))
                sel, sel_mean = features(sizes(name, "selection"), tc.selection.subset)
                validations = steps // tc.selection.every_steps + (1 if steps % tc.selection.every_steps else 0)
                seconds += speed.seconds(validations * sel * sel_mean, sel_mean, tc.eval_batch_size, train=False)
                out["phase3"][name] = seconds
            else:
                out["phase3"][name] = 0.0
            evaluated = 0.0
            for split in target_splits(cfg, name):
                cap = tc.max_eval_examples * len(task.languages) if tc.max_eval_examples else None
                n, mean = features(sizes(name, split), cap)
                evaluated += speed.seconds(n * mean, mean, tc.eval_batch_size, train=False)
            out["evaluation"][name] = evaluated
        else:
            seconds = 0.0
            for split in sorted({"validation", *target_splits(cfg, name)}):  # BUCC mines dev for its threshold
                n, mean = features(sizes(name, split), None)
                # embed() fills batches by tokens: eval_batch_size x the longest sentence (taken as 3x the mean)
                rows = tc.eval_batch_size * min(tc.retrieval_max_length, 3 * mean) / max(mean, 1)
                seconds += speed.seconds(n * mean, mean, max(1, int(rows)), train=False)
            out["retrieval"][name] = seconds
    return out


def expected_rungs(scfg, n_rungs: int) -> list[float]:
    """Probability that a free (not seeded) trial runs rung k (1-based), under the search's scheduler."""
    sch = scfg.scheduler
    if not sch.enabled or n_rungs <= 1:
        return [1.0] * n_rungs
    milestones, m = [], min(sch.grace_period, n_rungs)
    while m < n_rungs:
        milestones.append(m)
        m *= sch.reduction_factor
    return [sch.reduction_factor ** -sum(1 for ms in milestones if ms < k) for k in range(1, n_rungs + 1)]


def price(scfg, gpus: int, gpu_type: str) -> dict:
    """The JSON of `xstilts plan SEARCH_PRESET` (module docstring). A search with a proxy: its two stages, the
    confirmation priced with the first `top_k` candidates alone standing in for the mixtures the proxy will pick."""
    from search.tuner import base_config

    from trainables.config import update

    if scfg.proxy:
        from search.proxy import confirm_stage, proxy_stage

        stand_ins = [{c: 1.0} for c in scfg.candidates[:scfg.proxy.top_k]]
        stages = {"proxy": price(proxy_stage(scfg), gpus, gpu_type),
                  "confirmation": price(confirm_stage(scfg, stand_ins), gpus, gpu_type)}
        return _combined(stages)

    base = update(base_config(scfg), {"defer_test": scfg.defers_test})  # as trials run (search/tuner.py trial_context)
    data_dir = Path(base.data_dir) if base.data_dir else None
    if base.model.name == "toy" and (data_dir is None or not data_dir.exists()):
        # the toy's sizes are its data's: the benchmark the search would write (seed 0), in a scratch folder
        import tempfile

        from trainables.toy import write_toy

        with tempfile.TemporaryDirectory(prefix="xstilts-plan-") as scratch:
            return _price(scfg, base, write_toy(Path(scratch) / "toy", seed=0), gpus, gpu_type)
    return _price(scfg, base, data_dir, gpus, gpu_type)


def _combined(stages: dict[str, dict]) -> dict:
    """Searches run one after another (a proxy search's two stages): hours and parts summed."""
    parts = list(stages.values())
    phase3: dict[str, float] = {}
    for part in parts:
        for t, h in part["breakdown"]["phase3"].items():
            phase3[t] = round(phase3.get(t, 0.0) + h, 3)
    total = lambda key: round(sum(p[key] for p in parts), 3)
    return {"gpu_hours": total("gpu_hours"), "unit": parts[0]["unit"], "wall_hours": total("wall_hours"),
            "trials": sum(p["trials"] for p in parts),
            "breakdown": {"phase2": round(sum(p["breakdown"]["phase2"] for p in parts), 3), "phase3": phase3,
                          **{k: round(sum(p["breakdown"][k] for p in parts), 3) for k in ("evaluation", "retrieval")}},
            "stages": stages, "assumptions": {**parts[-1]["assumptions"],
                                              "stages": {k: v["gpu_hours"] for k, v in stages.items()}}}


def _price(scfg, base, data_dir: Path | None, gpus: int, gpu_type: str) -> dict:
    from trainables.config import update
    from trainables.mixture import Mixture
    from trainables.rungs import deferred, run_targets

    sizes, speed = Sizes(base, data_dir), Throughput(base, gpu_type)
    rungs = run_targets(base)
    ic = base.intermediate

    def mixture_probs(cfg, weights: dict) -> dict:
        if not weights:
            return {}
        mix = Mixture(weights, cfg.intermediate.sampler, cfg.intermediate.temperature, cfg.intermediate.cap)
        return mix.probabilities({t: int(features(sizes(t, "train"), cfg.intermediate.max_train_examples)[0])
                                  for t in weights})

    def cost(cfg, weights: dict, reach: list[float]) -> dict:
        part = trial_cost(cfg, sizes, speed, mixture_probs(cfg, weights))
        weight = {name: reach[k] for k, name in enumerate(rungs)}
        return {"phase2": part["phase2"],
                **{key: {t: s * weight[t] for t, s in part[key].items()} for key in ("phase3", "evaluation", "retrieval")}}

    n_free = max(0, scfg.num_samples - len(scfg.points_to_evaluate))
    trials = []
    for weights in scfg.points_to_evaluate[:scfg.num_samples]:
        trials.append((1.0, cost(base, dict(weights), [1.0] * len(rungs))))
    if n_free:
        reach = expected_rungs(scfg, len(rungs))
        free_cfg = base
        if scfg.steps:
            free_cfg = update(base, {"intermediate": {"steps": int(sum(scfg.steps) / len(scfg.steps)), "epochs": None}})
        # A free trial includes each candidate with probability 1/2. Phase 2 by epochs: its length is the sum
        # over the tasks it includes, so half the single-task costs summed; by steps: a fixed length at the
        # candidates' mean tokens, so their single-task costs averaged.
        one = [cost(free_cfg, {t: 1.0}, reach)["phase2"] for t in scfg.candidates]
        rest = cost(free_cfg, {}, reach)
        by_epochs = free_cfg.intermediate.steps is None
        rest["phase2"] = sum(one) / 2 if by_epochs else sum(one) / max(1, len(one))
        trials.append((float(n_free), rest))
    later = deferred(base)
    finalists = 0
    if later:  # the finalists' deferred test work (search/finalists.py): the same for every finalist
        finalists = min(scfg.num_samples, len(scfg.points_to_evaluate)) + min(scfg.finalists or 0, n_free)
        full = update(base, {"defer_test": False})
        work = trial_cost(full, sizes, speed, {}, only=later)
        trials.append((float(finalists), {"phase2": 0.0, **{k: work[k] for k in ("phase3", "evaluation", "retrieval")}}))
    repeats = scfg.repeats
    total = {"phase2": 0.0, "phase3": {}, "evaluation": 0.0, "retrieval": 0.0}
    longest = 0.0
    for count, part in trials:
        total["phase2"] += count * repeats * part["phase2"]
        for t, s in part["phase3"].items():
            total["phase3"][t] = total["phase3"].get(t, 0.0) + count * repeats * s
        total["evaluation"] += count * repeats * sum(part["evaluation"].values())
        total["retrieval"] += count * repeats * sum(part["retrieval"].values())
        longest = max(longest, repeats * (part["phase2"] + sum(part["phase3"].values()) +
                                          sum(part["evaluation"].values()) + sum(part["retrieval"].values())))
    # The seconds above are device-seconds (a job on W workers: W GPUs for 1/W of the time).
    workers = max(1, base.distributed.workers)
    per_trial_gpus = workers * float(scfg.resources.gpu or 1)
    if gpu_type == "cpu":
        parallel = scfg.max_concurrent_trials or 1
    else:  # max_concurrent_trials null: as many as the GPUs hold
        parallel = max(1, min(scfg.max_concurrent_trials or scfg.num_samples, int(gpus // per_trial_gpus)))
    device_s = (total["phase2"] + sum(total["phase3"].values()) + total["evaluation"] + total["retrieval"])
    hours = device_s / 3600 * ((base.threads or 1) if gpu_type == "cpu" else 1.0)
    wall = max(device_s / (parallel * workers), longest / workers) / 3600
    return {"gpu_hours": round(hours, 3), "unit": "CPU-hours" if gpu_type == "cpu" else "GPU-hours",
            "wall_hours": round(wall, 3), "trials": scfg.num_samples,
            "breakdown": {"phase2": round(total["phase2"] / 3600, 3),
                          "phase3": {t: round(s / 3600, 3) for t, s in total["phase3"].items()},
                          "evaluation": round(total["evaluation"] / 3600, 3),
                          "retrieval": round(total["retrieval"] / 3600, 3)},
            "assumptions": {
                "model": base.model.name, "device": gpu_type, "gpus": gpus, "trials_at_once": parallel,
                "gpus_per_trial": per_trial_gpus, "repeats": repeats,
                "throughput": (f"measured on this CPU: {speed.cpu_flops / 1e9:.1f} GFLOP/s per process"
                               if speed.cpu_flops else
                               f"{GPU_PEAK[gpu_type] / 1e12:.0f} TFLOP/s peak x MFU {MFU_MAX} t/(t + "
                               f"{MFU_HALF * (1024 / speed.h) ** 2:.0f})"),
                "mfu_at_mnli_shape": (None if speed.cpu_flops else round(mfu(
                    max(1, ic.batch_size // workers) * 44, speed.h), 3)),
                "free_trial_reaches_rung": [round(p, 3) for p in expected_rungs(scfg, len(rungs))],
                "rungs": rungs, "finalists": finalists, "deferred_to_finalists": later,
                "sizes_measured_in_data_dir": sorted(sizes.measured),
                "sizes_from_table": "rows: shared/reference/datasets.md; mean tokens: estimates",
                "selection": "every validation counted (patience ignored: an upper bound)",
                "retrieval_batches": "filled by tokens: eval_batch_size x the longest sentence, taken as 3x the mean",
                "free_trial_mixture": "each candidate included with probability 1/2"}}
