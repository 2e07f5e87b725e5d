"""The toy model (phase 1 of the toy world): a small XLM-R config on the toy tokenizer, pretrained by a short
multilingual MLM on the toy corpus with, every `model.align_every` steps, a translation-ranking step on the toy's
parallel sentences (so retrieval has something to find), on a fixed number of CPU threads (the same model on every
machine), cached under `cache_dir/toy-model-<key>` and built once. Beside `trainables/toy.py`, which writes the
toy benchmark it trains on.

The toy preset's model ships with xstilts (`trainables/prebuilt/toy-model`, 3 MB, with the key of the recipe it
was built from): when a cache entry's key is that key — the same toy data, settings, seed, code of the modules
that build it and library versions — the entry is a copy of it instead of a ~3-minute build, so a fresh clone's
first search starts at once. Any change to the recipe changes the key, and the model is then built as before;
tests/test_toymodel.py fails until the shipped one is rebuilt for the new recipe:

  python -m trainables.toymodel ship      (about 3 minutes on 2 cores)

  toy_model(data_dir, cache_dir, cfg.model) -> the encoder's folder
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from trainables.codever import code_version
from trainables.errors import XstiltsError
from trainables.model import load_tokenizer, mean_pool, retrieval_layer_index
from trainables.train import fit, mlm_batches

# The toy model is built with this many CPU threads on every machine: a float sum's order depends on how a
# kernel splits it over threads, and one rounding difference in phase 1 changes every score downstream.
TOY_THREADS = 2
SHIPPED = Path(__file__).resolve().parent / "prebuilt" / "toy-model"
SHIPPED_KEY = "xstilts-shipped.json"  # {"entry": "toy-model-<key>", "files": {name: [size, sha256]}}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with exactly `n` torch CPU threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toy_model(data_dir: Path, cache_dir: Path, cfg, seed: int = 0, log=print) -> Path:
    """Build (once) and return the folder of the toy encoder: XLM-R config + MLM on the toy corpus.

    A cache entry `toy-model-<key>` keyed by the corpus and tokenizer contents, the model settings and the
    seed. Always built on the CPU (it is tiny), so every trial and machine shares one entry; a copy of the
    shipped model when its recipe is this one (module docstring)."""
    entry = toy_entry(data_dir, cache_dir, cfg, seed)
    corpus, tok_dir = Path(data_dir) / "mlm" / "corpus.txt", Path(data_dir) / "tokenizer"
    if shipped_entry() == entry.path.name:
        def build(tmp: Path) -> dict:
            files: dict = {}
            try:
                files = json.loads((SHIPPED / SHIPPED_KEY).read_text())["files"]
                for name in files:
                    shutil.copyfile(SHIPPED / name, tmp / name)  # (not the package's permissions)
                if files and _listing(tmp) == files:
                    log("phase 1 (toy): the toy model that ships with xstilts (built from this very recipe)")
                    return {"corpus": str(corpus), "shipped": True}
            except (OSError, ValueError, KeyError, TypeError):
                pass
            for name in files:  # a partial or altered copy (an LFS pointer, a cut download): build instead
                (tmp / name).unlink(missing_ok=True)
            log("phase 1 (toy): the shipped toy model's files do not match their record; building it")
            return _build_toy(corpus, tok_dir, Path(data_dir) / "mlm" / "parallel.tsv", cfg, seed, log, tmp)
    else:
        def build(tmp: Path) -> dict:
            return _build_toy(corpus, tok_dir, Path(data_dir) / "mlm" / "parallel.tsv", cfg, seed, log, tmp)
    path, _, _ = entry.get_or_build(build)
    return path


def _listing(folder: Path) -> dict[str, list]:
    """{file name: [size, sha256]} of the model files in `folder` (not the cache's own bookkeeping)."""
    import hashlib

    return {f.name: [f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()] for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(("xstilts-", "."))}


def shipped_entry() -> str | None:
    """`toy-model-<key>` of the model that ships with xstilts (None: none ships, or it is unreadable)."""
    try:
        return json.loads((SHIPPED / SHIPPED_KEY).read_text())["entry"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def toy_entry(data_dir: Path, cache_dir: Path, cfg, seed: int = 0):
    """The cache entry (trainables.cache.Entry) of the toy model for this data, settings and seed."""
    from trainables.cache import Cache, file_digest

    corpus = Path(data_dir) / "mlm" / "corpus.txt"
    tok_dir = Path(data_dir) / "tokenizer"
    if not corpus.exists() or not (tok_dir / "tokenizer.json").exists():
        raise XstiltsError(f"{data_dir} has no toy corpus/tokenizer — run `xstilts data toy --out {data_dir}`")
    if _mask_id_of(tok_dir / "tokenizer.json") != "last":
        raise XstiltsError(f"{data_dir} was written by an older xstilts (its toy tokenizer keeps <mask> at id 4, not "
                           f"last as XLM-R does) — regenerate it with `xstilts data toy --out {data_dir}`")
    parallel = Path(data_dir) / "mlm" / "parallel.tsv"
    if cfg.align_every and not parallel.exists():
        raise XstiltsError(f"{data_dir} has no mlm/parallel.tsv for model.align_every — regenerate it with "
                           f"`xstilts data toy --out {data_dir}` (or set model.align_every=0)")
    payload = {"corpus": file_digest(corpus), "tokenizer": file_digest(tok_dir / "tokenizer.json"),
               "model": [cfg.hidden_size, cfg.layers, cfg.heads, cfg.mlm_steps, cfg.mlm_lr], "seed": seed,
               "align": [cfg.align_every, cfg.retrieval_layer, file_digest(parallel)] if cfg.align_every else None,
               "threads": TOY_THREADS, "code": code_version("toy-model")}
    return Cache(cache_dir).entry("toy-model", payload)


def _mask_id_of(tokenizer_json: Path) -> str:
    """Where a Unigram tokenizer.json keeps <mask>: "last" (XLM-R's layout) or its id."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    at = next((i for i, (piece, _) in enumerate(vocab) if piece == "<mask>"), None)
    return "last" if at == len(vocab) - 1 else str(at)


def _build_toy(corpus: Path, tok_dir: Path, parallel: Path, cfg, seed: int, log, out: Path) -> dict:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    tokenizer = load_tokenizer(tok_dir)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
                              num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden_size,
                              max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = XLMRobertaForMaskedLM(config)
    lines = [l for l in corpus.read_text(encoding="utf-8").splitlines() if l.strip()]
    pairs = []
    if cfg.align_every:
        rows = parallel.read_text(encoding="utf-8").splitlines()
        pairs = [tuple(r.split("\t")[1:3]) for r in rows if r.strip()]
    log(f"phase 1 (toy): MLM pretraining {cfg.layers}x{cfg.hidden_size} on {len(lines)} sentences, {cfg.mlm_steps} steps"
        + (f", a translation-ranking step every {cfg.align_every} ({len(pairs)} pairs)" if pairs else ""))
    with torch_threads(TOY_THREADS):
        mlm_pretrain(model, tokenizer, lines, steps=cfg.mlm_steps, lr=cfg.mlm_lr, device=torch.device("cpu"),
                     seed=seed, pairs=pairs, align_every=cfg.align_every,
                     align_layer=retrieval_layer_index(cfg.retrieval_layer, cfg.layers))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"corpus": str(corpus)}


def mlm_pretrain(model, tokenizer, lines: Sequence[str], steps: int, lr: float, device: torch.device, seed: int = 0,
                 batch_size: int = 64, pairs: Sequence[tuple[str, str]] = (), align_every: int = 0,
                 align_layer: int = 1, align_batch: int = 32) -> dict:
    """Masked-LM training of a `*ForMaskedLM` model (phase 1 of the toy world). With `pairs` (a sentence and its
    English translation) and `align_every` > 0, every `align_every`-th step also takes a translation-ranking loss
    (in-batch softmax over cosine similarities / 0.05, both directions) on the mean-pooled `align_layer` states
    of `align_batch` pairs: what retrieval embeds, so the toy's languages are aligned there to a degree."""
    model.to(device)
    batches = mlm_batches(tokenizer, lines, batch_size, seed)
    rng = torch.Generator().manual_seed(seed + 1)
    count = {"step": 0}

    def pooled(sentences: list[str]) -> torch.Tensor:
        enc = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
        states = model.base_model(**enc, output_hidden_states=True).hidden_states[align_layer]
        return torch.nn.functional.normalize(mean_pool(states, enc["attention_mask"]), dim=-1)

    def loss_of(b):
        loss = model(**{k: v.to(device) for k, v in b.items()}).loss
        count["step"] += 1
        if pairs and align_every and count["step"] % align_every == 0:
            pick = torch.randperm(len(pairs), generator=rng)[:align_batch].tolist()
            sim = pooled([pairs[i][0] for i in pick]) @ pooled([pairs[i][1] for i in pick]).T / 0.05
            gold = torch.arange(len(pick), device=sim.device)
            loss = loss + 0.5 * (torch.nn.functional.cross_entropy(sim, gold)
                                 + torch.nn.functional.cross_entropy(sim.T, gold))
        return loss

    return fit(model, lambda: next(batches), loss_of, steps, lr, device, progress=True, desc="phase 1 mlm")


def ship(out: Path = SHIPPED, log=print) -> Path:
    """Build the toy preset's model from scratch (toy data seed 0, `configs/pipeline/toy.yaml`'s model settings)
    and write it to `out` with the key of its recipe: the model that ships with xstilts."""
    from trainables.config import load_config
    from trainables.toy import write_toy

    cfg = load_config("toy").model
    with tempfile.TemporaryDirectory(prefix="xstilts-ship-") as work:
        data = write_toy(Path(work) / "toy_data", seed=0)
        entry = toy_entry(data, Path(work) / "cache", cfg)
        path, _, _ = entry.get_or_build(lambda tmp: _build_toy(data / "mlm" / "corpus.txt", data / "tokenizer",
                                                                data / "mlm" / "parallel.tsv", cfg, 0, log, tmp))
        staged = out.with_name(out.name + ".tmp")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        files = _listing(path)
        for name in files:
            shutil.copyfile(path / name, staged / name)
        (staged / SHIPPED_KEY).write_text(json.dumps({"entry": entry.path.name, "files": files}, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    log(f"wrote {out} ({entry.path.name})")
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["ship"]:
        sys.exit("usage: python -m trainables.toymodel ship")
    ship()
