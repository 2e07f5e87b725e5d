"""The CLI: the task table, toy + inspect end to end, and bad input -> one line, exit status 2.

Run: pytest tests/test_cli.py
"""

import json
import os
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


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
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


def test_version():
    out = subprocess.run([sys.executable, "-m", "search.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("xstilts ")


@pytest.mark.slow
def test_a_served_url_is_printed_only_once_the_server_answers(tmp_path):
    """`xstilts ui`'s launcher (`_serve_until_stopped`): the URL line comes after the server answers; a server that
    cannot start (its port taken) gives one error line instead of a dead URL; SIGTERM stops the server too."""
    import signal
    import time
    import urllib.request

    from helpers import free_port

    port = free_port()
    code = ("import sys; from search.cli import _serve_until_stopped as s, main; "
            f"s([sys.executable, '-c', 'import time; time.sleep(2); import http.server as h; "
            f"h.ThreadingHTTPServer((\"127.0.0.1\", {port}), h.SimpleHTTPRequestHandler).serve_forever()'], "
            f"'http://127.0.0.1:{port}/', 'ready at http://127.0.0.1:{port}', {port})")
    # (the test server prints its own line to stdout first: the launcher sends it to stderr)
    code = code.replace("time.sleep(2); ", "time.sleep(2); print(\"server says hello\", flush=True); ")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready at") and urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        # a second launcher on the same port: one line, no URL (the first server must not answer for it)
        second = subprocess.run([sys.executable, "-c", "from trainables.errors import XstiltsError\ntry:\n    exec("
                                 + repr(code) + ")\nexcept XstiltsError as e:\n    print(f'error: {e}', file=sys.stderr)"
                                 "; sys.exit(2)"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert second.returncode == 2 and f"port {port} on 127.0.0.1 is taken" in second.stderr, second.stderr
        assert not second.stdout
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(1)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
