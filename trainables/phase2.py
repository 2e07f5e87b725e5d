"""Phase 2: multi-task intermediate training on a Mixture, cached by content.

One task per batch, drawn by the mixture's seeded stream; a shared encoder with one head per task.
Options: continued multilingual MLM mixed in (`intermediate.mlm.weight` of the batches, on a corpus of one
sentence per line), and machine-translated intermediate data (`intermediate.translated_dir`: the same
layout and Hub schemas, read as extra training examples).

The output folder (encoder `save_pretrained` + tokenizer + `xstilts-manifest.json`) lives at
`<cache_dir>/phase2-<key>`, where the key hashes everything that determines it: base model and revision,
mixture probabilities, phase-2 hyperparameters, seed, the data files' names and sizes, and PHASE2_VERSION.
It is written to a temporary folder and renamed, the manifest last; a folder without a valid manifest is
rebuilt. A file lock makes concurrent trials that need the same entry compute it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import torch

from trainables import data as D
from trainables.features import featurize
from trainables.mixture import Mixture
from trainables.model import MultiTaskModel, load_encoder
from trainables.tasks import TASKS
from trainables.train import epoch_batches, fit, loss_fn, mlm_batches, set_seed

PHASE2_VERSION = "1"  # bump when the phase-2 code changes what it produces
MANIFEST = "xstilts-manifest.json"


def data_fingerprint(data_dir: Path | None, tasks, pattern: str = "train*") -> list:
    """Names and sizes of the tasks' local files matching `pattern` (phase 2: training files; phase 3: all
    splits), only under each source's own configs, plus the languages the data_dir says it holds. Data read
    from the Hub is identified by its revision alone."""
    out = [sorted(D.manifest_languages(data_dir) or [])]
    for name in sorted(tasks):
        task = TASKS[name]
        for source in task.sources:
            root = Path(data_dir or ".") / source.hub_id
            configs = {source.config_for(l) for l in task.languages} if source.per_language else {source.config}
            files = sorted(p for c in configs if (root / c).is_dir() for p in (root / c).glob(pattern) if p.is_file())
            out.append([source.hub_id, source.revision, [[str(p.relative_to(root)), p.stat().st_size] for p in files]])
    return out


def encoder_id(path) -> str:
    """What identifies an encoder in cache keys: a phase-2 entry's name (its content key), the toy model's own
    key, else the Hub id or folder as given (with model.revision alongside)."""
    path = Path(str(path))
    if path.name.startswith("phase2-"):
        return path.name
    if (path / MANIFEST).exists():
        return json.loads((path / MANIFEST).read_text())["key"]
    return str(path)


def cache_key(cfg, base, probs: dict, data_dir: Path | None) -> str:
    inter = cfg.intermediate.model_dump()
    inter.pop("mixture")
    payload = {"base": encoder_id(base), "revision": cfg.model.revision,
               "probs": {k: round(v, 8) for k, v in probs.items()},
               "intermediate": inter, "seed": cfg.seed, "data": data_fingerprint(data_dir, probs),
               "version": PHASE2_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def valid_entry(path: Path) -> bool:
    """An entry is usable only if its manifest exists, parses, and every file it lists has the listed size."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        return all((path / f).stat().st_size == size for f, size in manifest["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def train_intermediate(cfg, base, tok, examples: dict[str, list], mixture: Mixture, device, data_dir, log):
    """Returns (encoder folder for phase 3, phase-2 summary). The empty mixture returns the base model."""
    if mixture.is_empty():
        return base, {"skipped": True, "cache_hit": False}
    probs = mixture.probabilities({t: len(x) for t, x in examples.items()})
    key = cache_key(cfg, base, probs, data_dir)
    out = Path(cfg.cache_dir).resolve() / f"phase2-{key}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".phase2-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second trial with the same key waits, then reuses
        if valid_entry(out):
            log(f"phase 2: cache hit {out.name}")
            return out, {**json.loads((out / MANIFEST).read_text())["summary"], "cache_hit": True, "dir": str(out)}
        tmp = out.with_name(out.name + ".tmp")
        summary = _train(cfg, base, tok, examples, mixture, probs, device, data_dir, log, tmp)
        _write_entry(out, tmp, summary)
        return out, {**summary, "cache_hit": False, "dir": str(out)}


def _train(cfg, base, tok, examples, mixture, probs, device, data_dir, log, tmp: Path) -> dict:
    ic = cfg.intermediate
    set_seed(cfg.seed)  # phase 2 depends on its inputs only, not on what ran before it (a cached phase 1...)
    mlm_model = None
    if ic.mlm.weight > 0:
        from transformers import AutoModelForMaskedLM

        mlm_model = AutoModelForMaskedLM.from_pretrained(str(base))
        model = MultiTaskModel(mlm_model.base_model)
    else:
        model = MultiTaskModel(load_encoder(base, cfg.model.revision))
    streams, sizes = {}, {}
    for name in probs:
        task = TASKS[name]
        exs = list(examples[name])
        if ic.translated_dir:
            exs += D.load_split(task, "train", ic.translated_dir).get("en", [])
        labels = D.tag_labels(task, exs) if task.kind == "tagging" else task.labels
        model.add_head(name, task.kind, len(labels or ()))
        feats = featurize(task.kind, exs[: ic.max_train_examples], tok, ic.max_length, labels=labels or ())
        sizes[name] = len(feats)
        streams[name] = epoch_batches(feats, ic.batch_size, tok.pad_token_id, cfg.seed)
    model.to(device)
    if mlm_model is not None:
        mlm_model.to(device)
        corpus = Path(ic.mlm.corpus or Path(data_dir) / "mlm" / "corpus.txt")
        streams["mlm"] = mlm_batches(tok, corpus.read_text(encoding="utf-8").splitlines(), ic.batch_size, cfg.seed)
    order = mixture.stream(cfg.seed, {t: len(x) for t, x in examples.items()})
    mlm_rng = torch.Generator().manual_seed(cfg.seed)
    counts = {name: 0 for name in streams}

    def step_loss():
        name = "mlm" if mlm_model is not None and torch.rand(1, generator=mlm_rng).item() < ic.mlm.weight else next(order)
        counts[name] += 1
        b = {k: v.to(device) for k, v in next(streams[name]).items()}
        if name == "mlm":
            return mlm_model(**b).loss
        return loss_fn(TASKS[name].kind, model(name, b["input_ids"], b["attention_mask"]), b)

    log(f"phase 2: {ic.steps} steps on {', '.join(f'{t} {p:.2f}' for t, p in probs.items())}")
    stats = fit(model, step_loss, ic.steps, ic.lr, device, ic.grad_accum, progress=cfg.progress, desc="phase 2")
    shutil.rmtree(tmp, ignore_errors=True)
    model.encoder.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    return {**stats, "batches": counts, "examples": sizes, "probabilities": probs}


def _write_entry(out: Path, tmp: Path, summary: dict) -> None:
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"files": files, "summary": summary}, indent=1))  # manifest last
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
