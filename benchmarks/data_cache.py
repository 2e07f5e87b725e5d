"""Benchmark: tokenising real-size data once vs reading the cached features (`trainables.featcache`).

Synthetic data at real sizes — toy-world NLI pairs as many as MNLI's training set (392,702) and toy SQuAD
questions as many as SQuAD v1.1's (87,599) — tokenised by an XLM-R-style Unigram tokenizer with XLM-R's
250,002 pieces. Prints and (--json) writes
  {"examples", "first_s" (tokenise + store), "cached_s" (open the entries and read every feature's tokens
   once), "ratio", "peak_rss_gb" (what reading adds to the reader's peak resident memory, measured with
   /proc's VmHWM reset before reading), "disk_gb", "rss_over_disk"}.
Goals: reading costs <= 5 % of tokenising; reading peaks below 2 x the features' size on disk.

Run:  python benchmarks/data_cache.py [--json out.json] [--scale 1.0]   (--scale 0.05 for a quick look)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MNLI, SQUAD, PIECES = 392_702, 87_599, 250_002


def tokenizer(out: Path):
    """An XLM-R-style Unigram tokenizer of XLM-R's size: the toy words plus synthetic pieces."""
    from transformers import XLMRobertaTokenizer

    from trainables.toy_world import World, build_lexicons

    words = sorted({w for lex in build_lexicons(0).values() for w in lex.values()})
    rng = random.Random(0)
    extra = set()
    while len(extra) < PIECES - 5 - len(words) - 64:
        extra.add("".join(rng.choice("bdfgklmnprstvzaeiou") for _ in range(rng.randint(2, 7))))
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # XLM-R's layout: <mask> last
    vocab += [(f"\u2581{w}", -5.0 - i * 1e-6) for i, w in enumerate(words)]
    vocab += [(p, -12.0 - i * 1e-7) for i, p in enumerate(sorted(extra))]
    vocab += [(c, -20.0) for c in "abcdefghijklmnopqrstuvwxyz.?\u2581"[:64]]
    vocab += [("<mask>", 0.0)]
    XLMRobertaTokenizer(vocab=vocab).save_pretrained(str(out))
    del World
    return out


def examples(scale: float):
    from trainables.featcache import Examples
    from trainables.toy import nli_row, qa_row
    from trainables.toy_world import World

    w, rng = World(0), random.Random(1)
    nli = Examples(({"text_a": r["premise"], "text_b": r["hypothesis"], "label": r["label"]}
                    for r in (nli_row(w, rng, "en") for _ in range(int(MNLI * scale)))), {"bench": "mnli", "scale": scale})
    squad = Examples((qa_row(w, rng, "en", f"q{i}") for i in range(int(SQUAD * scale))), {"bench": "squad", "scale": scale})
    return nli, squad


READ = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from trainables import featcache
from trainables.featcache import Examples, cached
from trainables.features import featurize_classification, featurize_span_qa
from trainables.model import load_tokenizer
tok = load_tokenizer(sys.argv[3])
scale = float(sys.argv[4])
featcache.use(sys.argv[2])
from trainables.sysmetrics import reset_peak, status_kb
hwm = lambda: status_kb("VmHWM")  # peak resident memory since the last reset (kB)
reset_peak()  # measure the reading alone
base = status_kb("VmRSS")
start = time.perf_counter()
sets = [cached(featurize_classification, Examples([], {"bench": "mnli", "scale": scale}), tok, 256),
        cached(featurize_span_qa, Examples([], {"bench": "squad", "scale": scale}), tok, 384, doc_stride=128)]
tokens = sum(int(s.lengths().sum()) for s in sets)
for s in sets:  # read every feature's tokens once, as an epoch would
    for i in range(len(s)):
        tokens -= len(s[i]["input_ids"])
elapsed = time.perf_counter() - start
print(json.dumps({"cached_s": elapsed, "features": sum(len(s) for s in sets), "check": tokens,
                  "process_rss_gb": hwm() / 1024 ** 2, "rss_growth_gb": (hwm() - base) / 1024 ** 2}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    from trainables import featcache
    from trainables.featcache import cached
    from trainables.features import featurize_classification, featurize_span_qa
    from trainables.model import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="xstilts-datacache-"))
    tok_dir = tokenizer(work / "tokenizer")
    tok = load_tokenizer(tok_dir)
    nli, squad = examples(a.scale)
    featcache.use(work / "cache")
    start = time.perf_counter()
    cached(featurize_classification, nli, tok, 256)
    cached(featurize_span_qa, squad, tok, 384, doc_stride=128)
    first = time.perf_counter() - start
    read = subprocess.run([sys.executable, "-c", READ, str(ROOT), str(work / "cache"), str(tok_dir), str(a.scale)],
                          capture_output=True, text=True)
    if read.returncode:
        raise SystemExit(read.stderr[-2000:])
    r = json.loads(read.stdout.strip().splitlines()[-1])
    disk = sum(p.stat().st_size for p in (work / "cache").rglob("*") if p.is_file()) / 1024 ** 3
    out = {"examples": len(nli) + len(squad), "features": r["features"], "first_s": first, "cached_s": r["cached_s"],
           "ratio": r["cached_s"] / first, "peak_rss_gb": r["rss_growth_gb"], "process_rss_gb": r["process_rss_gb"],
           "disk_gb": disk, "rss_over_disk": r["rss_growth_gb"] / disk if disk else math.nan,
           "tokenizer_pieces": len(tok), "tokens_check": r["check"]}
    print(f"{out['examples']:,} examples ({out['features']:,} features, {disk:.2f} GB on disk): tokenise + store "
          f"{first:.1f} s; read back {out['cached_s']:.2f} s = {out['ratio']:.1%} (goal <= 5 %); reading adds "
          f"{out['peak_rss_gb']:.3f} GB to the peak RSS = {out['rss_over_disk']:.2f} x disk (goal < 2; the process "
          f"with its tokenizer: {out['process_rss_gb']:.2f} GB)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
