"""Encoders and heads: any Hugging Face encoder plus one small head per task kind.

`MultiTaskModel` = a shared encoder (`AutoModel`) + a `ModuleDict` of heads keyed by task name. Phase 2
saves only the encoder (`save_pretrained`), so every phase-3 head starts fresh, as jiant's
`--model_load_mode partial` does in effect. Retrieval embeds with a mean-pooled hidden layer chosen as a
fraction of depth (XLM-R Large: layer 14 of 24).

The toy model: a small XLM-R config on the toy tokenizer, pretrained by a short multilingual MLM on the
toy corpus (phase 1 of the toy world) with, every `model.align_every` steps, a translation-ranking step on
the toy's parallel sentences (so retrieval has something to find), on a fixed number of CPU threads (the
same model on every machine), cached under `cache_dir/toy-model-<hash>` and built once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from trainables.errors import XstiltsError


class ClassificationHead(nn.Module):
    """<s> token -> dense -> tanh -> linear (RoBERTa's classification head)."""

    def __init__(self, hidden: int, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense, self.out, self.drop = nn.Linear(hidden, hidden), nn.Linear(hidden, n_labels), nn.Dropout(dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.dense(self.drop(states[:, 0])))))


class TokenHead(nn.Module):
    """A linear layer per token: tagging (n_labels) or span QA (2: start, end)."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.out, self.drop = nn.Linear(hidden, n_out), nn.Dropout(dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(states))


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict()

    @property
    def hidden(self) -> int:
        return self.encoder.config.hidden_size

    def add_head(self, name: str, kind: str, n_labels: int = 0) -> None:
        from trainables.kinds import KINDS  # the per-kind table builds the head

        dropout = getattr(self.encoder.config, "hidden_dropout_prob", 0.1)  # the encoder's (RoBERTa's heads do so)
        self.heads[name] = KINDS[kind].head(self.hidden, n_labels, dropout)

    def forward(self, name: str | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                layer_fraction: float | None = None) -> torch.Tensor:
        """Logits of head `name`; multiple-choice inputs are [batch, choices, len] -> [batch, choices].
        `name=None`: sentence embeddings instead (see `embed`); one entry point, so that wrapped models (DDP,
        FSDP2) run their hooks for both."""
        if name is None:
            return self._embed(input_ids, attention_mask, layer_fraction)
        choices = input_ids.dim() == 3
        if choices:
            b, c, n = input_ids.shape
            input_ids, attention_mask = input_ids.view(b * c, n), attention_mask.view(b * c, n)
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.heads[name](states)
        return logits.view(b, c) if choices else logits

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer_fraction: float) -> torch.Tensor:
        """Mean over non-pad tokens (including <s> and </s>) of hidden layer round(fraction * depth)."""
        return self(None, input_ids, attention_mask, layer_fraction)

    def _embed(self, input_ids, attention_mask, layer_fraction: float) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = out.hidden_states[retrieval_layer_index(layer_fraction, self.encoder.config.num_hidden_layers)]
        return mean_pool(states, attention_mask)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over non-pad tokens (including <s> and </s>) of hidden states (batch, length, hidden)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def retrieval_layer_index(fraction: float, depth: int) -> int:
    """The hidden layer retrieval embeds: round(fraction x depth), at least 1 (index 0 is the embedding layer)."""
    return max(1, round(fraction * depth))


def load_encoder(path: str | Path, revision: str | None = None) -> nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar per target
    hf_logging.set_verbosity_error()  # the MLM head left behind is expected, not worth a load report

    try:
        return AutoModel.from_pretrained(str(path), revision=revision, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler argument
        return AutoModel.from_pretrained(str(path), revision=revision)
    except OSError as exc:
        raise XstiltsError(f"cannot load encoder {path}: {str(exc).splitlines()[0][:160]} — give a Hub id, a "
                           f"save_pretrained folder, or model.name=toy") from None


def load_tokenizer(path: str | Path, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), revision=revision)


# ---------------------------------------------------------------- the toy model (phase 1 of the toy world)

TOY_VERSION = "2"
# The toy model is built with this many CPU threads on every machine: a float sum's order depends on how a
# kernel splits it over threads, and one rounding difference in phase 1 changes every score downstream.
TOY_THREADS = 2


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
    seed. Always built on the CPU (it is tiny), so every trial and machine shares one entry."""
    from trainables.cache import Cache, file_digest

    corpus = Path(data_dir) / "mlm" / "corpus.txt"
    tok_dir = Path(data_dir) / "tokenizer"
    if not corpus.exists() or not (tok_dir / "tokenizer.json").exists():
        raise XstiltsError(f"{data_dir} has no toy corpus/tokenizer — run `xstilts data toy --out {data_dir}`")
    parallel = Path(data_dir) / "mlm" / "parallel.tsv"
    if cfg.align_every and not parallel.exists():
        raise XstiltsError(f"{data_dir} has no mlm/parallel.tsv for model.align_every — regenerate it with "
                           f"`xstilts data toy --out {data_dir}` (or set model.align_every=0)")
    payload = {"corpus": file_digest(corpus), "tokenizer": file_digest(tok_dir / "tokenizer.json"),
               "model": [cfg.hidden_size, cfg.layers, cfg.heads, cfg.mlm_steps, cfg.mlm_lr], "seed": seed,
               "align": [cfg.align_every, cfg.retrieval_layer, file_digest(parallel)] if cfg.align_every else None,
               "threads": TOY_THREADS, "version": TOY_VERSION}
    entry = Cache(cache_dir).entry("toy-model", payload)
    path, _, _ = entry.get_or_build(lambda tmp: _build_toy(corpus, tok_dir, parallel, cfg, seed, log, tmp))
    return path


def _build_toy(corpus: Path, tok_dir: Path, parallel: Path, cfg, seed: int, log, out: Path) -> dict:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from trainables.train import mlm_pretrain

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
