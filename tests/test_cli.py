"""The `tamer` command as a user runs it: help, synth -> ingest -> stats/sql, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hostile import bomb_png, gradient, png_bytes
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


# --- fast inspection, one-line errors, global options anywhere, quiet console ------------------

HEAVY = ("torch", "diffusers", "peft", "transformers", "ray", "gradio")
REPO = Path(__file__).resolve().parents[1]
IMPORT_CHECK = """
import json, sys
from typer.testing import CliRunner
from tamer.cli import app
root = sys.argv[1]
codes = [CliRunner().invoke(app, args).exit_code for args in (
    ["--help"], ["--root", root, "sql", "SELECT 1"], ["stats", "--json", "--root", root],
    ["--root", root, "runs", "--json"])]
print(json.dumps({"codes": codes, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def run_tamer_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


def test_inspection_commands_import_no_model_or_ray_stack(tmp_path):
    done = run_tamer_process("-c", IMPORT_CHECK, str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "heavy": []}


def test_configuration_is_a_leaf_that_imports_no_project_code():
    done = run_tamer_process("-c", "import sys, tamer.config; print(sorted(m for m in sys.modules "
                             "if m.split('.')[0] in ('model', 'storage', 'tasks', 'flows', "
                             "'torch')))")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_synth_world_is_a_leaf_that_tasks_may_import():
    """tasks/ renders synth data through tamer.synth*; those modules must pull in no stage,
    flow, storage, model or CLI code, or the layering would have an upward edge."""
    done = run_tamer_process("-c", "import sys, tamer.synth, tamer.synth_world; print(sorted(m for m in "
                             "sys.modules if m.split('.')[0] in ('model', 'storage', 'tasks', 'flows') "
                             "or m.startswith(('tamer.cli', 'tamer.app'))))")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def one_line_failure(result, code: int, *needles: str) -> str:
    """The command failed with `code` and said so in one line naming every needle."""
    text = result.output.strip()
    assert result.exit_code == code, text
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "not-a-folder.txt"
    path.write_text("I am a file\n")
    return path


def test_root_that_is_a_regular_file_is_a_usage_error(tmp_path, a_file):
    one_line_failure(invoke("--root", str(a_file), "stats"), 2, str(a_file), "is a file")
    one_line_failure(invoke("--root", str(a_file), "ingest", str(tmp_path)), 2, "is a file")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("ingest:\n  shard_rows: 3\n bad: [\n")
    one_line_failure(invoke("--config", str(bad), "stats"), 2, str(bad), "line 3", "invalid YAML")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    one_line_failure(invoke("--config", str(binary), "sql", "SELECT 1"), 2, str(binary))


def test_unknown_profile_fails_before_any_flow_starts(tmp_path, monkeypatch):
    import flows.caption

    def must_not_run(**_):
        raise AssertionError("the caption flow started")

    monkeypatch.setattr(flows.caption, "caption_flow", must_not_run)
    one_line_failure(invoke("--root", str(tmp_path), "caption", "--profile", "nosuch"), 2,
                     "no profile 'nosuch'", "tiny")


@pytest.fixture()
def pipeline_dir(tmp_path) -> Path:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "TamerPipeline"}')
    return folder


def _image_file(tmp_path: Path, kind: str) -> Path:
    data = {"truncated": png_bytes(gradient())[:200],
            "html": b"<!doctype html><html><body>Not Found</body></html>",
            "bomb": bomb_png()}[kind]
    path = tmp_path / f"{kind}.png"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind, reason", [("truncated", "truncated"), ("html", "not_an_image"),
                                          ("bomb", "decompression_bomb")])
def test_generate_rejects_a_bad_reference_image(tmp_path, pipeline_dir, kind, reason):
    image = _image_file(tmp_path, kind)
    result = invoke("generate", "--checkpoint", str(pipeline_dir), "--image", str(image),
                    "--prompt", "a {} on the beach", "--out", str(tmp_path / "out"),
                    "--root", str(tmp_path))
    one_line_failure(result, 2, str(image), reason)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("index_text", ["", "not json {", "[1, 2]"])
def test_generate_rejects_a_checkpoint_without_a_valid_model_index(tmp_path, index_text):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model_index.json").write_text(index_text)
    image = tmp_path / "ok.png"
    image.write_bytes(png_bytes(gradient()))
    result = invoke("generate", "--checkpoint", str(folder), "--image", str(image),
                    "--prompt", "a {}", "--out", str(tmp_path / "out"))
    one_line_failure(result, 2, str(folder), "model_index.json")
    one_line_failure(invoke("generate", "--checkpoint", str(tmp_path / "nothing"), "--image",
                            str(image), "--prompt", "a {}", "--out", str(tmp_path / "out")),
                     2, "not a folder")


@pytest.mark.parametrize("command", [
    ["stats"], ["sql", "SELECT 1"], ["runs"], ["ingest", "."], ["caption"], ["embed"],
    ["index"], ["search", "--text", "a mug"], ["run"], ["serve"], ["train"], ["eval"], ["app"],
])
def test_root_is_accepted_after_the_command_and_the_last_one_wins(tmp_path, a_file, command):
    """A regular file as --root is rejected while resolving the configuration, so exit code 2
    shows which --root reached it; a folder given last wins over the file given first."""
    last_is_file = invoke("--root", str(tmp_path), *command, "--root", str(a_file))
    one_line_failure(last_is_file, 2, str(a_file))
    if command[0] in ("stats", "sql", "runs"):  # the rest would start real work
        assert invoke("--root", str(a_file), *command, "--root", str(tmp_path)).exit_code == 0


def test_generate_reads_root_after_the_command(tmp_path, pipeline_dir, a_file):
    image = tmp_path / "ok.png"
    image.write_bytes(png_bytes(gradient()))
    result = invoke("generate", "--checkpoint", str(pipeline_dir), "--image", str(image),
                    "--prompt", "a {}", "--out", str(tmp_path / "out"), "--root", str(a_file))
    one_line_failure(result, 2, str(a_file), "is a file")


def test_config_and_verbose_are_accepted_after_the_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  shard_rows: zero\n")
    one_line_failure(invoke("sql", "SELECT 1", "--root", str(tmp_path), "--config", str(bad)),
                     2, "ingest.shard_rows")
    assert invoke("sql", "SELECT 1", "--root", str(tmp_path), "--verbose").exit_code == 0


def _noisy_app():
    """A one-command app run through the same global-option wrapper as every tamer command."""
    import typer

    from tamer.cli import main
    from tamer.cli.common import with_global_options

    def noisy(crash: bool = False) -> None:
        warnings.warn("ThirdPartyThing is deprecated", FutureWarning, stacklevel=1)
        if crash:
            raise RuntimeError("disk on fire\nsecond line of detail")

    app = typer.Typer(callback=main)  # tamer's own global options before the command
    app.command()(with_global_options(noisy))
    return app


def test_third_party_warnings_go_to_the_log_file_not_the_console(tmp_path):
    app, log = _noisy_app(), tmp_path / "logs" / "tamer.log"
    quiet = runner.invoke(app, ["noisy", "--root", str(tmp_path)])
    assert quiet.exit_code == 0 and "deprecated" not in quiet.output
    assert "FutureWarning: ThirdPartyThing is deprecated" in log.read_text()
    with warnings.catch_warnings(record=True) as shown:  # what Python shows without tamer
        warnings.simplefilter("always")
        loud = runner.invoke(app, ["noisy", "--root", str(tmp_path), "--verbose"])
    assert loud.exit_code == 0 and [str(w.message) for w in shown] == ["ThirdPartyThing is deprecated"]
    assert log.read_text().count("FutureWarning: ThirdPartyThing") == 1  # --verbose: not routed


def test_unexpected_errors_are_one_line_with_the_traceback_in_the_log(tmp_path):
    app, log = _noisy_app(), tmp_path / "logs" / "tamer.log"
    failed = runner.invoke(app, ["noisy", "--crash", "--root", str(tmp_path)])
    one_line_failure(failed, 1, "RuntimeError: disk on fire", str(log))
    assert "Traceback" in log.read_text() and "second line of detail" in log.read_text()
    verbose = runner.invoke(app, ["noisy", "--crash", "--root", str(tmp_path), "--verbose"])
    assert isinstance(verbose.exception, RuntimeError)  # --verbose lets the traceback through


def test_library_logging_reaches_the_log_file_not_stderr(tmp_path):
    """transformers warns "slow image processor" while loading the tiny profile's processors."""
    done = run_tamer_process("-m", "tamer.cli", "models", "check", "--profile", "tiny",
                             "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "slow image processor" not in done.stderr and "Traceback" not in done.stderr
    assert "slow image processor" in (tmp_path / "logs" / "tamer.log").read_text()


def test_log_file_sits_beside_a_local_root_else_in_the_cache(tmp_path, monkeypatch, a_file):
    from tamer.logs import log_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert log_path(str(tmp_path / "data")) == tmp_path / "data" / "logs" / "tamer.log"
    assert log_path(f"file://{tmp_path}/data") == tmp_path / "data" / "logs" / "tamer.log"
    for elsewhere in ("s3://bucket/tamer", "memory://x", str(a_file)):
        assert log_path(elsewhere) == tmp_path / "cache" / "tamer" / "logs" / "tamer.log"


def test_a_stage_off_a_terminal_prints_one_line_when_it_ends(monkeypatch):
    import io

    from rich.console import Console

    from tamer import progress

    monkeypatch.setattr(progress, "console", Console(file=io.StringIO(), force_terminal=False))
    with progress.stage_progress("caption") as update:
        update(3, 10)
        update(10, 10)
    lines = progress.console.file.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caption: 10/10 done in ")


def test_generate_fills_the_noun_and_takes_guidance_from_the_profile_unless_given(tmp_path):
    """Without flags the scales are the configured profile's (tiny: 7.5 text, 3.0 object), the
    placeholder reads "object"; flags win. settings.json records what sampled the images."""
    from model.tamer_model import TamerModel, TamerModelConfig

    folder = tmp_path / "pipeline"
    TamerModel.from_profile("tiny", TamerModelConfig()).save_pretrained(folder)
    image = tmp_path / "ref.png"
    image.write_bytes(png_bytes(gradient()))
    common = ["generate", "--checkpoint", str(folder), "--image", str(image), "--prompt", "a {} on grass",
              "--n", "1", "--steps", "2", "--root", str(tmp_path)]
    plain = invoke(*common, "--out", str(tmp_path / "plain"))
    given = invoke(*common, "--out", str(tmp_path / "given"), "--noun", "square", "--guidance", "4",
                   "--object-guidance", "1.5")
    assert plain.exit_code == 0 and given.exit_code == 0, plain.output + given.output
    plain_settings = json.loads((tmp_path / "plain" / "settings.json").read_text())
    given_settings = json.loads((tmp_path / "given" / "settings.json").read_text())
    assert (plain_settings["guidance_scale"], plain_settings["object_guidance_scale"]) == (7.5, 3.0)
    assert plain_settings["resolved_prompt"] == "a object on grass"
    assert (given_settings["guidance_scale"], given_settings["object_guidance_scale"]) == (4.0, 1.5)
    assert given_settings["resolved_prompt"] == "a square on grass"
    refused = invoke(*common, "--out", str(tmp_path / "refused"), "--guidance", "0")
    assert refused.exit_code == 2 and "--guidance" in refused.output and not (tmp_path / "refused").exists()
