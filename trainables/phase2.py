"""Phase 2: multi-task intermediate training on a Mixture, cached by content.

One task per batch, drawn by the mixture's seeded stream; a shared encoder with one head per task.
Options: continued multilingual MLM mixed in (`intermediate.mlm.weight` of the batches, on a corpus of one
sentence per line), and machine-translated intermediate data (`intermediate.translated_dir`: the same
layout and Hub schemas, read as extra training examples).

The output (encoder `save_pretrained` + tokenizer) is a cache entry `<cache_dir>/phase2-<key>`
(`trainables.cache`: locked, written atomically with its manifest last, rebuilt when broken). The key covers
everything that determines it: the base encoder and revision, the mixture's probabilities, every phase-2
setting, the seed, the contents of the training files (English, translated, MLM corpus), the precision
(device type) and the phase-2 code itself (`trainables.codever`: its modules' source and library versions).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainables import checkpoints
from trainables import data as D
from trainables.cache import Cache, entry_id, file_digest
from trainables.config import loader_workers
from trainables.distributed import full_state, local_rows, shared_loss, unwrap, worker, wrap
from trainables.featcache import Examples, derived, take
from trainables.kinds import KINDS, featurize, labels_of
from trainables.mixture import Mixture
from trainables.checkpoints import LocalHooks
from trainables.model import MultiTaskModel, load_encoder
from trainables.tasks import TASKS
from trainables.codever import code_version
from trainables.train import Hooks, epoch_batches, fit, mlm_batches, set_seed, token_loss

SIZE_SAMPLERS = ("proportional", "capped", "temperature")


def mixture_sizes(cfg, tok, examples: dict[str, list]) -> dict[str, int]:
    """Training-set sizes as jiant counts them for its size-based samplers: features, not examples (a long SQuAD
    context gives several windows), after `max_train_examples`; for the explicit and uniform samplers, which do not
    read sizes, the example counts (no featurising needed)."""
    ic = cfg.intermediate
    if ic.sampler not in SIZE_SAMPLERS:
        return {t: len(x) for t, x in examples.items()}
    out = {}
    for name, exs in examples.items():
        task = TASKS[name]
        labels = labels_of(task, exs)
        out[name] = len(featurize(task.kind, take(exs, ic.max_train_examples), tok, ic.max_length,
                                  labels=tuple(labels or ())))
    return out


def encoder_id(path) -> str:
    """What identifies an encoder in cache keys: a cache entry's `<kind>-<key>` (its content key), else the
    Hub id or folder as given (model.revision goes alongside)."""
    return entry_id(path) or str(path)


def mlm_corpus(cfg, data_dir: Path | None) -> Path:
    return Path(cfg.intermediate.mlm.corpus or Path(data_dir or ".") / "mlm" / "corpus.txt")


def phase2_payload(cfg, base, probs: dict, data_dir: Path | None, device: torch.device) -> dict:
    ic = cfg.intermediate
    # the temperature acts only through the probabilities (keyed themselves): a single-task phase 2 trains the
    # same at any temperature, and shares its entry
    settings = ic.model_dump(exclude={"mixture", "translated_dir", "temperature"})
    settings["mlm"]["corpus"] = file_digest(mlm_corpus(cfg, data_dir)) if ic.mlm.weight > 0 else None
    return {"base": encoder_id(base), "revision": cfg.model.revision,
            "probs": {k: round(v, 8) for k, v in probs.items()}, "intermediate": settings, "seed": cfg.seed,
            "data": {t: D.inputs(t, "train", data_dir) for t in sorted(probs)},
            "translated": {t: D.inputs(t, "train", ic.translated_dir) for t in sorted(probs)} if ic.translated_dir else None,
            "precision": device.type, "code": code_version("phase2")}


def train_intermediate(cfg, base, tok, examples: dict[str, list], mixture: Mixture, device, data_dir, log,
                       launcher=None):
    """Returns (encoder folder for phase 3, phase-2 summary). The empty mixture returns the base model. With
    `distributed.workers > 1` the training runs as a job of `launcher` (Ray Train workers)."""
    if mixture.is_empty():
        return base, {"skipped": True, "cache_hit": False}
    probs = mixture.probabilities(mixture_sizes(cfg, tok, examples))
    payload = phase2_payload(cfg, base, probs, data_dir, device)
    payload["distributed"] = cfg.distributed.model_dump(include={"workers", "strategy", "mixed_precision"})
    entry = Cache(cfg.cache_dir).entry("phase2", payload)

    job = f"phase2-{entry.key}"

    def build(tmp: Path) -> dict:
        if cfg.distributed.workers > 1:
            return require(launcher)({"kind": "phase2", "cfg": cfg.model_dump(), "base": str(base),
                                      "data_dir": str(data_dir) if data_dir else None, "out": str(tmp),
                                      "key": job})
        return train_phase2(cfg, base, tok, examples, mixture, probs, device, data_dir, log, tmp,
                            LocalHooks(checkpoints.local_folder(cfg.cache_dir, job), cfg.checkpoint))

    path, summary, hit = entry.get_or_build(build)
    checkpoints.drop(cfg.cache_dir, job)  # the entry holds the result now
    log(f"phase 2: cache hit {path.name}" if hit else f"phase 2: wrote {path.name}")
    return path, {**summary, "cache_hit": hit, "dir": str(path)}


def require(launcher):
    if launcher is None:
        from trainables.errors import XstiltsError

        raise XstiltsError("distributed.workers > 1 runs on Ray Train workers: use `xstilts run` or a search "
                           "(not `python -m trainables`), or set distributed.workers=1")
    return launcher


def train_phase2(cfg, base, tok, examples, mixture, probs, device, data_dir, log, out: Path,
                 hooks: Hooks | None = None) -> dict:
    """Multi-task training on this worker (one of several under a launcher); rank 0 writes the encoder."""
    ic = cfg.intermediate
    set_seed(cfg.seed)  # phase 2 depends on its inputs only, not on what ran before it (a cached phase 1...)
    if ic.mlm.weight > 0:  # continued MLM: the pretrained LM head becomes one more head
        from transformers import AutoModelForMaskedLM

        mlm_model = AutoModelForMaskedLM.from_pretrained(str(base))
        model = MultiTaskModel(mlm_model.base_model)
        model.heads["mlm"] = mlm_model.lm_head
    else:
        model = MultiTaskModel(load_encoder(base, cfg.model.revision))
    streams, sizes = {}, {}
    for name in probs:
        task = TASKS[name]
        exs = examples[name]
        if ic.translated_dir:
            extra = D.load_split(task, "train", ic.translated_dir).get("en", [])
            exs = derived(list(exs) + list(extra), getattr(exs, "key", None), {"translated": getattr(extra, "key", None)})
        labels = labels_of(task, exs)
        model.add_head(name, task.kind, len(labels or ()))
        feats = featurize(task.kind, take(exs, ic.max_train_examples), tok, ic.max_length, labels=tuple(labels or ()))
        sizes[name] = len(feats)
        streams[name] = epoch_batches(feats, ic.batch_size, tok.pad_token_id, cfg.seed, loader_workers(cfg, device))
    if ic.mlm.weight > 0:
        corpus = mlm_corpus(cfg, data_dir)
        lines = Examples(corpus.read_text(encoding="utf-8").splitlines(), {"mlm_corpus": file_digest(corpus)})
        streams["mlm"] = mlm_batches(tok, lines, ic.batch_size, cfg.seed)
    model = wrap(model, cfg.distributed, device)
    # the stream draws with the probabilities the cache key records (size-based samplers: from mixture_sizes)
    order = (Mixture(probs) if ic.sampler in SIZE_SAMPLERS else mixture).stream(cfg.seed)
    mlm_rng = torch.Generator().manual_seed(cfg.seed)
    counts = {name: 0 for name in streams}
    current = {"task": None, "left": 0}

    def draw():
        if current["left"] == 0:  # one task per optimiser step, as jiant: its grad_accum micro-batches share it
            mlm = ic.mlm.weight > 0 and torch.rand(1, generator=mlm_rng).item() < ic.mlm.weight
            current.update(task="mlm" if mlm else next(order), left=ic.grad_accum)
        current["left"] -= 1
        name = current["task"]
        counts[name] += 1
        batch = next(streams[name])
        return name, local_rows(batch, device)  # this worker's rows

    def loss_of(named):
        name, b = named
        logits = model(name, b["input_ids"], b["attention_mask"])
        return shared_loss(token_loss if name == "mlm" else KINDS[TASKS[name].kind].loss, logits, b)

    steps = ic.total_steps({t: sizes[t] for t in probs})  # jiant's epochs count features
    log(f"phase 2: {steps} steps on {', '.join(f'{t} {p:.2f}' for t, p in probs.items())}")
    stats = fit(model, draw, loss_of, steps, ic.lr, device, ic.grad_accum, progress=cfg.progress, desc="phase 2",
                hooks=hooks)
    state = full_state(model)  # every worker takes part in gathering the shards; rank 0 gets the whole
    if worker().main:
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        unwrap(model).encoder.save_pretrained(str(out), state_dict=encoder)
        tok.save_pretrained(str(out))
    return {**stats, "batches": counts, "examples": sizes, "probabilities": probs,
            "distributed": cfg.distributed.model_dump(include={"workers", "strategy"})}
