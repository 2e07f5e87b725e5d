"""The CLI: the task table, toy + inspect end to end, and bad input -> one line, exit status 2.

Run: pytest tests/test_cli.py
"""

import json
import subprocess
import sys

import pytest

from search.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True)


def test_tasks_json_lists_10_intermediate_and_9_targets():
    out = run("tasks", "--json")
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout)
    roles = [t["role"] for t in table]
    assert roles.count("intermediate") == 10 and roles.count("target") == 9
    by_name = {t["name"]: t for t in table}
    assert {n: len(by_name[n]["languages"]) for n in ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa",
                                                      "bucc2018", "tatoeba")} == {
        "xnli": 15, "pawsx": 7, "udpos": 33, "panx": 40, "xquad": 11, "mlqa": 7, "tydiqa": 9, "bucc2018": 4, "tatoeba": 36}
    assert by_name["xnli"]["train_on"] == "mnli" and by_name["xquad"]["train_on"] == "squad_v1"
    for t in table:
        assert {"name", "role", "kind", "languages", "train_on", "metric", "source"} <= set(t)


def test_toy_then_inspect(tmp_path):
    assert run("data", "toy", "--out", str(tmp_path / "d")).returncode == 0
    out = run("data", "inspect", "xnli", "--data-dir", str(tmp_path / "d"), "--json")
    report = json.loads(out.stdout)
    assert set(report["splits"]["validation"]) == {"en", "de", "ru", "hi"}


@pytest.mark.parametrize("args, message", [
    (["data", "inspect", "nosuchtask", "--data-dir", "."], "unknown task 'nosuchtask' — valid tasks: anli_plus"),
    (["data", "inspect", "xnli", "--data-dir", "/nonexistent"], "missing source offline"),
    (["data", "inspect", "ccg", "--data-dir", "/nonexistent"], "licensed"),
])
def test_bad_input_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
