"""The small heads a task kind puts on the encoder (`trainables.kinds` names one per kind): RoBERTa's
classification head on <s>, and a linear layer per token (tagging, span QA's start and end)."""

from __future__ import annotations

import torch
from torch import nn


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
