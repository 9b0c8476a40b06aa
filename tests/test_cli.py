"""The `tamer` command as a user runs it: help, synth -> ingest -> stats/sql, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tamer.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help():
    names = sorted(get_command(app).commands)
    assert {"synth", "ingest", "stats", "sql", "run", "models"} <= set(names)
    for name in names:
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_synth_ingest_stats_sql(tmp_path, ray_local, prefect_server):
    root, src = str(tmp_path / "data"), tmp_path / "synth"
    made = invoke("synth", "--out", str(src), "--objects", "3", "--views", "2", "--json")
    assert made.exit_code == 0 and json.loads(made.stdout)["images"] == 6
    ingested = invoke("--root", root, "ingest", str(src), "--json")
    assert ingested.exit_code == 0, ingested.output
    report = json.loads(ingested.stdout[ingested.stdout.index("{"):])
    assert report["ingested"] == 6

    stats = json.loads(invoke("--root", root, "stats", "--json").stdout)
    assert stats["overview"]["images"] == 6 and stats["overview"]["subjects"] == 3
    assert sum(row["images"] for row in stats["per_subject"]) == 6
    plot = tmp_path / "stats.png"
    assert invoke("--root", root, "stats", "--plot", str(plot)).exit_code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = json.loads(invoke("--root", root, "sql", "SELECT subject, count(*) AS n FROM images "
                             "GROUP BY 1 ORDER BY 1", "--json").stdout)
    assert [row["n"] for row in rows] == [2, 2, 2]
    table = invoke("--root", root, "sql", "SELECT image FROM images LIMIT 1")
    assert "<blob" in table.stdout  # image bytes are summarized, not dumped


def test_bad_sql_and_bad_config_exit_nonzero(tmp_path):
    assert invoke("--root", str(tmp_path), "sql", "SELEKT 1").exit_code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  shard_rows: zero\n")
    result = invoke("--root", str(tmp_path), "--config", str(bad), "stats")
    assert result.exit_code == 2 and "ingest.shard_rows" in result.output


@pytest.mark.parametrize("missing", ["/no/such/folder"])
def test_ingest_of_missing_source_is_a_usage_error(tmp_path, missing):
    assert invoke("--root", str(tmp_path), "ingest", missing).exit_code == 2


def test_models_check_dry_runs_real_profiles_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("models", "check", "--profile", "sd15", "--json")
    assert result.exit_code == 0
    checks = {c["role"]: c for c in json.loads(result.stdout)}
    assert checks["unet"]["id"].startswith("stable-diffusion-v1-5/") and checks["unet"]["ok"]
    assert invoke("models", "check", "--profile", "no-such-profile").exit_code == 1
