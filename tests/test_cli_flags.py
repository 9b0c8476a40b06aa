"""Every configuration flag reaches the code it names.

Each test runs the real command (real Prefect flows) on an empty root and reads what the
task-level function received, through a wrapper that records its arguments and then calls the
real function (or stops the run where the real one would train or evaluate for minutes).
Dropping a flag anywhere between the CLI and the task fails its test.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tasks.evaluate
import tasks.index
import tasks.train_run
from flows import caption as caption_flows, ingest as ingest_flows
from tamer.cli import app
from tasks import embed as embed_tasks


class Stop(ValueError):
    """Raised by a recorder that must not run the real work (training, evaluation)."""


@pytest.fixture
def seen(monkeypatch):
    """`record(module, name, stop=False)` wraps `module.name`; `seen[name]` is its last call's
    arguments by parameter name."""
    calls: dict[str, dict] = {}

    def record(module, name: str, stop: bool = False) -> None:
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] = dict(inspect.signature(real).bind(*args, **kwargs).arguments)
            if stop:
                raise Stop(f"{name} reached")
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    calls["record"] = record  # type: ignore[assignment]
    return calls


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "root")


@pytest.fixture
def other_profile(tmp_path) -> str:
    """The tiny profile under another name: a --profile value that is not the default."""
    path = tmp_path / "tiny-copy.yaml"
    shutil.copy(Path("configs/profiles/tiny.yaml"), path)
    return str(path)


@pytest.fixture
def empty_source(tmp_path) -> str:
    (tmp_path / "src").mkdir()
    return str(tmp_path / "src")


def tamer(root: str, *args: str):
    return CliRunner().invoke(app, ["--root", root, *args], catch_exceptions=False)


def test_ingest_executor(seen, root, empty_source, prefect_server):
    seen["record"](ingest_flows, "ingest_source")
    assert tamer(root, "ingest", empty_source, "--executor", "local").exit_code == 0
    assert seen["ingest_source"]["settings"].executor == "local"  # the default is ray


def test_caption_executor_batch_size_and_profile(seen, root, other_profile, prefect_server):
    seen["record"](caption_flows, "caption_images")
    result = tamer(root, "caption", "--executor", "local", "--batch-size", "7",
                   "--profile", other_profile)
    assert result.exit_code == 0, result.output
    call = seen["caption_images"]
    assert (call["settings"].executor, call["settings"].batch_size) == ("local", 7)
    assert call["profile_name"] == other_profile


def test_embed_executor_and_profile(seen, root, other_profile, prefect_server, monkeypatch):
    seen["record"](embed_tasks, "embed_dataset")
    # an empty root has nothing to index: the index step is not what this test is about
    monkeypatch.setattr(tasks.index, "build_index", lambda *a, **k: {"index_path": None})
    result = tamer(root, "embed", "--executor", "local", "--profile", other_profile, "--json")
    assert result.exit_code == 0, result.output
    assert seen["embed_dataset"]["settings"].executor == "local"
    assert seen["embed_dataset"]["profile_name"] == other_profile


def test_index_profile(seen, root, other_profile):
    seen["record"](tasks.index, "build_index")
    assert tamer(root, "index", "--profile", other_profile).exit_code == 1  # nothing to index
    assert seen["build_index"]["profile_name"] == other_profile


def test_train_flags_reach_the_trainer(seen, root, prefect_server):
    seen["record"](tasks.train_run, "train_run", stop=True)
    result = tamer(root, "train", "--steps", "3", "--workers", "2", "--batch-size", "5", "--gpu",
                   "--resume", "run-from-flag")
    assert result.exit_code == 2 and "train_run reached" in result.output
    call = seen["train_run"]
    train = call["config"].train
    assert (train.steps, train.num_workers, train.batch_size, train.use_gpu) == (3, 2, 5, True)
    assert call["run_id"] == "run-from-flag"


def test_train_dataset_is_checked_against_the_current_version(seen, root, prefect_server):
    seen["record"](tasks.train_run, "train_run", stop=True)
    result = tamer(root, "train", "--dataset", "f" * 16)
    assert result.exit_code == 2 and "f" * 16 in result.output
    assert "train_run" not in seen  # refused before any training


def test_evaluate_flags_reach_the_protocol(seen, root, tmp_path, other_profile, prefect_server):
    seen["record"](tasks.evaluate, "run_evaluation", stop=True)
    (tmp_path / "subjects").mkdir()
    result = tamer(root, "eval", "--data", str(tmp_path / "subjects"),
                   "--pipeline", str(tmp_path / "pipeline"), "--methods", "ti,real",
                   "--subjects", "1", "--prompts", "2", "--seeds", "3", "--steps", "4",
                   "--ti-steps", "5", "--lora-steps", "6", "--profile", other_profile)
    assert result.exit_code == 1 and "run_evaluation reached" in result.output, result.output
    config, model = seen["run_evaluation"]["config"], seen["run_evaluation"]["model"]
    e = config.eval
    assert (e.data, e.methods) == (str(tmp_path / "subjects"), ["textual_inversion", "real"])
    assert (e.subjects, e.prompts, e.seeds, e.steps) == (1, 2, 3, 4)
    assert (e.textual_inversion["steps"], e.dreambooth_lora["steps"]) == (5, 6)
    assert config.profile == other_profile
    assert model["pipeline_uri"] == str(tmp_path / "pipeline")


def test_evaluate_run_id(seen, root, prefect_server):
    seen["record"](tasks.evaluate, "run_evaluation", stop=True)
    result = tamer(root, "eval", "--run-id", "run-from-flag")
    assert result.exit_code == 1 and "run-from-flag" in result.output
    assert "run_evaluation" not in seen


def test_run_data_and_profile_reach_every_stage(seen, root, empty_source, other_profile,
                                                prefect_server, monkeypatch):
    seen["record"](ingest_flows, "ingest_source")
    seen["record"](caption_flows, "caption_images")
    seen["record"](embed_tasks, "embed_dataset")
    seen["record"](tasks.train_run, "train_run", stop=True)
    monkeypatch.setattr(tasks.index, "build_index", lambda *a, **k: {"index_path": None})
    result = tamer(root, "run", "--data", empty_source, "--profile", other_profile)
    assert result.exit_code == 1 and "train_run reached" in result.output
    assert seen["ingest_source"]["source"] == empty_source
    assert seen["caption_images"]["profile_name"] == other_profile
    assert seen["embed_dataset"]["profile_name"] == other_profile
    assert seen["train_run"]["config"].profile == other_profile


def test_synth_flags(tmp_path):
    from PIL import Image

    out = tmp_path / "synth"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--objects", "2", "--views", "3",
                                      "--size", "24", "--seed", "5", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    images = sorted(p for p in out.rglob("*.png") if "mask" not in p.name)
    assert len({p.parent for p in images}) >= 2 and len(images) == 2 * 3
    assert Image.open(images[0]).size == (24, 24)


def test_sql_limit(root):
    result = tamer(root, "sql", "SELECT range + 100 AS n FROM range(10)", "--limit", "3")
    assert result.exit_code == 0, result.output
    shown = {int(word) for word in result.output.replace("│", " ").split()
             if word.isdigit() and int(word) >= 100}
    assert shown == {100, 101, 102}


def test_serve_source_and_only_reach_the_deployments(seen, root, monkeypatch):
    import flows.deployments

    seen["record"](flows.deployments, "build_all", stop=True)
    result = tamer(root, "serve", "--only", "ingest", "--source", "/data/incoming")
    assert result.exit_code == 2 and "build_all reached" in result.output
    assert seen["build_all"]["only"] == ["ingest"]
    assert seen["build_all"]["parameters"]["source"] == "/data/incoming"
