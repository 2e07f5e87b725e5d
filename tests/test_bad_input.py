"""Bad input of every class gets one line — `error: <what> — <how to fix>` — exit status 2, no traceback, and
leaves nothing behind (no search folder, MLflow store, cache entry or toy data). Run: pytest tests/test_bad_input.py

Classes: configs (keys, tasks, types, weights, targets, YAML), data (files, columns, labels, languages, paths),
environment (model, Ray address, tracking server, GPUs, resume), CLI (searches that do not exist, options).
"""

import json
import shutil
import time
from pathlib import Path

import pytest

import hub_fixtures
from search.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory; XSTILTS_* unset, so relative paths land here (and must not)."""
    for var in ("XSTILTS_HOME", "XSTILTS_CACHE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, *args, leaves=()) -> str:
    """Run the CLI; assert one `error:` line with a fix, exit 2, and nothing written but `leaves`."""
    cwd = Path.cwd()
    before = {p for p in cwd.rglob("*")}
    started = time.time()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert " — " in err, f"no fix given: {err}"
    new = {p for p in cwd.rglob("*")} - before
    assert not [p for p in new if not any(str(p).startswith(str(cwd / k)) for k in leaves)], new
    assert time.time() - started < 30
    return err


def toy(toy_dir, *overrides):
    return ["run", "toy", f"data_dir={toy_dir}", "tracking.enabled=false", *overrides]


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("override, message", [
    ("intermediate.learning_rate=1.0e-5", "intermediate.learning_rate: unknown key"),
    ("intermediate.mixture={mnlii: 1.0}", "unknown intermediate task 'mnlii' — choose from anli_plus"),
    ("targets=[xnli,nope]", "unknown target 'nope'"),
    ("intermediate.lr=abc", "intermediate.lr: Input should be a valid number"),
    ("intermediate.mixture={mnli: -1.0}", "negative weight -1.0 for mnli"),
    ("intermediate.mixture={mnli: .nan}", "weight nan for mnli — weights must be finite"),
    ("intermediate.mixture={mnli: 0, qqp: 0}", "all mixture weights are zero"),
    ("targets=[]", "no targets — name at least one"),
    ("intermediate", "is not key=value"),
    ("distributed.workers=2", "needs strategy ddp or fsdp"),
])
def test_bad_configs(override, message, workdir, toy_dir, capsys):
    assert message in refused(capsys, *toy(toy_dir, override))


def test_malformed_yaml_and_object_tags(workdir, capsys):
    (workdir / "broken.yaml").write_text("model:\n  name: [toy\n")
    assert "malformed YAML in broken.yaml at line" in refused(capsys, "run", "broken.yaml", leaves=("broken.yaml",))
    (workdir / "evil.yaml").write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    assert "YAML tag that would construct an object" in refused(capsys, "run", "evil.yaml", leaves=("evil.yaml",))
    assert not (workdir / "pwned").exists()
    (workdir / "list.yaml").write_text("- a\n- b\n")
    assert "must hold a mapping" in refused(capsys, "run", "list.yaml", leaves=("list.yaml",))


@pytest.mark.parametrize("override, message", [
    ("candidates=[mnli,mnlx]", "unknown intermediate task 'mnlx'"),
    ("weight={low: 2.0, high: 1.0}", "low 2.0 > high 1.0"),
    ("points_to_evaluate=[{qqp: 1.0}]", "points_to_evaluate: 'qqp' is not a candidate"),
    ("num_samples=0", "num_samples: Input should be greater than or equal to 1"),
])
def test_bad_search_configs(override, message, workdir, capsys):
    assert message in refused(capsys, "search", "toy", override, "candidates=[mnli]" if "points" in override else "seed=0")


# ---------------------------------------------------------------- data


def test_corrupted_file(workdir, capsys):
    data = hub_fixtures.write(workdir / "data", {"nyu-mll/glue/sst2/train.parquet": [{"sentence": "a", "label": 1, "idx": 0}]})
    (data / "nyu-mll/glue/sst2/train.parquet").write_bytes(b"PAR1 not really parquet")
    err = refused(capsys, "data", "inspect", "sst2", "--data-dir", str(data), leaves=("data",))
    assert "cannot read" in err and "train.parquet" in err


def test_wrong_columns(workdir, capsys):
    data = hub_fixtures.write(workdir / "data", {"nyu-mll/glue/mnli/train.parquet": [{"sentence1": "a", "label": 0}]})
    assert "wrong columns" in refused(capsys, "data", "inspect", "mnli", "--data-dir", str(data), leaves=("data",))


NLI = {"premise": "p", "hypothesis": "h", "label": 1}
MNLI_TRAIN = {"nyu-mll/glue/mnli/train.parquet": [{**NLI, "idx": 0}], "facebook/xnli/en/test.parquet": [NLI]}


def test_label_out_of_range_names_file_and_row(workdir, capsys):
    rows = [NLI, {"premise": "p", "hypothesis": "h", "label": 7}]
    data = hub_fixtures.write(workdir / "data", {**MNLI_TRAIN, "facebook/xnli/en/validation.parquet": rows}, ["en"])
    err = refused(capsys, "data", "inspect", "xnli", "--data-dir", str(data), leaves=("data",))
    assert "label 7 out of range for 3 labels in" in err and "facebook/xnli/en/validation.parquet row 1" in err


def test_tag_out_of_range_names_file_and_row(workdir, capsys):
    good = {"tokens": ["a"], "ner_tags": [0], "langs": ["en"]}
    rows = [good, {"tokens": ["b"], "ner_tags": [99], "langs": ["en"]}]
    data = hub_fixtures.write(workdir / "data", {"google/xtreme/PAN-X.en/train.parquet": [good],
                                                 "google/xtreme/PAN-X.en/validation.parquet": rows}, ["en"])
    err = refused(capsys, "data", "inspect", "panx", "--data-dir", str(data), leaves=("data",))
    assert "tag 99 out of range" in err and "PAN-X.en/validation.parquet row 1" in err


def test_language_missing_for_a_split(workdir, capsys):
    data = hub_fixtures.write(workdir / "data", {**MNLI_TRAIN, "facebook/xnli/en/validation.parquet": [NLI]},
                              ["en", "de"])  # the manifest promises de
    err = refused(capsys, "data", "inspect", "xnli", "--data-dir", str(data), leaves=("data",))
    assert "facebook/xnli/de/validation is not under" in err and "xstilts data prepare" in err


def test_missing_data_dir_is_refused_not_generated(workdir, capsys):
    err = refused(capsys, "run", "toy", "data_dir=/nonexistent/xtreme", "tracking.enabled=false")
    assert "data_dir /nonexistent/xtreme does not exist" in err and "xstilts data toy --out" in err
    assert not Path("/nonexistent").exists()
    err = refused(capsys, "run", "toy", "data_dir=tyo_data", "tracking.enabled=false")  # a typo: not a benchmark
    assert not (workdir / "tyo_data").exists()


def test_licensed_ccg_without_files(workdir, toy_dir, capsys):
    data = workdir / "data"
    shutil.copytree(toy_dir, data, ignore=shutil.ignore_patterns("ccgbank"))
    err = refused(capsys, *toy(data, "intermediate.mixture={ccg: 1.0}"), leaves=("data",))
    assert "ccg: no local files" in err and "licensed" in err


# ---------------------------------------------------------------- environment


def test_missing_model(workdir, toy_dir, capsys):
    assert "is not a model folder" in refused(capsys, *toy(toy_dir, "model.name=/nonexistent/model"))
    err = refused(capsys, *toy(toy_dir, "model.name=facebook/xlm-roberta-xxl"))
    assert "not in the Hugging Face cache and the Hub is offline" in err


def test_unreachable_ray_address(workdir, toy_dir, capsys):
    err = refused(capsys, "search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", "--address", "127.0.0.1:1")
    assert "no Ray cluster answers at 127.0.0.1:1" in err and not (workdir / "runs").exists()


def test_unreachable_tracking_server(workdir, toy_dir, capsys):
    err = refused(capsys, "search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", "tracking_uri=http://127.0.0.1:1")
    assert "the MLflow tracking server http://127.0.0.1:1 does not answer" in err
    assert "does not answer" in refused(capsys, *toy(toy_dir, "tracking.enabled=true", "tracking.uri=http://127.0.0.1:1"))


def test_resume_with_nothing_to_resume(workdir, toy_dir, capsys):
    err = refused(capsys, "search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", "--resume")
    assert "nothing to resume" in err


def test_resume_with_a_changed_search_space(workdir, toy_dir, capsys):
    from search.config import load_search_config

    cfg = load_search_config("toy", [f"overrides=[\"data_dir={toy_dir}\"]"])
    folder = workdir / "runs/searches/toy"
    (folder / "ray").mkdir(parents=True)
    (folder / "search.json").write_text(json.dumps({"parent_run_id": "x", "tracking_uri": "sqlite:///x.db",
                                                    "experiment": "e", "config": cfg.model_dump()}))
    args = ["search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", "candidates=[mnli,qqp]", "points_to_evaluate=[{}]",
            "--resume"]
    err = refused(capsys, *args, leaves=("runs",))
    assert "candidates" in err and "changed" in err
    err = refused(capsys, "search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", leaves=("runs",))  # not resuming
    assert "already exists" in err and "--resume" in err


@pytest.mark.slow  # seconds of training or a subprocess: not the fast layer
def test_workers_without_ray_train(workdir, toy_dir):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "trainables", "run", "toy", f"data_dir={toy_dir}", "tracking.enabled=false",
                          "distributed.workers=2", "distributed.strategy=ddp"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Ray Train workers" in out.stderr


@pytest.mark.slow
def test_gpus_asked_of_a_cpu_cluster(workdir, toy_dir, capsys):
    import ray

    try:
        err = refused(capsys, "search", "toy", f"overrides=[\"data_dir={toy_dir}\"]", "resources={cpu: 1, gpu: 1}")
    finally:
        ray.shutdown()
    assert "one trial needs 1 GPU but the Ray cluster has 0" in err and not (workdir / "runs").exists()


# ---------------------------------------------------------------- CLI


def test_reports_of_searches_that_do_not_exist(workdir, capsys):
    err = refused(capsys, "report", "nosuchsearch")
    assert "no search 'nosuchsearch'" in err and "searches there: none" in err
    assert "no search 'nosuchsearch'" in refused(capsys, "best", "nosuchsearch")
    assert "--split must be validation or test" in refused(capsys, "report", "toy", "--split", "dev")
    assert "preset 'papr' not found" in refused(capsys, "search", "papr")
