"""Behaviour by task kind, in one table: how a kind is featurised, which head it trains, its loss, and how
its outputs are decoded and scored. Adding a task of an existing kind touches only the task table
(`trainables.tasks`); adding a kind adds one row here.

  kind                  featurise                   head                      loss        evaluate
  classification        featurize_classification    <s> -> dense -> labels    label_loss  accuracy
  pair_classification   featurize_classification    <s> -> dense -> labels    label_loss  accuracy
  multiple_choice       featurize_multiple_choice   <s> -> dense -> 1/choice  label_loss  (phase 2 only)
  span_qa               featurize_span_qa           token -> (start, end)     span_loss   EM / F1
  tagging               featurize_tagging           token -> tags             token_loss  seqeval F1
  retrieval             featurize_sentences         (none: mean-pooled layer)  -          search / mining
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from trainables import data as D
from trainables import evaluate as E
from trainables import features as F
from trainables import train as T
from trainables.featcache import cached
from trainables.heads import ClassificationHead, TokenHead
from trainables.tasks import KINDS as KIND_NAMES
from trainables.tasks import Task


@dataclass(frozen=True)
class Kind:
    featurize: Callable  # (examples, tokenizer, max_length, labels=..., doc_stride=...) -> features
    head: Callable | None  # (hidden, n_labels, dropout) -> nn.Module; None: nothing is trained (retrieval)
    loss: Callable | None  # (logits, batch) -> loss
    evaluate: Callable | None  # (model, task, examples, tok, target_cfg, device, labels=, lang=, ...) -> {metric: v}
    labels: Callable[[Task, Sequence[dict]], tuple[str, ...] | None] = lambda task, train: task.labels
    qa: bool = False  # QA-sized batches and lengths in phase 3 (qa_batch_size, qa_max_length)


KINDS: dict[str, Kind] = {
    "classification": Kind(F.featurize_classification, lambda h, n, d: ClassificationHead(h, n, d), T.label_loss,
                           E.evaluate_classification),
    "pair_classification": Kind(F.featurize_classification, lambda h, n, d: ClassificationHead(h, n, d), T.label_loss,
                                E.evaluate_classification),
    "multiple_choice": Kind(F.featurize_multiple_choice, lambda h, n, d: ClassificationHead(h, 1, d), T.label_loss,
                            None),  # intermediate tasks only: never evaluated zero-shot
    "span_qa": Kind(F.featurize_span_qa, lambda h, n, d: TokenHead(h, 2, d), T.span_loss, E.evaluate_span_qa, qa=True),
    "tagging": Kind(F.featurize_tagging, lambda h, n, d: TokenHead(h, n, d), T.token_loss, E.evaluate_tagging,
                    labels=D.tag_labels),
    "retrieval": Kind(F.featurize_sentences, None, None, E.evaluate_retrieval),
}
assert set(KINDS) == set(KIND_NAMES), "the kind table and the task table's kinds must agree"


def featurize(kind: str, examples: Sequence[dict], tokenizer, max_length: int, **kwargs):
    """The kind's features of `examples` (from the features cache when they have a key)."""
    return cached(KINDS[kind].featurize, examples, tokenizer, max_length, **kwargs)


def labels_of(task: Task, train_examples: Sequence[dict]) -> tuple[str, ...] | None:
    """The label names a task's head predicts (tagging tasks without a fixed set derive them from data)."""
    return KINDS[task.kind].labels(task, train_examples)
