"""Transferability without training: how well a frozen encoder's features of a target's English training data
predict its labels.

LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021): for
each label (one-vs-rest), the log marginal evidence of a Bayesian linear regression of the label on the features,
maximised over the prior precision alpha and noise precision beta by MacKay's fixed-point updates, averaged over
labels and divided by the number of examples. Higher is better; only differences between encoders on the same
data mean anything. Written from the paper's equations (one eigendecomposition of F^T F, then O(D) per update).

Used by `benchmarks/search_efficiency.py` to measure whether the estimate ranks phase-2 encoders as their
fine-tuned target scores do (the Spearman correlation over the toy grid); it is not a search rung (docs/searches.md).
Classification targets only (sentence-level labels); tagging, QA and retrieval return None.

Run:  python -c "from trainables.transfer import logme; import numpy as np; print(logme(np.eye(4), np.arange(4)))"
"""

from __future__ import annotations

import math

import numpy as np
import torch


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 100, tol: float = 1e-3) -> float:
    """Mean over classes of the maximised log evidence per example; features (N, D), labels (N,) ints."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    eig, vecs = np.linalg.eigh(f.T @ f)
    eig = np.clip(eig, 0.0, None)
    evidences = []
    for c in np.unique(labels):
        y = (np.asarray(labels) == c).astype(np.float64)
        proj = vecs.T @ (f.T @ y)  # F^T y in the eigenbasis
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            m_eig = beta * proj / (alpha + beta * eig)  # posterior mean, eigenbasis
            gamma = float(np.sum(beta * eig / (alpha + beta * eig)))
            m = vecs @ m_eig
            m2 = float(m @ m)
            residual = float(np.sum((y - f @ m) ** 2))
            new_alpha = gamma / max(m2, 1e-12)
            new_beta = (n - gamma) / max(residual, 1e-12)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m_eig = beta * proj / (alpha + beta * eig)
        m = vecs @ m_eig
        residual = float(np.sum((y - f @ m) ** 2))
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * float(np.sum(np.log(alpha + beta * eig)))
                    - beta / 2 * residual - alpha / 2 * float(m @ m) - n / 2 * math.log(2 * math.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def estimate(encoder_dir, tok, task, examples, cfg, device: torch.device | None = None) -> float | None:
    """LogME of the frozen encoder's mean-pooled last-layer features of `examples` (a target's English training
    examples, capped at target.max_train_examples as fine-tuning would use them); None for non-classification."""
    from trainables.featcache import take
    from trainables.kinds import featurize, labels_of
    from trainables.model import MultiTaskModel, load_encoder
    from trainables.train import embed

    if task.kind not in ("classification", "pair_classification"):
        return None
    device = device or torch.device("cpu")
    examples = take(examples, cfg.target.max_train_examples)
    labels = labels_of(task, examples)
    feats = featurize(task.kind, examples, tok, cfg.target.max_length, labels=tuple(labels or ()))
    model = MultiTaskModel(load_encoder(encoder_dir, cfg.model.revision if str(encoder_dir) == cfg.model.name else None))
    vectors = embed(model.to(device), feats, cfg.target.batch_size, tok.pad_token_id, device, layer_fraction=1.0)
    return logme(vectors, np.array([f["labels"] for f in feats]))
