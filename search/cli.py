"""The `xstilts` command line.

  xstilts tasks [--json]                               the task table
  xstilts data toy --out DIR [--seed N]                write the toy benchmark
  xstilts data prepare TASK... --data-dir DIR          download Hub sources for offline clusters
  xstilts data inspect TASK --data-dir DIR [--json]    examples per split and language
  xstilts run CONFIG [key=value ...] [--json FILE]     one three-phase pipeline, no Ray

Errors a user can fix print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from trainables.errors import XstiltsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Search English intermediate-task mixtures "
                  "that improve zero-shot cross-lingual transfer on XTREME.")
data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Toy benchmark, Hub downloads, inspection.")
app.add_typer(data_app, name="data")
console = Console()


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="Emit the table as JSON.")) -> None:
    """Print the task table: 10 intermediate tasks and the 9 XTREME targets."""
    from trainables.tasks import TASKS

    if as_json:
        print(json.dumps([t.to_json() for t in TASKS.values()], indent=1))
        return
    table = Table("name", "role", "kind", "train on", "metric", "languages", "source")
    for t in TASKS.values():
        table.add_row(t.name, t.role, t.kind, t.train_on or "-", t.metric,
                      f"{len(t.languages)}: {' '.join(t.languages[:8])}{' …' if len(t.languages) > 8 else ''}",
                      ", ".join(f"{s.hub_id}/{s.config}" for s in t.sources))
    console.print(table)


@data_app.command("toy")
def data_toy(out: Path = typer.Option(..., "--out", help="Folder to write the toy benchmark into."),
             seed: int = typer.Option(0, help="Same seed, byte-identical files.")) -> None:
    """Write the toy benchmark (every task, Hub schemas, local layout, corpus, tokenizer)."""
    from trainables.toy import write_toy

    write_toy(out, seed)
    console.print(f"toy benchmark written to {out}")


@data_app.command("prepare")
def data_prepare(task_names: List[str] = typer.Argument(..., metavar="TASK..."),
                 data_dir: Path = typer.Option(..., "--data-dir")) -> None:
    """Download the tasks' Hub sources into DATA_DIR (<hub id>/<config>/<split>.parquet)."""
    from trainables.data import prepare

    written = prepare(task_names, data_dir)
    console.print(f"{len(written)} files written under {data_dir}")


@data_app.command("inspect")
def data_inspect(task: str, data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Examples per split and language after loading and normalisation."""
    from trainables.data import inspect

    report = inspect(task, data_dir)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table("split", "language", "examples", title=report["task"])
    for split, langs in report["splits"].items():
        for lang, n in langs.items():
            table.add_row(split, lang, str(n))
    console.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run(config: Path = typer.Argument(..., help="A pipeline preset, e.g. configs/pipeline/toy.yaml"),
        overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]..."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results JSON here."),
        languages: bool = typer.Option(False, "--languages", help="Show per-language scores.")) -> None:
    """Run one three-phase pipeline (no Ray): phase 1 -> intermediate training -> zero-shot targets."""
    from trainables.runner import run as run_one

    run_one(str(config), list(overrides or []), str(json_file) if json_file else None, languages)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning XstiltsError into one line and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except XstiltsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code)
    except typer.Abort:
        raise SystemExit(130)
    except Exception as exc:  # click usage errors come through standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
