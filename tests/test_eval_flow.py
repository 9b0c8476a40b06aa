"""Smoke evaluation end to end through the Prefect flow (tiny profile, a few baseline steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.tamer_model import TamerModel, TamerModelConfig
from storage.catalog import connect
from storage.shards import ShardStore
from tamer.config import EVAL_METHODS, load_config
from tasks.evaluate import new_eval_run_id, read_results, resolve_model, run_evaluation

SMOKE = {"subjects": 2, "prompts": 2, "seeds": 1, "steps": 2, "bootstrap": 50,
         "textual_inversion": {"steps": 2}, "dreambooth_lora": {"steps": 2}, "dreambooth": {"steps": 2}}
KEY = ("method", "subject", "prompt_index", "seed")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> str:
    """An untrained TamerPipeline: the eval accepts any pipeline directory."""
    path = tmp_path_factory.mktemp("pipeline")
    TamerModel.from_profile("tiny", TamerModelConfig()).save_pretrained(path)
    return str(path)


def test_evaluate_flow_smoke(prefect_server, dreambench, pipeline_dir, tmp_path):
    from flows.evaluate import evaluate_flow

    settings = {**SMOKE, "data": str(dreambench), "pipeline": pipeline_dir, "methods": list(EVAL_METHODS)}
    summary = evaluate_flow(root=str(tmp_path), overrides={
        "profile": "tiny", **{f"eval.{key}": value for key, value in settings.items()}})
    store = ShardStore(str(tmp_path))

    rows = read_results(store, summary["eval_run_id"])
    subjects = sorted({row["subject"] for row in rows})
    assert len(subjects) == 2
    expected = {(m, s, p, 0) for m in EVAL_METHODS for s in subjects for p in range(2)}
    assert {tuple(row[k] for k in KEY) for row in rows} == expected  # every row, once
    for row in rows:
        assert -1.0 <= row["clip_i"] <= 1.0 and -1.0 <= row["dino"] <= 1.0
        assert (row["clip_t"] is None) == (row["method"] == "real")
        if row["method"] != "real":
            assert -1.0 <= row["clip_t"] <= 1.0
            assert row["prepare_s"] > 0 and row["generate_s"] > 0 and row["subject_bytes"] > 0
        assert row["pipeline_uri"] == pipeline_dir and row["model_run_id"] is None
        assert (Path(summary["report_dir"]) / row["image_path"]).is_file()

    # full DreamBooth stores a whole UNet per subject: far more than the LoRA or the embedding
    stored = {row["method"]: row["subject_bytes"] for row in rows if row["method"] != "real"}
    assert stored["dreambooth"] > 10 * max(stored["dreambooth_lora"], stored["textual_inversion"])

    report = Path(summary["report"])
    html = report.read_text()
    assert "DreamBooth (full UNet)" in html and "the whole UNet" in html
    assert report.parent.name == summary["eval_run_id"] and report.parent.parent.name == "reports"
    for name in ("fidelity_alignment.png", "cost.png", *(row["image_path"] for row in rows if row["method"] == "ours")):
        assert name in html and (report.parent / name).is_file()
    with connect(store) as con:
        assert con.execute("SELECT count(*) FROM eval_results").fetchone()[0] == len(rows)

    # Same seeds, same metrics: re-run the first subject alone (subjects are independent).
    config = load_config(None, root=str(tmp_path), profile="tiny",
                         **{f"eval.{k}": v for k, v in {**settings, "subjects": 1}.items()})
    again = run_evaluation(config, resolve_model(store, None, pipeline_dir), new_eval_run_id())
    first = {tuple(r[k] for k in KEY): r for r in rows if r["subject"] == subjects[0]}
    for row in read_results(store, again["eval_run_id"]):
        before = first[tuple(row[k] for k in KEY)]
        for metric in ("clip_i", "clip_t", "dino"):
            assert row[metric] == before[metric] or (row[metric] is None and before[metric] is None)


def test_ours_without_a_pipeline_fails_before_any_work(tmp_path, dreambench):
    config = load_config(None, root=str(tmp_path), **{"eval.data": str(dreambench), "eval.methods": "ours"})
    model = resolve_model(ShardStore(str(tmp_path)), None, None)
    assert model["pipeline_uri"] is None
    with pytest.raises(ValueError, match="pipeline"):
        run_evaluation(config, model, new_eval_run_id())


def test_eval_cli_rejects_bad_input_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from tamer.cli import app

    runner = CliRunner()
    bad_method = runner.invoke(app, ["--root", str(tmp_path), "eval", "--methods", "ours,magic"])
    assert bad_method.exit_code == 2 and "magic" in bad_method.output
    missing = runner.invoke(app, ["--root", str(tmp_path), "eval", "--data", str(tmp_path / "nope")])
    assert missing.exit_code == 2
