"""The presets as package data (`xstilts_configs`): installed with xstilts so `xstilts run toy` works anywhere.

No code here. List them with `xstilts presets`; each YAML file's header says how to run it.
"""
