"""`xstilts plan`: what a pipeline needs per GPU, whether it fits, and what to change when it does not.

Memory of full fine-tuning with AdamW, per GPU (P parameters, N workers):
  weights    4 P bytes (fp32 master copies; bf16 mixed precision computes in bf16 but keeps fp32 weights)
  grads      4 P                    optimizer  8 P (AdamW's two moments)     -> 16 P bytes before activations
  ddp        each GPU holds all of it, plus 4 P of gradient buckets; fsdp shards all of it: 16 P / N
  buffers    fsdp: the unsharded (bf16) parameters of the two largest units being gathered (current + prefetch);
             bf16 autocast without fsdp: its cached bf16 copies of the weights, 2 P
  activations per micro-batch (b rows of s tokens, h hidden, L layers): L x s b h x c bytes; on GPUs c = 34 in
             bf16 with fused attention (Korthikanti et al. 2022), 68 in fp32; on CPUs c = 190 in fp32, measured
             here with PyTorch's CPU allocator (5 shapes within 11 % of peak RSS measured alone; tests/test_plan.py
             checks two within 25 %). With activation checkpointing only each layer's input is kept (s b h x c / 17 per
             layer) plus one layer
  overhead   GPUs: CUDA context and allocator slack, 1.5 GB and 10 % of the rest; CPUs: the process's own
             resident memory before the model, which the caller measures
The global batch (`batch_size x grad_accum`, as one process would train) is split over the workers: each worker
runs micro-batches of batch_size / N rows. The XLM-R family's shapes are known without the Hub (`KNOWN_MODELS`).

  xstilts plan configs/pipeline/xlmr_large_mnli.yaml --gpus 1 --gpu-memory-gb 80
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

GB = 1024 ** 3
OVERHEAD_GB, SLACK = 1.5, 0.10

# config.json shapes of the XLM-R family (huggingface.co/<id>/config.json); parameter counts follow from them
KNOWN_MODELS = {
    "xlm-roberta-base": ("XLMRobertaConfig", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                                  num_attention_heads=12, intermediate_size=3072)),
    "xlm-roberta-large": ("XLMRobertaConfig", dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                                                   num_attention_heads=16, intermediate_size=4096)),
    "facebook/xlm-roberta-xl": ("XLMRobertaXLConfig", dict(vocab_size=250880, hidden_size=2560, num_hidden_layers=36,
                                                           num_attention_heads=32, intermediate_size=10240)),
    "facebook/xlm-roberta-xxl": ("XLMRobertaXLConfig", dict(vocab_size=250880, hidden_size=4096, num_hidden_layers=48,
                                                            num_attention_heads=32, intermediate_size=16384)),
}
ALIASES = {"FacebookAI/xlm-roberta-base": "xlm-roberta-base", "FacebookAI/xlm-roberta-large": "xlm-roberta-large"}


@dataclass(frozen=True)
class Shape:
    params: int
    hidden: int
    layers: int
    heads: int
    largest_unit: int  # parameters of the largest FSDP unit (the embeddings, or one layer)


def known_config(name: str):
    import transformers

    cls_name, kwargs = KNOWN_MODELS[ALIASES.get(name, name)]
    return getattr(transformers, cls_name)(max_position_embeddings=514, type_vocab_size=1, **kwargs)


@lru_cache(maxsize=16)
def shape_of(name: str, toy: tuple | None = None) -> Shape:
    """Exact parameter counts from the model class, built on the meta device (no weights, no download)."""
    import torch
    from transformers import AutoConfig, AutoModel, XLMRobertaConfig

    if toy is not None:
        vocab, hidden, layers, heads = toy
        config = XLMRobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=514)
    elif ALIASES.get(name, name) in KNOWN_MODELS:
        config = known_config(name)
    else:
        config = AutoConfig.from_pretrained(name)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    layer = sum(p.numel() for p in model.encoder.layer[0].parameters())
    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    return Shape(sum(p.numel() for p in model.parameters()), config.hidden_size, config.num_hidden_layers,
                 config.num_attention_heads, max(layer, embeddings))


def _phases(cfg) -> dict[str, tuple[int, int]]:
    """(global micro-batch rows, sequence length) of each training phase the config runs."""
    t, i = cfg.target, cfg.intermediate
    out = {}
    if i.mixture:
        out["phase2"] = (i.batch_size, i.max_length)
    if any(cfg_target_trains(n) for n in cfg.targets):
        out["phase3"] = (t.batch_size, t.max_length)
    if any(cfg_target_trains(n, qa=True) for n in cfg.targets):
        out["phase3_qa"] = (t.qa_batch_size, t.qa_max_length)
    return out


def cfg_target_trains(name: str, qa: bool = False) -> bool:
    from trainables.tasks import TASKS

    task = TASKS[name]
    return task.kind != "retrieval" and (task.kind == "span_qa") == qa


BYTES_PER_ACTIVATION = {("cuda", True): 34, ("cuda", False): 68, ("cpu", False): 190, ("cpu", True): 190}


def activation_bytes(shape: Shape, rows: int, seq: int, bf16: bool, checkpointing: bool, device: str = "cuda") -> float:
    c = BYTES_PER_ACTIVATION[(device, bf16)]
    per_layer = seq * rows * shape.hidden * c
    if checkpointing:
        return shape.layers * per_layer / 17 + per_layer
    return shape.layers * per_layer


def estimate(shape: Shape, workers: int, strategy: str, bf16: bool, checkpointing: bool, rows: int, seq: int,
             device: str = "cuda") -> dict:
    """Per-GPU (or, device="cpu", per-process) GB of one phase, by component."""
    p = shape.params
    bf16 = bf16 and device == "cuda"  # CPUs compute in fp32
    shard = workers if strategy == "fsdp" else 1
    buffers = 0.0
    if strategy == "ddp" and workers > 1:
        buffers += 4 * p  # DDP's gradient buckets
    if strategy == "fsdp":
        buffers += 2 * 2 * shape.largest_unit * (2 if bf16 else 4)  # current + prefetched unsharded unit
    elif bf16:
        buffers += 2 * p  # autocast's bf16 copies of the weights
    out = {"weights": 4 * p / shard, "grads": 4 * p / shard, "optimizer": 8 * p / shard, "buffers": buffers,
           "activations": activation_bytes(shape, max(1, math.ceil(rows / workers)), seq, bf16, checkpointing, device)}
    used = sum(out.values())
    out["overhead"] = (OVERHEAD_GB * GB + SLACK * used) if device == "cuda" else 0.0
    return {k: v / GB for k, v in out.items()}


def plan(cfg, gpus: int, gpu_memory_gb: float) -> dict:
    """The JSON of `xstilts plan`: {"fits", "per_gpu_gb", "breakdown", "suggestion", "model", "phases"}."""
    d = cfg.distributed
    shape = _shape(cfg)
    phases = {name: estimate(shape, d.workers, d.strategy, d.mixed_precision == "bf16", d.activation_checkpointing,
                             rows, seq) for name, (rows, seq) in _phases(cfg).items()}
    worst = max(phases, key=lambda k: sum(phases[k].values())) if phases else None
    breakdown = phases.get(worst, {})
    per_gpu = sum(breakdown.values())
    fits = per_gpu <= gpu_memory_gb and d.workers <= gpus
    out = {"fits": fits, "per_gpu_gb": round(per_gpu, 2), "breakdown": {k: round(v, 2) for k, v in breakdown.items()},
           "binding_phase": worst, "phases": {k: round(sum(v.values()), 2) for k, v in phases.items()},
           "model": {"name": cfg.model.name, "params": shape.params},
           "distributed": d.model_dump(), "gpus": gpus, "gpu_memory_gb": gpu_memory_gb, "suggestion": None}
    if not fits:
        out["suggestion"] = suggest(cfg, shape, gpus, gpu_memory_gb)
    return out


def _shape(cfg) -> Shape:
    if cfg.model.name == "toy":
        return shape_of("toy", (512, cfg.model.hidden_size, cfg.model.layers, cfg.model.heads))
    return shape_of(cfg.model.name)


def suggest(cfg, shape: Shape, gpus: int, gpu_memory_gb: float) -> dict:
    """The cheapest change that fits: the fewest workers (ddp while the model fits one GPU, else fsdp), then
    activation checkpointing, then smaller micro-batches with more accumulation (the global batch stays).
    `gpus_needed` > gpus when even that does not fit the GPUs at hand."""
    bf16 = cfg.distributed.mixed_precision == "bf16"
    sizes = _phases(cfg)
    for workers in (1, 2, 4, 8, 16, 32, 64):
        for strategy in (("none",) if workers == 1 else ("ddp", "fsdp")):
            for checkpointing in (False, True):
                for split in (1, 2, 4, 8, 16, 32):
                    worst = max((sum(estimate(shape, workers, strategy, bf16, checkpointing, max(1, rows // split),
                                              seq).values()) for rows, seq in sizes.values()), default=0.0)
                    if worst <= gpu_memory_gb:
                        return {"gpus_needed": workers, "workers": workers, "strategy": strategy,
                                "activation_checkpointing": checkpointing, "micro_batch_split": split,
                                "per_gpu_gb": round(worst, 2),
                                "overrides": _overrides(cfg, workers, strategy, checkpointing, split)}
    return {"gpus_needed": None, "reason": f"no layout of up to 64 GPUs of {gpu_memory_gb:g} GB fits"}


def _overrides(cfg, workers: int, strategy: str, checkpointing: bool, split: int) -> list[str]:
    out = [f"distributed.workers={workers}", f"distributed.strategy={strategy}"]
    if checkpointing:
        out.append("distributed.activation_checkpointing=true")
    if split > 1:
        i, t = cfg.intermediate, cfg.target
        out += [f"intermediate.batch_size={max(1, i.batch_size // split)}", f"intermediate.grad_accum={i.grad_accum * split}",
                f"target.batch_size={max(1, t.batch_size // split)}", f"target.qa_batch_size={max(1, t.qa_batch_size // split)}",
                f"target.grad_accum={t.grad_accum * split}"]
    return out
