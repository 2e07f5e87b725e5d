"""Cheap checks before anything runs or is written: everything that can be refused without training is refused
here, in seconds, with one line (what is wrong — how to fix it).

  check_pipeline(cfg)   data_dir present (or the toy benchmark's default folder, generated on first use), every
                        source the run reads present locally or on a reachable Hub, the base model loadable
  check_tracking(uri)   an HTTP tracking server answers /health within a few seconds

`xstilts run` calls them before creating its MLflow run; `xstilts search` before starting Ray or writing its
search folder (search/run.py adds its own: resume state, Ray address).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from trainables import data as D
from trainables.errors import XstiltsError
from trainables.tracking import mask
from trainables.tasks import TASKS, training_task

TOY_DATA = "toy_data"  # the presets' folder for the toy benchmark: generated when missing, nothing else is


def check_pipeline(cfg, extra_tasks: tuple[str, ...] = ()) -> None:
    """The data and model a pipeline (and a search's candidate tasks, `extra_tasks`) will read exist."""
    check_data(cfg, extra_tasks)
    check_model(cfg)


def toy_data_pending(cfg) -> bool:
    """The toy benchmark will be written on first use (the presets' default folder, not there yet)."""
    return (cfg.model.name == "toy" and cfg.data_dir is not None and Path(cfg.data_dir).name == TOY_DATA
            and not (Path(cfg.data_dir).exists() and any(Path(cfg.data_dir).iterdir())))


def check_data(cfg, extra_tasks: tuple[str, ...] = ()) -> None:
    if toy_data_pending(cfg):
        return
    data_dir = Path(cfg.data_dir) if cfg.data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        hint = (f"`xstilts data toy --out {data_dir}` writes the toy benchmark there" if cfg.model.name == "toy"
                else "`xstilts data prepare TASK... --data-dir DIR` downloads the sources")
        raise XstiltsError(f"data_dir {data_dir} does not exist", f"fix the path, or {hint}")
    if cfg.model.name == "toy":
        if data_dir is None:
            raise XstiltsError("model.name=toy needs data_dir", "set data_dir=toy_data (generated on first use)")
        for needed in ("mlm/corpus.txt", "tokenizer/tokenizer.json"):
            if not (data_dir / needed).exists():
                raise XstiltsError(f"{data_dir} has no toy {needed}",
                                   f"run `xstilts data toy --out {data_dir}`, or point data_dir at the toy benchmark")
    needs = [(t, "train") for t in list(cfg.intermediate.mixture) + list(extra_tasks)]
    for name in cfg.targets:
        task = TASKS[name]
        needs += [(name, s) for s in ("validation", "test")]
        if task.kind != "retrieval":
            needs.append((name, "train"))
            if task.selection and task.selection[1] == "validation":
                needs.append((task.selection[0], "validation"))
    for task, split in dict.fromkeys(needs):
        _check_inputs(task, split, data_dir)


def _check_inputs(task: str, split: str, data_dir: Path | None) -> None:
    for entry in D.inputs(task, split, data_dir, pin=False):
        if entry[0] == "hub" and D.offline():
            _, hub_id, config, hub_split, _ = entry
            raise XstiltsError(f"{task}: {hub_id}/{config}/{hub_split} is not under {data_dir or '(no data_dir)'} "
                               f"and the Hub is offline", f"run `xstilts data prepare {task} --data-dir DIR` where the "
                               f"Hub is reachable, or unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE")
    owner = training_task(TASKS[task]) if split == "train" else TASKS[task]
    for s in owner.sources:  # licensed data (CCGbank): local files only, no Hub and no fallback
        if s.local_only and not s.raw and split in s.splits and not any(e[0] == "file" for e in D.inputs(task, split, data_dir, pin=False)):
            raise XstiltsError(f"{task}: no local files under {data_dir}", s.local_only)


def check_model(cfg) -> None:
    """A base model that is a folder must hold a config.json; a Hub id must be in the Hub cache when offline."""
    name = cfg.model.name
    if name == "toy":
        return
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.exists():
        if not (path / "config.json").exists():
            raise XstiltsError(f"model.name={name} is not a model folder (no config.json there)",
                               "give a Hub id (xlm-roberta-large), a save_pretrained folder, or model.name=toy")
        return
    if D.offline():
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=cfg.model.revision)
        if not isinstance(found, str):
            raise XstiltsError(f"model {name} is not in the Hugging Face cache and the Hub is offline",
                               f"download it where the Hub is reachable (huggingface-cli download {name}) or "
                               f"unset HF_HUB_OFFLINE")


def check_tracking(uri: str, timeout: float = 3.0) -> None:
    """An HTTP(S) tracking server must answer /health within `timeout` seconds (SQLite needs no server)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
    except urllib.error.HTTPError:
        return  # it answers (an auth-protected server may refuse /health): reachable
    except OSError as exc:
        raise XstiltsError(f"the MLflow tracking server {mask(uri)} does not answer ({type(exc).__name__})",
                           "start it, fix tracking_uri, or set tracking.enabled=false") from None
