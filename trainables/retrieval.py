"""Retrieval metrics at XTREME's real sizes: Tatoeba similarity search and BUCC 2018 bitext mining.

Both follow google-research/xtreme `third_party/utils_retrieve.py` (commit 838c13b), which jiant copies:
  Tatoeba  the non-English sentences are indexed and every English sentence is a query (`similarity_search`:
           `idx.add(x); idx.search(y, 1)` with y = English); cosine on L2-normalised vectors, top-1 accuracy.
  BUCC     `mine_bitext(mode="mine", retrieval="max", margin="ratio", neighborhood=4, dist="cosine")`:
           k = 4 nearest neighbours each way; a candidate's score is its cosine divided by the mean of the two
           sides' mean top-k similarities; each sentence's best-scoring candidate, forward and backward,
           merged and taken best first, greedily one-to-one. Duplicate sentences are mined once
           (`text_load_unify`) and a sentence text that occurs more than once is dropped when candidates are
           mapped back to sentence ids (`read_sent2id`). The F1-optimal threshold (`bucc_optimize`: the midpoint
           after the best-F1 candidate, F1 against the *full* gold set) is tuned on the dev (sample) corpora
           and applied to test (`bucc_extract`: score >= threshold), as LASER's BUCC recipe does.

Nearest neighbours are computed in blocks with torch (on the trial's device), so memory is
O(block x block), never the N x M similarity matrix: BUCC de-en test is ~400k x 400k sentences.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from trainables.progress import bar as progress_bar

QUERY_BLOCK, BASE_BLOCK = 2048, 16384  # 2048 x 16384 float32 similarities = 128 MB per block


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(queries: np.ndarray, base: np.ndarray, k: int, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of each query over `base`: (similarities [n, k] descending, indices [n, k])."""
    k = min(k, len(base))
    q_all, b_all = torch.from_numpy(np.ascontiguousarray(queries)), torch.from_numpy(np.ascontiguousarray(base))
    if torch.device(device).type == "cuda":  # the base fits a GPU (BUCC de-en at 1,024 dims: 1.6 GB): move it once
        b_all = b_all.to(device)
    sims = np.empty((len(queries), k), dtype=np.float32)
    inds = np.empty((len(queries), k), dtype=np.int64)
    with progress_bar(len(queries), f"nearest {k} of {len(base)}", unit="query") as bar:
        for qs in range(0, len(queries), QUERY_BLOCK):
            q = q_all[qs:qs + QUERY_BLOCK].to(device)
            best_s = best_i = None
            for bs in range(0, len(base), BASE_BLOCK):
                s = q @ b_all[bs:bs + BASE_BLOCK].to(device).T
                top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
                top_i = top_i + bs
                if best_s is not None:  # merge with the best of earlier blocks
                    top_s, order = torch.cat([best_s, top_s], 1).topk(k, dim=1)
                    top_i = torch.cat([best_i, top_i], 1).gather(1, order)
                best_s, best_i = top_s, top_i
            sims[qs:qs + len(q)], inds[qs:qs + len(q)] = best_s.cpu().numpy(), best_i.cpu().numpy()
            bar.update(len(q))
    return sims, inds


def tatoeba_predictions(source_emb: np.ndarray, target_emb: np.ndarray, gold: Sequence[Sequence[int]] | None = None,
                        device="cpu") -> list[int]:
    """For each gold pair (i, j), the index of the source nearest to English query (target) j: xtreme's
    `similarity_search` output, one predicted index per query. Default gold: row i of each side."""
    gold = [(i, i) for i in range(len(target_emb))] if gold is None else [tuple(g) for g in gold]
    if not gold:
        return []
    queries = normalise(target_emb)[[j for _, j in gold]]
    _, nearest = knn(queries, normalise(source_emb), 1, device)
    return [int(i) for i in nearest[:, 0]]


def tatoeba_score(predicted: Sequence[int], gold: Sequence[Sequence[int]]) -> float:
    """Top-1 accuracy (percent) of predicted source indices against the gold pairs' sources."""
    if len(gold) == 0:
        return 0.0
    return 100.0 * float(np.mean(np.array(predicted) == np.array([g[0] for g in gold])))


def tatoeba_accuracy(source_emb: np.ndarray, target_emb: np.ndarray, gold: Sequence[Sequence[int]] | None = None,
                     device="cpu") -> float:
    """Top-1 accuracy of English queries (targets) over the indexed non-English sentences (sources): for each
    gold pair (i, j), the nearest source of target j must be i. Default gold: row i of each side."""
    gold = [(i, i) for i in range(len(target_emb))] if gold is None else [tuple(g) for g in gold]
    return tatoeba_score(tatoeba_predictions(source_emb, target_emb, gold, device), gold)


def bucc_candidates(source_emb: np.ndarray, target_emb: np.ndarray, k: int = 4, device="cpu") -> list[tuple[float, int, int]]:
    """Margin-based mining, "max" retrieval: [(score, source index, target index)], best first, one-to-one."""
    x, y = normalise(source_emb), normalise(target_emb)
    if len(x) == 0 or len(y) == 0:
        return []
    x2y_sim, x2y_ind = knn(x, y, k, device)
    y2x_sim, y2x_ind = knn(y, x, k, device)
    x2y_mean, y2x_mean = x2y_sim.mean(1), y2x_sim.mean(1)
    fwd = x2y_sim / ((x2y_mean[:, None] + y2x_mean[x2y_ind]) / 2)  # ratio margin on the k candidates only
    bwd = y2x_sim / ((y2x_mean[:, None] + x2y_mean[y2x_ind]) / 2)
    fwd_best = x2y_ind[np.arange(len(x)), fwd.argmax(1)]
    bwd_best = y2x_ind[np.arange(len(y)), bwd.argmax(1)]
    src = np.concatenate([np.arange(len(x)), bwd_best])
    trg = np.concatenate([fwd_best, np.arange(len(y))])
    scores = np.concatenate([fwd.max(1), bwd.max(1)]).astype(np.float64)
    seen_src, seen_trg, out = set(), set(), []
    for n in np.argsort(-scores, kind="stable"):
        i, j = int(src[n]), int(trg[n])
        if i not in seen_src and j not in seen_trg:
            seen_src.add(i), seen_trg.add(j)
            out.append((float(scores[n]), i, j))
    return out


def unique(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """(unique texts in first-occurrence order, for each unique text its one original index or -1 when the
    text occurs more than once: xtreme's `read_sent2id` drops repeated sentences)."""
    first: dict[str, int] = {}
    repeated: set[str] = set()
    for n, t in enumerate(texts):
        if t in first:
            repeated.add(t)
        else:
            first[t] = n
    return list(first), [-1 if t in repeated else n for t, n in first.items()]


def bucc_mine(source_emb: np.ndarray, target_emb: np.ndarray, source_ids: Sequence[int], target_ids: Sequence[int],
              k: int = 4, device="cpu") -> list[tuple[float, int, int]]:
    """Mine embeddings of *unique* sentences; map candidates back to sentence ids, dropping sentences whose
    text repeats (id -1)."""
    return [(s, source_ids[i], target_ids[j]) for s, i, j in bucc_candidates(source_emb, target_emb, k, device)
            if source_ids[i] >= 0 and target_ids[j] >= 0]


def bucc_threshold(candidates: Sequence[tuple[float, int, int]], gold: Sequence[Sequence[int]]) -> float:
    """`bucc_optimize`: walk candidates best first; F1 against the full gold set; the threshold is the midpoint
    between the first candidate of strictly best F1 and the next (its own score when it is the last)."""
    gold_set = {tuple(g) for g in gold}
    ranked = sorted(candidates, key=lambda c: -c[0])
    best_f1, threshold, correct = 0.0, 0.0, 0
    for n, (score, i, j) in enumerate(ranked, start=1):
        correct += (i, j) in gold_set
        if correct:
            precision, recall = correct / n, correct / len(gold_set)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (score + ranked[n][0]) / 2 if n < len(ranked) else score
    return threshold


def bucc_predicted(candidates: Sequence[tuple[float, int, int]], threshold: float) -> list[tuple[int, int]]:
    """The mined pairs (source id, target id) scoring >= threshold (`bucc_extract`), sorted."""
    return sorted({(i, j) for score, i, j in candidates if score >= threshold})


def bucc_f1(candidates: Sequence[tuple[float, int, int]], gold: Sequence[Sequence[int]], threshold: float) -> float:
    """F1 (percent) of the candidates scoring >= threshold against the full set of gold pairs."""
    return bucc_pairs_f1(bucc_predicted(candidates, threshold), gold)


def bucc_pairs_f1(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> float:
    """F1 (percent) of a set of predicted pairs against the full set of gold pairs (evaluate.py's `bucc_f1`)."""
    predicted = {tuple(p) for p in predicted}
    gold_set = {tuple(g) for g in gold}
    correct = len(predicted & gold_set)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(predicted), correct / len(gold_set)
    return 100.0 * 2 * precision * recall / (precision + recall)
