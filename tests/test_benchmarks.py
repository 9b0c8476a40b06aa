"""The benchmark machinery: interleaved repetitions and their summary, the README table made
from result files, the GPU check's CPU dry run, and the kNN client's per-query reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from benchmarks import common, readme_table
from benchmarks.stats_queries import FILLERS, tables_read

REPO = Path(__file__).resolve().parents[1]


# ---- common: interleaved repetitions --------------------------------------------------------
def test_interleaved_alternates_contenders_and_leaves_out_the_warm_up():
    calls: list[str] = []

    def contender(name: str, value: float):
        def run() -> float:
            calls.append(name)
            return value + len(calls)  # each call a different value: shows which are kept
        return run

    samples = common.interleaved({"a": contender("a", 0), "b": contender("b", 100)}, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then A, B, A, B, A, B
    assert samples == {"a": [3.0, 5.0, 7.0], "b": [104.0, 106.0, 108.0]}  # warm-up (1, 102) dropped


def test_interleaved_refuses_no_repetitions():
    with pytest.raises(ValueError, match="repeats"):
        common.interleaved({"a": lambda: 1.0}, repeats=0)


def test_summary_and_paired_bootstrap():
    s = common.summary([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    with pytest.raises(ValueError):
        common.summary([])
    # B is A plus noise that cancels in pairs: a paired interval sees the constant difference
    a = [10.0, 20.0, 15.0, 30.0, 12.0]
    b = [x - 2.0 for x in a]
    p = common.paired(a, b)
    assert p["difference_interval"] == pytest.approx([2.0, 2.0])
    assert p["ratio_median"] == pytest.approx(15.0 / 13.0)
    # a real spread gives an interval around the mean difference
    p = common.paired([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    low, high = p["difference_interval"]
    assert low < p["difference_mean"] == 2.0 < high and low >= 0.0 and high <= 4.0
    with pytest.raises(ValueError, match="equal"):
        common.paired([1.0, 2.0], [1.0])


def test_write_result_goes_where_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TAMER_BENCH_RESULTS", str(tmp_path / "env"))
    path = common.write_result("x", {"figure": 1})
    assert path == tmp_path / "env" / "x.json"
    assert json.loads(path.read_text())["figure"] == 1
    assert common.write_result("y", {}, tmp_path / "given").parent == tmp_path / "given"


# ---- stats: every table a stats query reads is filled ---------------------------------------
def test_stats_benchmark_fills_every_table_the_stats_queries_read():
    from tamer.stats import SECTIONS

    read = set().union(*(tables_read(section.sql) for section in SECTIONS))
    assert {"images", "captions", "quarantine", "pairs"} <= read  # the parser sees them
    assert read <= set(FILLERS)


def test_stats_fillers_match_the_table_schemas():
    import numpy as np

    from storage.schemas import TABLES

    for table, filler in FILLERS.items():
        rows = filler(0, 50, np.random.default_rng(0))
        assert rows.num_rows == 50
        assert rows.cast(TABLES[table]).schema == TABLES[table], table


# ---- the README table ------------------------------------------------------------------------
def _summary(*values: float) -> dict:
    return common.summary(list(values))


def _crafted(folder: Path) -> None:
    folder.mkdir()
    stats = {"benchmark": "stats_queries", "date": "2026-12-01T10:00:00Z",
             "machine": {"cpus": 2, "cuda": None},
             "rows": {"images": 1_000_000, "captions": 1_000_000}, "shards": 20, "repeats": 5,
             "seconds": {"per_class": _summary(0.21, 0.25, 0.23, 0.22, 0.24)},
             "slowest": "per_class"}
    (folder / "stats_queries.json").write_text(json.dumps(stats))
    gpu = {"benchmark": "gpu_check", "date": "2026-12-02T09:00:00Z",
           "machine": {"cpus": 16, "cuda": "NVIDIA H200"}, "shapes": "sd15", "errors": {},
           "sections": {"sampling": {"seconds_per_image": _summary(1.5, 1.7, 1.6)}}}
    (folder / "gpu_check.json").write_text(json.dumps(gpu))
    (folder / "ingest_throughput.json").write_text(json.dumps({"benchmark": "ingest_throughput"}))


def test_readme_table_is_rebuilt_from_the_files(tmp_path):
    results = tmp_path / "results"
    _crafted(results)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Benchmarks\n<!-- bench:start -->\nold figure 9.99\n"
                      "<!-- bench:end -->\nafter\n")
    assert readme_table.main(["--results", str(results), "--readme", str(readme), "--check"]) == 1
    assert readme_table.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old figure 9.99" not in text and text.endswith("<!-- bench:end -->\nafter\n")
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()
             if line.startswith("| `")}
    assert set(lines) == {"`gpu_check`", "`ingest_throughput`", "`stats_queries`"}
    assert "0.23 [0.21, 0.25] s" in lines["`stats_queries`"]  # median [min, max] of the file
    assert "[stats_queries.json](results/stats_queries.json)" in lines["`stats_queries`"]
    assert "1.6 [1.5, 1.7] s/image" in lines["`gpu_check`"] and "NVIDIA H200" in lines["`gpu_check`"]
    assert "unreadable figure" in lines["`ingest_throughput`"]  # a partial file says so
    assert readme_table.main(["--results", str(results), "--readme", str(readme), "--check"]) == 0


def test_left_to_do_row_shows_both_ends_of_the_size_range_and_the_commit_latencies(tmp_path):
    def spread(median: float) -> dict:
        return {"median": median, "min": median / 2, "max": median * 2, "n": 5}

    stages = ("caption_left", "embed_left", "caption_noop", "embed_noop")
    seconds = {str(n): {f"{what}_{side}": spread(n / 1e4 * (3 if side == "before" else 1))
                        for what in stages for side in ("before", "after")} for n in (10_000, 1_000_000)}
    commits = {f"commit_{t}_at_{v}_versions": spread(v / 1e4) for t in ("captions", "images") for v in (1, 50)}
    path = tmp_path / "left_to_do.json"
    path.write_text(json.dumps({"benchmark": "left_to_do", "sizes": [1_000_000, 10_000], "new": 100,
                                "versions": 50, "seconds": seconds, "commit_seconds": commits}))
    line = readme_table.row(path, tmp_path)
    assert "10,000 -> 1,000,000 rows" in line and "at 1 -> 50 versions" in line
    assert "caption_left 1 [0.5, 2] -> 100 [50, 200] (3 [1.5, 6] -> 300 [150, 600])" in line
    assert "images 0.0001 [5e-05, 0.0002] -> 0.005 [0.0025, 0.01]" in line


def test_readme_table_needs_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="bench:start"):
        readme_table.main(["--results", str(tmp_path), "--readme", str(readme)])
    assert readme.read_text() == "# no markers\n"


def test_the_repository_readme_has_the_marked_block():
    text = (REPO / "README.md").read_text()
    assert text.count(readme_table.START) == 1 and text.count(readme_table.END) == 1


# ---- what is left: the quick mode, before vs after ----------------------------------------
def test_left_to_do_quick_mode_times_before_and_after_and_they_agree(tmp_path):
    env = {**os.environ, "TAMER_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "left_to_do.py"), "--quick"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "left_to_do.json").read_text())
    assert result["quick"] and result["before_and_after_agree"]
    stages = {f"{stage}_{kind}_{when}" for stage in ("caption", "embed")
              for kind in ("noop", "left") for when in ("before", "after")}
    assert set(result["seconds"]) == {str(size) for size in result["sizes"]}
    for figures in result["seconds"].values():
        assert set(figures) == stages and all(f["median"] > 0 for f in figures.values())
    assert {name.split("_at_")[0] for name in result["commit_seconds"]} == {
        "commit_captions", "commit_images"}
    assert len(result["commit_seconds"]) == 4 and set(result["growth"]) == stages


# ---- the GPU check's dry run -----------------------------------------------------------------
def test_gpu_check_dry_run_measures_every_section_on_cpu(tmp_path):
    # the script's own 480 s stop is the GPU run's budget; a CPU dry run on shared cores took 56 s
    # alone and passed 480 s beside a training job, so the test gives it the test's own limit
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "TAMER_GPU_CHECK_TIMEOUT": "800"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["device"] == "cpu"
    assert result["errors"] == {}, result["errors"]
    sections = result["sections"]
    assert set(sections) == {"train", "baselines", "sampling", "embed"}
    assert sections["train"]["samples_per_s"]["ray_train"]["median"] > 0
    assert sections["train"]["samples_per_s"]["bare_loop"]["median"] > 0
    assert set(sections["baselines"]["steps_per_s"]) == {"textual_inversion", "dreambooth_lora"}
    assert all(s["median"] > 0 for s in sections["baselines"]["steps_per_s"].values())
    assert sections["sampling"]["seconds_per_image"]["median"] > 0
    assert sections["embed"]["images_per_s"]["model_only"]["median"] > 0


def test_gpu_check_refuses_to_pretend_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from benchmarks import gpu_check

    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.main([])


def test_base_shapes_are_stable_diffusion_1_5():
    from benchmarks.base_shapes import SD15

    assert SD15["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
    assert SD15["unet"]["cross_attention_dim"] == SD15["text_encoder"]["hidden_size"] == 768
    assert SD15["clip"]["vision"]["patch_size"] == 14 and SD15["resolution"] == 512


# ---- the kNN client reads the index record and metadata once, not per query ------------------
def test_latest_index_follows_a_new_build_without_rereading_per_query(tmp_path, monkeypatch):
    from storage import queries
    from storage.shards import ShardStore
    from tasks import index as knn

    store = ShardStore(str(tmp_path / "root"))
    assert knn.latest_index(store) is None
    built = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    record = {"index_path": "/first", "fingerprint": "f", "model_id": "m", "images": 1,
              "texts": 0, "seconds": 1.0, "built_at": built}
    store.write("indexes", pa.Table.from_pylist([record]))
    assert knn.latest_index(store)["index_path"] == "/first"
    reads = []
    query = queries.latest_index
    monkeypatch.setattr(queries, "latest_index", lambda s: reads.append(s) or query(s))
    for _ in range(5):
        knn.latest_index(store)["index_path"] = "mutated by a caller"
    assert reads == [] and knn.latest_index(store)["index_path"] == "/first"
    store.write("indexes", pa.Table.from_pylist([{**record, "index_path": "/second",
                                                  "built_at": built + dt.timedelta(hours=1)}]))
    assert knn.latest_index(store)["index_path"] == "/second" and len(reads) == 1
    # the newest build is the latest, whatever order the table's files list its rows in
    store.write("indexes", pa.Table.from_pylist([{**record, "index_path": "/older"}]))
    assert knn.latest_index(store)["index_path"] == "/second" and len(reads) == 2


# ---- Textual Inversion / DreamBooth-LoRA peers -----------------------------------------------
# diffusers' example scripts are not in the repository: fetch them at the installed version
PEER_SCRIPTS = Path(os.environ.get("TAMER_PEER_SCRIPTS") or REPO.parent / "scratch" / "peers")


def _customization_peer(tmp_path: Path, dreambench: Path, *flags: str) -> dict:
    env = {**os.environ, "TAMER_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(REPO),
           "TAMER_DREAMBENCH": str(dreambench)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.customization_peer", "--quick",
                           *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    method = flags[flags.index("--method") + 1]
    path = tmp_path / f"{method}_peer.json"
    result = json.loads(path.read_text())
    row = readme_table.row(path, tmp_path)
    assert f"`{method}_peer`" in row and "unreadable" not in row and "no formatter" not in row
    return result


@pytest.mark.parametrize("method", ["ti", "lora"])
def test_customization_peer_quick_runs_the_project_side_alone(tmp_path, dreambench, method):
    result = _customization_peer(tmp_path, dreambench, "--method", method)
    assert result["quick"] and result["steps"] == 3 and result["resolution"] == 32
    assert set(result["steps_per_s"]) == {"project"} and result["peer_script"] is None
    assert result["steps_per_s"]["project"]["median"] > 0
    assert result["peak_rss_mib"]["project"]["median"] > 50  # a child with torch, not this test
    assert result["loads"] == {"project": {"loads": True, **(
        {"shape": [1, 32]} if method == "ti" else {"tensors": 64})}}


@pytest.mark.parametrize("method", ["ti", "lora"])
def test_customization_peer_quick_against_the_diffusers_script(tmp_path, dreambench, method):
    from diffusers import __version__

    script = {"ti": "textual_inversion.py", "lora": "train_dreambooth_lora.py"}[method]
    if not (PEER_SCRIPTS / script).is_file():
        pytest.skip(f"diffusers' {script} not found in {PEER_SCRIPTS} (set TAMER_PEER_SCRIPTS; "
                    f"it is fetched from diffusers' examples/ at v{__version__}, not committed)")
    result = _customization_peer(tmp_path, dreambench, "--method", method,
                                 "--peer-script", str(PEER_SCRIPTS))
    assert set(result["steps_per_s"]) == {"project", "peer"}
    assert all(s["median"] > 0 for s in result["steps_per_s"].values())
    assert set(result["project_vs_peer"]) == {"whole_command", "peak_rss"}  # quick: no short run
    assert {side: v["loads"] for side, v in result["loads"].items()} == {"project": True,
                                                                         "peer": True}
    assert result["peer_script"]["file"] == script


def test_marginal_rates_leave_what_every_run_pays_once_out():
    from benchmarks.common import marginal_rate

    # 150 extra steps; start-up (10 s, then 30 s on a loaded round) cancels within each round
    assert marginal_rate(150, [10 + 20.0, 30 + 15.0], [10 + 5.0, 30 + 3.75]) == pytest.approx(
        [10.0, 150 / 11.25])
    with pytest.raises(ValueError, match="more work"):
        marginal_rate(10, [5.0, 4.0], [3.0, 4.5])  # noise larger than the extra steps


def test_customization_peer_figures_and_their_readme_row(tmp_path):
    from benchmarks.customization_peer import compare

    seconds = {"project": [30.0, 40.0], "peer": [60.0, 50.0],  # 200 steps; short: 50 steps
               "project_short": [15.0, 25.0], "peer_short": [30.0, 20.0]}
    rss = {"project": [2**30, 2**30], "peer": [2**31, 2**31]}
    figures = compare(["project", "peer"], 200, 50, seconds, rss)
    assert figures["steps_per_s"]["project"]["values"] == pytest.approx([200 / 30, 5.0])
    assert figures["steps_per_s_without_startup"]["peer"]["values"] == pytest.approx([5.0, 5.0])
    assert figures["project_vs_peer"]["without_startup"]["ratio_median"] == pytest.approx(2.0)
    assert figures["peak_rss_mib"]["peer"]["median"] == 2048
    result = {"benchmark": "ti_peer", "method": "textual_inversion", "quick": False,
              "steps": 200, "resolution": 32, "batch": 4, "machine": {"cpus": 2},
              "peer_script": {"file": "textual_inversion.py"}, **figures,
              "loads": {"project": {"loads": True}, "peer": {"loads": False}},
              "target": "project >= 1.0x peer steps/s (whole command)"}
    (tmp_path / "ti_peer.json").write_text(json.dumps(result))
    row = readme_table.row(tmp_path / "ti_peer.json", tmp_path)
    assert "without start-up: project 10 [10, 10], peer 5 [5, 5]" in row
    assert "peer 2 [2, 2] GiB" in row and "peer NO" in row
    # rounds noisier than the extra steps: no start-up-free figure, the rest stands
    noisy = compare(["project"], 200, 50, {"project": [30.0, 20.0], "project_short": [15.0, 25.0]},
                    {"project": [2**30, 2**30]})
    assert noisy["steps_per_s_without_startup"] == {} and noisy["steps_per_s"]["project"]


def test_customization_peer_refuses_bad_arguments(tmp_path, capsys):
    from benchmarks import customization_peer

    with pytest.raises(SystemExit):
        customization_peer.main(["--method", "ti", "--peer-script", str(tmp_path)])
    assert "textual_inversion.py does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        customization_peer.main(["--method", "lora", "--steps", "10", "--short-steps", "10"])
    assert "--short-steps must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        customization_peer.main(["--method", "dreambooth"])
    assert not list(tmp_path.iterdir())  # refused before any work


def test_base_conditioning_swaps_exactly_the_named_attribute():
    from benchmarks.base_conditioning import SWAPPED, prompts
    from tamer.synth_world import class_prompt, random_subjects, render_views

    data = render_views(random_subjects(3, seed=5), views=4, size=32, seed=1)
    true = prompts(data, None)
    assert true == [class_prompt(data.identity(k), data.scenes[k]) for k in range(len(data))]
    assert prompts(data, "empty") == [""] * len(data)
    for swap in SWAPPED:
        for row, (before, after) in enumerate(zip(true, prompts(data, swap))):
            assert before != after, (swap, before)
            # only that attribute's words moved: the other scene phrases and the shape stay
            kept = [w for w in before.split(", ") if w in after.split(", ")]
            assert len(kept) == len(before.split(", ")) - 1, (swap, before, after)


def test_base_probe_studio_scene_keeps_each_identity_and_only_changes_the_scene():
    from benchmarks.base_probe import concat, easy
    from tamer.synth_world import KEYS, SCENE_KEYS, STUDIO, random_subjects, render_views

    data = render_views(random_subjects(3, seed=5), views=2, size=32, seed=1)
    simple = easy(data, 32)
    identity_columns = [KEYS.index(k) for k in KEYS if k not in SCENE_KEYS]
    assert torch.equal(simple.labels[:, identity_columns], data.labels[:, identity_columns])
    assert all(scene.attributes() == STUDIO for scene in simple.scenes)
    assert [s.variation for s in simple.scenes] == [s.variation for s in data.scenes]
    assert not torch.equal(simple.pixels, data.pixels) and simple.masks.sum() > 0
    both = concat(data, simple)
    assert len(both) == 12 and [both.identity(k) for k in range(6, 12)] == [data.identity(k) for k in range(6)]


def test_shape_check_runs_both_families_at_the_tiny_shapes(tmp_path, monkeypatch):
    from benchmarks import shape_check
    from benchmarks.base_shapes import SDXL, TINY_SDXL

    # the tiny SDXL layout is SDXL's: the same added-conditioning arithmetic at small sizes
    for shapes in (SDXL, TINY_SDXL):
        unet, second = shapes["unet"], shapes["text_encoder_2"]
        assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + second["projection_dim"]
        assert unet["cross_attention_dim"] == shapes["text_encoder"]["hidden_size"] + second["hidden_size"]
    monkeypatch.setenv("TAMER_BENCH_RESULTS", str(tmp_path / "results"))
    assert shape_check.main(["--shapes", "tiny", "tiny-sdxl"]) == 0
    written = json.loads((tmp_path / "results" / "shape_check.json").read_text())["checks"]
    assert {name: r["family"] for name, r in written.items()} == {"tiny": "sd", "tiny-sdxl": "sdxl"}
    assert all(r["ok"] and r["sample_shape"] == [1, 3, 32, 32] for r in written.values())


def test_vit_shape_curve_reads_every_model_at_every_mark(tmp_path):
    from benchmarks import vit_shape_curve

    plot = tmp_path / "curve.png"
    assert vit_shape_curve.main(["--objects", "6", "--held-out", "5", "--steps", "4", "--every", "2", "--batch", "4",
                                 "--plot", str(plot), "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "vit_shape_curve.json").read_text())
    assert result["training_renders"] == 12 and len(result["curves"]) == 4
    for points in result["curves"].values():
        assert [p["step"] for p in points] == [2, 4]
        assert all(p["accuracy"] in {k / 5 for k in range(6)} for p in points)  # a share of the 5 held-out views
        assert 0 < points[0]["train_s"] < points[1]["train_s"]
    assert plot.stat().st_size > 0
    row = readme_table.row(tmp_path / "vit_shape_curve.json", tmp_path)
    assert "unreadable" not in row and "vit, 8 px patches: 2 " in row


def test_vit_shape_curve_reuses_the_curves_of_the_same_settings_only(tmp_path):
    """`--reuse` keeps an earlier run's curves for the same settings (training is deterministic)
    and trains the models the file lacks; other settings train everything again."""
    from benchmarks import vit_shape_curve

    small = ["--objects", "6", "--held-out", "5", "--steps", "2", "--every", "2", "--batch", "4",
             "--plot", str(tmp_path / "curve.png"), "--results", str(tmp_path)]
    assert vit_shape_curve.main(small) == 0
    path = tmp_path / "vit_shape_curve.json"
    first = json.loads(path.read_text())
    first["curves"]["cnn (oracle)"][0]["train_s"] = -1.0  # a mark: kept curves keep it
    del first["curves"]["vit, 8 px patches"]
    path.write_text(json.dumps(first))
    assert vit_shape_curve.main(small + ["--reuse"]) == 0
    reused = json.loads(path.read_text())["curves"]
    assert list(reused) == list(first["curves"])[:3] + ["vit, 8 px patches"]  # the script's order
    assert reused["cnn (oracle)"][0]["train_s"] == -1.0
    assert reused["vit, 8 px patches"][0]["train_s"] > 0  # the missing model trained
    assert small[4:6] == ["--steps", "2"]
    assert vit_shape_curve.main([*small[:5], "3", *small[6:], "--reuse"]) == 0  # 3 steps: other settings
    assert json.loads(path.read_text())["curves"]["cnn (oracle)"][0]["train_s"] > 0



def test_tower_curve_reads_both_towers_heads_at_every_mark(tmp_path):
    from benchmarks import tower_curve

    plot = tmp_path / "curve.png"
    assert tower_curve.main(["--objects", "6", "--held-out", "5", "--steps", "4", "--every", "2", "--batch", "4",
                             "--width", "32", "--plot", str(plot), "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tower_curve.json").read_text())
    assert result["training_renders"] == 12 and list(result["curves"]) == list(tower_curve.TOWERS)
    for points in result["curves"].values():
        assert [p["step"] for p in points] == [2, 4]
        assert all(value in {k / 5 for k in range(6)} for p in points for value in p["accuracy"].values())
        assert all(p["mean"] == pytest.approx(sum(p["accuracy"].values()) / 10) for p in points)
    assert plot.stat().st_size > 0
    row = readme_table.row(tmp_path / "tower_curve.json", tmp_path)
    assert "unreadable" not in row and "conv stem: 2 " in row


def test_captioner_vocab_cost_times_both_vocabularies_of_the_recipes_captioning_job(tmp_path):
    from benchmarks import captioner_vocab_cost

    assert captioner_vocab_cost.main(["--objects", "6", "--steps", "1", "--repeats", "2",
                                      "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "captioner_vocab_cost.json").read_text())
    assert result["vocab_size"]["bert"] == 30524 and result["vocab_size"]["captions"] < 200
    assert all(result["seconds_per_step"][v]["n"] == 2 for v in ("bert", "captions"))
    minutes = result["phase_minutes"]["bert"]
    assert minutes == pytest.approx(result["recipe_steps"] * result["seconds_per_step"]["bert"]["median"] / 60)
    row = readme_table.row(tmp_path / "captioner_vocab_cost.json", tmp_path)
    assert "unreadable" not in row and "30524 tokens" in row
