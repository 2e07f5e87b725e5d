"""Benchmark: BUCC bitext mining at real sizes — time and peak memory of `trainables.retrieval`.

Mines two random corpora of N sentences (dimension D; a third of the sentences are noisy translations of each
other) with the official algorithm (k = 4 neighbours each way, ratio margin, "max" retrieval), tunes the
threshold and scores F1, and prints wall time and peak RSS. The goal on a 2-core CPU: N = 50,000, D = 128
within 2.5 GB peak RSS. From the measured run it estimates BUCC de-en test (~414k x ~400k sentences, XLM-R
Large's 1,024 dimensions): the similarity work grows as N x M x D, memory as (N + M) x D. That is the size xstilts
mines: its BUCC test set is XTREME's, the whole BUCC 2018 training corpora (9,580 gold pairs among them for de-en;
a test corpus without distractors is refused), read from the official files or mteb/BUCC's copy.

Run:  python benchmarks/bucc_mining.py [--n 50000] [--dim 128] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

REAL = {"n": 413_869, "m": 399_337, "dim": 1024}  # BUCC 2018 de-en training corpora (XTREME's test), XLM-R Large


def corpora(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, dim), dtype=np.float32)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    pairs = n // 3
    perm = rng.permutation(n)[:pairs]
    x[:pairs] = y[perm] + 0.6 * rng.standard_normal((pairs, dim), dtype=np.float32)
    return x, y, [[i, int(j)] for i, j in enumerate(perm)]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from trainables import retrieval

    x, y, gold = corpora(a.n, a.dim)
    before = peak_rss_gb()
    start = time.perf_counter()
    candidates = retrieval.bucc_candidates(x, y, k=4, device=a.device)
    mined = time.perf_counter() - start
    threshold = retrieval.bucc_threshold(candidates, gold)
    f1 = retrieval.bucc_f1(candidates, gold, threshold)
    total = time.perf_counter() - start
    scale = REAL["n"] * REAL["m"] * REAL["dim"] / (a.n * a.n * a.dim)
    out = {"n": a.n, "dim": a.dim, "device": a.device, "mine_s": mined, "total_s": total, "f1": f1,
           "peak_rss_gb": peak_rss_gb(), "rss_before_gb": before,
           "estimate_real": {"sentences": [REAL["n"], REAL["m"]], "dim": REAL["dim"], "mine_s": mined * scale,
                             "embeddings_gb": (REAL["n"] + REAL["m"]) * REAL["dim"] * 4 / 1024 ** 3}}
    print(f"BUCC mining {a.n:,} x {a.n:,} sentences, dim {a.dim}, {a.device}: mining {mined:.1f} s, total "
          f"{total:.1f} s, F1 {f1:.1f}, peak RSS {out['peak_rss_gb']:.2f} GB (goal <= 2.5 GB at 50k x 128 on CPU)")
    print(f"estimate for de-en test ({REAL['n']:,} x {REAL['m']:,}, dim {REAL['dim']}) on this device: "
          f"{out['estimate_real']['mine_s'] / 60:.0f} min of mining (x{scale:.0f} the work), embeddings "
          f"{out['estimate_real']['embeddings_gb']:.1f} GB in memory")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
