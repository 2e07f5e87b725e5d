"""Encoders and heads: any Hugging Face encoder plus one small head per task kind.

`MultiTaskModel` = a shared encoder (`AutoModel`) + a `ModuleDict` of heads keyed by task name. Phase 2
saves only the encoder (`save_pretrained`), so every phase-3 head starts fresh, as jiant's
`--model_load_mode partial` does in effect. Retrieval embeds with a mean-pooled hidden layer chosen as a
fraction of depth (XLM-R Large: layer 14 of 24).

The heads live in `trainables/heads.py`, the toy model's builder in `trainables/toymodel.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainables.errors import XstiltsError


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict()
        self.serves: dict[str, str] = {}  # target name -> the head that serves it (targets sharing a fine-tune)

    @property
    def hidden(self) -> int:
        return self.encoder.config.hidden_size

    def add_head(self, name: str, kind: str, n_labels: int = 0, serves: tuple[str, ...] = ()) -> None:
        """A fresh head `name`; also used for the names in `serves` (no module, no parameters of their own)."""
        from trainables.kinds import KINDS  # the per-kind table builds the head

        dropout = getattr(self.encoder.config, "hidden_dropout_prob", 0.1)  # the encoder's (RoBERTa's heads do so)
        self.heads[name] = KINDS[kind].head(self.hidden, n_labels, dropout)
        self.serves.update({other: name for other in serves})

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
        logits = self.heads[self.serves.get(name, name)](states)
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
