"""xstilts trainables: what ONE trial does — plain PyTorch, transformers and datasets, no Ray, no Optuna.

Run one pipeline without Ray:  python -m trainables run configs/pipeline/toy.yaml
"""
