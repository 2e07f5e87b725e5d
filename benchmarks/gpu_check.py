"""GPU check (run whenever a session is lent a GPU; under 8 minutes): speed, memory model, sharing, mining.

  (a) tokens/s and model FLOPs utilisation (MFU) of XLM-R Large (random weights from its real config) training
      at bf16, sequence 256, global batch 32, with xstilts' loop (`trainables.train.fit`) — against HF Trainer
      on the same batches (bf16, fused AdamW). Goal: >= 40 % MFU on an H100.
  (b) `xstilts plan`'s estimate (weights + grads + optimizer + buffers + activations, without the CUDA context)
      against torch.cuda.max_memory_allocated of that run. Goal: within 15 %.
  (c) two toy pipelines sharing the GPU at once (as a search's `resources={gpu: 0.5}` trials would), against
      one alone; when Ray, Optuna and MLflow are importable, the 2-trial toy search itself.
  (d) BUCC bitext mining at the real de-en test size (~414k x ~400k sentences, 1,024 dimensions) on the GPU.
Prints one JSON object per part and a summary; `--json FILE` writes them all.

Run:  python benchmarks/gpu_check.py [--json out.json] [--skip-c] [--smoke]   (--smoke: tiny sizes, CPU ok)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_flops() -> float:
    """Dense bf16 FLOP/s of this GPU (the price model's table, search/price.py); NaN for others."""
    from search.price import GPU_PEAK

    name = torch.cuda.get_device_name().lower() if torch.cuda.is_available() else "cpu"
    return next((v for k, v in GPU_PEAK.items() if k in name), float("nan"))


def model_flops_per_token(cfg, seq: int) -> float:
    """Training FLOPs per token of a transformers config (search/price.py's count, which `xstilts plan` uses)."""
    from search.price import flops_per_token

    return flops_per_token(cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, seq)


def batches(vocab: int, rows: int, seq: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, vocab, (rows, seq), generator=g),
             "attention_mask": torch.ones(rows, seq, dtype=torch.long),
             "labels": torch.randint(0, 3, (rows,), generator=g)} for _ in range(n)]


def part_a_b(rows: int, seq: int, warm: int, timed: int, smoke: bool, compile_model: bool = False,
             trainer_baseline: bool = True) -> dict:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from trainables.model import MultiTaskModel
    from trainables.plan import KNOWN_MODELS, Shape, estimate
    from trainables.train import fit

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(KNOWN_MODELS["xlm-roberta-large"][1])
    if smoke:
        kwargs.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=1000)
    cfg = XLMRobertaConfig(max_position_embeddings=514, type_vocab_size=1, **kwargs)
    data = batches(cfg.vocab_size, rows, seq, warm + timed)

    def ours() -> tuple[float, float]:
        torch.manual_seed(0)
        model = MultiTaskModel(XLMRobertaModel(cfg, add_pooling_layer=False))
        model.add_head("x", "pair_classification", 3)
        model.to(device)
        forward = torch.compile(model) if compile_model else model
        stream = iter(data)

        def draw():
            return {k: v.to(device, non_blocking=True) for k, v in next(stream).items()}

        def loss_of(b):
            return torch.nn.functional.cross_entropy(forward("x", b["input_ids"], b["attention_mask"]), b["labels"])

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        clock = {}

        def on_step(step):
            if step == warm:
                torch.cuda.synchronize() if device.type == "cuda" else None
                clock["t0"] = time.perf_counter()

        fit(model, draw, loss_of, warm + timed, 1e-5, device, on_step=on_step)
        torch.cuda.synchronize() if device.type == "cuda" else None
        elapsed = time.perf_counter() - clock["t0"]
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else float("nan")
        params = sum(p.numel() for p in model.parameters())
        del model
        torch.cuda.empty_cache() if device.type == "cuda" else None
        return timed * rows * seq / elapsed, peak, params

    def trainer() -> float:
        from transformers import Trainer, TrainingArguments, XLMRobertaForSequenceClassification

        torch.manual_seed(0)
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**{**cfg.to_dict(), "num_labels": 3}))
        rows_ = [{"input_ids": b["input_ids"][i].tolist(), "attention_mask": b["attention_mask"][i].tolist(),
                  "labels": int(b["labels"][i])} for b in data for i in range(rows)]
        stamps = []

        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                torch.cuda.synchronize() if device.type == "cuda" else None
                stamps.append(time.perf_counter())

        args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=rows,
                                 max_steps=warm + timed, learning_rate=1e-5, bf16=device.type == "cuda",
                                 optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
                                 report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 dataloader_num_workers=2, use_cpu=device.type != "cuda", seed=0)
        Trainer(model=model, args=args, train_dataset=rows_, callbacks=[Clock()]).train()
        del model
        torch.cuda.empty_cache() if device.type == "cuda" else None
        return timed * rows * seq / (stamps[-1] - stamps[warm - 1])

    ours_tps, peak, params = ours()
    try:
        hf_tps = trainer() if trainer_baseline else None
    except Exception as exc:  # accelerate missing, API drift: report it, keep the rest
        hf_tps = None
        print(f"HF Trainer baseline failed: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
    flops = model_flops_per_token(cfg, seq)
    shape = Shape(params, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, 0)
    parts = estimate(shape, 1, "none", device.type == "cuda", False, rows, seq, device=device.type)
    predicted = sum(v for k, v in parts.items() if k != "overhead")
    return {"a": {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "params": params,
                  "rows": rows, "seq": seq, "timed_steps": timed, "compiled": compile_model, "ours_tokens_per_s": ours_tps,
                  "trainer_tokens_per_s": hf_tps, "ratio_vs_trainer": ours_tps / hf_tps if hf_tps else None,
                  "mfu": ours_tps * flops / peak_flops(), "trainer_mfu": hf_tps * flops / peak_flops() if hf_tps else None},
            "b": {"plan_gb": predicted, "plan_breakdown_gb": parts, "max_memory_allocated_gb": peak / 1024 ** 3,
                  "error": predicted / (peak / 1024 ** 3) - 1 if peak == peak else None}}


def part_c(smoke: bool) -> dict:
    """Two toy pipelines at once on one GPU (two processes, as two `gpu: 0.5` trials), against one alone."""
    work = Path(tempfile.mkdtemp(prefix="gpucheck-"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    base = [sys.executable, "-m", "trainables", "run", str(ROOT / "configs/pipeline/toy.yaml"), f"data_dir={work}/toy",
            f"cache_dir={work}/cache", "tracking.enabled=false", "targets=[xnli,pawsx]",
            f"model.mlm_steps={100 if smoke else 600}", "intermediate.steps=100"]
    first = subprocess.run(base + ["--json", f"{work}/warm.json"], env=env, capture_output=True, text=True, cwd=work)
    if first.returncode:
        return {"error": first.stderr[-800:]}
    out, t0 = {}, time.perf_counter()
    alone = subprocess.run(base + ["seed=1", "--json", f"{work}/alone.json"], env=env, capture_output=True, text=True, cwd=work)
    out["one_pipeline_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [subprocess.Popen(base + [f"seed={s}", "--json", f"{work}/shared{s}.json"], env=env, cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in (2, 3)]
    errs = [p.communicate()[1] for p in procs]
    out["two_pipelines_at_once_s"] = time.perf_counter() - t0
    out["returncodes"] = [alone.returncode] + [p.returncode for p in procs]
    out["throughput_gain"] = 2 * out["one_pipeline_s"] / out["two_pipelines_at_once_s"]
    out["xnli"] = [json.loads(Path(f"{work}/{n}.json").read_text())["targets"]["xnli"]["score"]
                   for n in ("alone", "shared2", "shared3") if Path(f"{work}/{n}.json").exists()]
    if any(out["returncodes"]):
        out["errors"] = [e[-400:] for e in errs if e]
    return out


def part_d(smoke: bool) -> dict:
    from trainables import retrieval

    n, m, dim = (20_000, 20_000, 64) if smoke else (413_869, 399_337, 1024)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(m, dim, generator=g)
    x = torch.randn(n, dim, generator=g)
    pairs = min(n, m) // 3
    x[:pairs] = y[:pairs] + 0.8 * torch.randn(pairs, dim, generator=g)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    cands = retrieval.bucc_candidates(x.numpy(), y.numpy(), k=4, device=device)
    mined = time.perf_counter() - t0
    gold = [[i, i] for i in range(pairs)]
    f1 = retrieval.bucc_f1(cands, gold, retrieval.bucc_threshold(cands, gold))
    return {"sentences": [n, m], "dim": dim, "device": device, "mine_s": mined, "f1": f1,
            "gpu_peak_gb": torch.cuda.max_memory_allocated() / 1024 ** 3 if device == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--skip-c", action="store_true")
    ap.add_argument("--probe", action="store_true", help="(a) only: compiled and batch 64 variants, no baseline")
    a = ap.parse_args()
    if a.probe:
        for rows, comp in ((32, True), (64, False), (64, True)):
            r = part_a_b(rows, 256, 10, 30, a.smoke, compile_model=comp, trainer_baseline=False)
            print(json.dumps({"rows": rows, "compiled": comp, "tokens_per_s": r["a"]["ours_tokens_per_s"],
                              "mfu": r["a"]["mfu"], "peak_gb": r["b"]["max_memory_allocated_gb"],
                              "plan_gb": r["b"]["plan_gb"]}), flush=True)
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    results, t0 = {}, time.perf_counter()
    rows, seq = (4, 32) if a.smoke else (32, 256)
    parts = [("ab", lambda: part_a_b(rows, seq, warm=3 if a.smoke else 10, timed=5 if a.smoke else 40, smoke=a.smoke)),
             ("d", lambda: {"d": part_d(a.smoke)})] + ([] if a.skip_c else [("c", lambda: {"c": part_c(a.smoke)})])
    for name, run in parts:  # one part failing keeps the others' figures
        try:
            results.update(run())
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        print(json.dumps({k: results[k] for k in results if k in name or k == name}, default=str), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    results["total_s"] = time.perf_counter() - t0
    print(f"total {results['total_s']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
