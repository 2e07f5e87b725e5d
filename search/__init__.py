"""xstilts search: how trials are chosen, run and tracked (Ray Tune, Optuna, MLflow, the CLI, reports).

The only package that imports Ray and Optuna; it depends on `trainables`, never the other way round.
Entry point: the `xstilts` command (search/cli.py).
"""
