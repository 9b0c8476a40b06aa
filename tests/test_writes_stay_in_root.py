"""Nothing is written outside the dataset root and the configured caches; temporary folders
are removed. Run with the working folder (and the temporary folder) set to empty folders and
a remote root (`memory://`, or S3 where tables are written), the pieces that used to write
beside it."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

SMALL_SYNTH = {"synth": {"objects": 2, "views": 1, "size": 16}}


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Path:
    """The working folder and the temporary folder, both empty: neither may be written."""
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # torch keeps its compile cache in the temporary folder unless told: a cache, not ours
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch-cache"))
    yield cwd
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []


def test_synth_sample_for_a_remote_root_goes_to_the_synth_cache(empty_cwd, tmp_path, monkeypatch):
    from tamer.config import SynthSettings
    from tasks.pipeline_state import synthesize_sample

    monkeypatch.setenv("TAMER_SYNTH_CACHE", str(tmp_path / "cache"))
    settings = SynthSettings(**SMALL_SYNTH["synth"])
    out = Path(synthesize_sample(f"memory://tamer-{uuid.uuid4().hex}", settings))
    assert out.parent == tmp_path / "cache" and len(list(out.rglob("*.png"))) >= 2
    again = Path(synthesize_sample(f"memory://tamer-{uuid.uuid4().hex}", settings))
    assert again == out  # same settings, same cached sample


def test_synth_sample_for_a_local_root_stays_in_the_root(empty_cwd, tmp_path):
    from tamer.config import SynthSettings
    from tasks.pipeline_state import synthesize_sample

    out = Path(synthesize_sample(str(tmp_path / "root"), SynthSettings(**SMALL_SYNTH["synth"])))
    assert out == tmp_path / "root" / "sources" / "synth" and any(out.rglob("*.png"))


def test_evaluation_on_a_remote_root_removes_its_temporary_folder(s3_root, empty_cwd, tmp_path):
    from storage.shards import ShardStore
    from tamer.config import load_config
    from tamer.synth import generate
    from tasks.evaluate import new_eval_run_id, read_results, resolve_model, run_evaluation

    generate(tmp_path / "subjects", n_objects=1, views=2, size=32)
    root = s3_root  # tables need a real store: delta-rs cannot keep them in memory://
    settings = {"data": str(tmp_path / "subjects"), "methods": ["textual_inversion"],
                "subjects": 1, "prompts": 1, "seeds": 1, "steps": 2,
                "textual_inversion": {"steps": 2}}
    config = load_config(None, root=root, profile="tiny",
                         **{f"eval.{key}": value for key, value in settings.items()})
    store = ShardStore(root)
    summary = run_evaluation(config, resolve_model(store, None, None), new_eval_run_id())
    rows = read_results(store, summary["eval_run_id"])
    assert len(rows) == 1 and rows[0]["subject_bytes"] > 0  # it trained an embedding somewhere
    assert store.fs.exists(f"{summary['report_dir']}/{rows[0]['image_path']}")
