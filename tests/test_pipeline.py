"""`tamer run` end to end at the smallest settings, then again with nothing new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synth_data import SMALL_EVAL_YAML

TAMER = Path(sys.executable).with_name("tamer")

SMALL = """
synth: {objects: 4, views: 3, size: 32, held_out_fraction: 0.25}
train: {steps: 4, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, log_every: 2}
""" + SMALL_EVAL_YAML


def test_tamer_run_end_to_end_then_no_op(tmp_path, ray_local):
    """As a user runs it: the `tamer` command in its own process (the shared local Prefect server),
    joining the test session's Ray through RAY_ADDRESS instead of starting another."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    root = str(tmp_path / "data")
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}

    def run_json() -> dict:
        result = subprocess.run([str(TAMER), "--root", root, "run", "--config", str(config),
                                 "--json"], env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout[result.stdout.index("{"):])

    first = run_json()

    assert first["ingest"]["ingested"] == 12
    assert first["train"]["policy"].startswith("trained")
    locations = first["locations"]
    assert Path(locations["catalog"]).is_file() and Path(locations["report"]).is_file()
    assert (Path(locations["checkpoint"]) / "model_index.json").is_file()
    report_html = Path(locations["report"]).read_text()
    assert "textual_inversion" in report_html and "ours" in report_html

    second = run_json()
    assert second["ingest"]["ingested"] == 0
    assert second["train"]["policy"].startswith("skipped")
    assert second["evaluate"]["policy"].startswith("skipped")
    assert second["train"]["run_id"] == first["train"]["run_id"]
    assert second["locations"]["report"] == locations["report"]
