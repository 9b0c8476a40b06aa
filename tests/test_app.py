"""`tamer app`: each tab's functions on a real root (synth renders + a hostile source, ingested
serially; a tiny saved pipeline registered as training runs), without a browser."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from hostile import MAX_BYTES, bomb_png, gradient, png_bytes, rotated_jpeg
from PIL import Image
from typer.testing import CliRunner

from tamer.config import load_config

pytest.importorskip("gradio", reason="gradio is not installed (make install)")

from tamer.app import customize, dataset, runs  # noqa: E402
from tamer.app.reader import AppContext  # noqa: E402
from tamer.app.uploads import UserError, stored_image, validated_upload  # noqa: E402
from app_data import build_root  # noqa: E402


@pytest.fixture(scope="module")
def app_root(tmp_path_factory):
    ctx, expect = build_root(tmp_path_factory.mktemp("app"))
    yield ctx, expect
    ctx.close()


@pytest.fixture(scope="module")
def ctx(app_root) -> AppContext:
    return app_root[0]


# --- Dataset ---------------------------------------------------------------------------------

def test_counts_are_tamer_stats(ctx):
    from tamer.cli import app

    done = CliRunner().invoke(app, ["stats", "--json", "--root", ctx.config.root])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.output)
    shown = dataset.counts(ctx)
    assert shown["overview"]["images"] == printed["overview"]["images"] == 9 + 15
    for key in ("per_subject", "quarantine_reasons", "duplicates", "near_duplicates"):
        same_json = json.loads(json.dumps(shown[key], default=str))
        # ties in a section's ORDER BY come back in any order
        assert sorted(same_json, key=json.dumps) == sorted(printed[key], key=json.dumps), key
    assert f"**{printed['overview']['images']}** images" in dataset.overview_text(shown)


def test_quarantine_shows_every_reason_of_a_hostile_source(app_root):
    ctx, expect = app_root
    rows = dataset.quarantine(ctx)
    wanted = {e["reason"] for e in expect.values() if e["outcome"] == "quarantined"}
    assert wanted <= {row["reason"] for row in rows}
    bomb = next(row for row in rows if row["source"].endswith("flat/bomb.png"))
    assert bomb["reason"] == "decompression_bomb" and "decompression bomb" in bomb["detail"]


def test_subject_images_carry_their_captions_and_attributes(ctx):
    choices = dataset.subjects(dataset.counts(ctx))
    subject = next(value for label, value in choices if value.startswith("obj"))
    gallery, table = dataset.subject_images(ctx, subject)
    assert len(gallery) == len(table) == 3
    assert all(isinstance(image, Image.Image) and image.size == (64, 64) for image, _ in gallery)
    assert [row["composed caption"] for row in table] == [caption for _, caption in gallery]
    captioned = [row for row in table if row["raw caption"].startswith("raw words")]
    assert captioned and captioned[0]["attributes"] == "color: red (0.90), shape: star (0.40)"
    assert dataset.subject_images(ctx, "no-such-subject") == ([], [])


def test_near_duplicates_are_joined_into_clusters(ctx):
    found = dataset.clusters(ctx)
    assert [len(c["images"]) for c in found] == [3, 2]
    assert found[0]["max_cosine"] == pytest.approx(0.97) and found[1]["max_cosine"] == \
        pytest.approx(0.99)
    gallery = dataset.cluster_gallery(ctx, found[0]["images"])
    assert len(gallery) == 3 and all(label.startswith("obj") for _, label in gallery)


def test_pairs_show_the_newest_snapshot_reference_then_target(ctx):
    assert dataset.pair_groups(ctx) == [("obj-group · 2 pairs", "obj-group")]
    labels = [label.split()[0] for _, label in dataset.pair_gallery(ctx, "obj-group")]
    assert labels == ["reference", "target", "reference", "target"]


def test_search_by_image_finds_it_first_and_by_text_finds_k(ctx, tmp_path):
    _, image_id = next(c for c in customize.dataset_choices(ctx) if c[0].startswith("obj00001"))
    query = tmp_path / "query.png"
    query.write_bytes(ctx.image_bytes(image_id))
    gallery, status = dataset.search(ctx, None, str(query), k=4)
    assert status == "4 nearest images (via faiss)" and len(gallery) == 4
    image, label = gallery[0]
    assert label.startswith("1. ") and "obj00001" in label
    assert float(label.split()[1]) == pytest.approx(1.0, abs=1e-2)
    assert np.array_equal(np.asarray(image), np.asarray(ctx.images([image_id])[image_id]))
    assert dataset.search(ctx, "a red toy 0", None, k=5)[1] == "5 nearest images (via faiss)"


def test_search_refuses_bad_queries_and_says_when_there_is_no_index(ctx, tmp_path):
    assert dataset.search(ctx, "", None) == ([], "give either a text or an image (not both)")
    assert dataset.search(ctx, "a star", "x.png")[1].startswith("give either")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    assert "not usable: decompression_bomb" in dataset.search(ctx, None, str(bomb))[1]
    empty = AppContext(load_config(root=str(tmp_path / "empty")))
    gallery, status = dataset.search(empty, "a red star", None)
    assert gallery == [] and status.startswith("no search index") and "tamer index" in status
    empty.close()


# --- Customize -------------------------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"<html><body>not a photo</body></html>", "not_an_image"),
    (bomb_png(), "decompression_bomb"),
    (png_bytes(gradient((64, 64)), format="JPEG")[:400], "truncated"),
    (b"", "empty"),
    (b"\x00" * (MAX_BYTES + 1), "too_large"),
])
def test_bad_uploads_are_refused_with_the_reason(ctx, tmp_path, data, reason):
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(UserError, match=f"not usable: {reason}"):
        validated_upload(ctx, str(path))


def test_uploads_are_kept_upright_and_rgb(ctx, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(rotated_jpeg())
    with Image.open(validated_upload(ctx, str(path))) as kept:
        assert kept.size == (30, 60) and kept.mode == "RGB"
    with pytest.raises(UserError, match="upload a photo"):
        validated_upload(ctx, None)


def test_runs_to_choose_are_completed_newest_first(ctx):
    assert [value for _, value in customize.run_choices(ctx)] == ["train-new", "train-old"]
    assert "(tiny, step 20)" in customize.run_choices(ctx)[0][0]


def test_the_tab_starts_at_the_configured_profiles_prompt_and_scales(ctx):
    from model.profiles import load_profile

    assert ctx.config.profile == "tiny"
    assert customize.profile_defaults(ctx) == ("a photo of a {} on the beach", 7.5, 3.0)
    synth = load_profile("synth")
    prompt, text, obj = customize.profile_defaults(replace(ctx, config=ctx.config.model_copy(update={"profile": "synth"})))
    assert (text, obj) == (synth.guidance_scale, synth.object_guidance_scale) == (2.0, 2.0)
    assert prompt == synth.example_prompt and prompt.startswith("a {}, on green grass, in the center")


def test_same_inputs_give_the_same_images(ctx):
    label, image_id = next(c for c in customize.dataset_choices(ctx) if c[0].startswith("obj0"))
    reference = stored_image(ctx, image_id)
    args = dict(prompt="a {} on the beach", text_guidance=5.0, object_guidance=2.0, n=2, steps=1)
    first = customize.customize(ctx, "train-new", reference, seed=7, **args)
    again = customize.customize(ctx, "train-new", reference, seed=7, **args)
    other = customize.customize(ctx, "train-new", reference, seed=8, **args)
    pixels = [np.asarray(image) for image in first.images]
    assert len(pixels) == 2 and pixels[0].shape == (32, 32, 3) and first.seconds > 0
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, again.images))
    assert not np.array_equal(pixels[0], np.asarray(other.images[0]))
    assert first.resolved_prompt == "a object on the beach"
    named = customize.customize(ctx, "train-new", reference, seed=7, class_noun=" toy ",
                                **args | {"n": 1})
    assert named.resolved_prompt == "a toy on the beach"
    truth = json.loads((Path(ctx.config.root).parent / "synth/obj00000/00.json").read_text())
    assert label.startswith("obj00000 · ")
    assert customize.class_of(ctx, image_id) == truth["class_name"]
    assert not list((ctx.work_dir / "outputs").iterdir())  # outputs are not left behind


@pytest.mark.parametrize("change, message", [
    ({"run_id": "train-failed"}, "choose a completed training run"),
    ({"reference": None}, "upload a photo"),
    ({"prompt": "  "}, "type a prompt"),
    ({"n": 0}, "number of images"),
])
def test_customize_refuses_unusable_inputs(ctx, change, message):
    image_id = customize.dataset_choices(ctx)[0][1]
    args = dict(run_id="train-new", reference=stored_image(ctx, image_id), prompt="a {}",
                text_guidance=5.0, object_guidance=2.0, seed=0, n=1, steps=1) | change
    with pytest.raises(UserError, match=message):
        customize.customize(ctx, **args)


# --- Runs ------------------------------------------------------------------------------------

def test_registry_versions_curve_and_reports(ctx):
    rows = runs.registry(ctx)
    assert [row["run"] for row in rows] == ["train-failed", "train-new", "train-old"]
    assert rows[1] | {"dataset": None} == {
        "run": "train-new", "status": "completed", "profile": "tiny", "step": 20,
        "dataset": None, "started": "2026-12-01 10:00", "minutes": 6.0, "loss": 0.25,
        "error": None}
    assert rows[0]["error"] == "boom"
    pins = {row["table"]: row["version"] for row in runs.versions(ctx, "train-new")}
    assert pins["images"] == str(ctx.store.version("images")) and "pairs" in pins
    curve = runs.loss_curve(ctx, "train-new")
    assert {(row["step"], row["term"]): row["value"] for row in curve}[(20, "loss")] == 0.05
    links = runs.report_links(ctx, "train-new")
    report = os.path.join(ctx.store.location.root, "reports", "eval-1", "index.html")
    assert f"- [eval-1](/gradio_api/file={report}): 1 method(s)" in links
    assert runs.report_links(ctx, "train-old").startswith("not evaluated yet")


# --- The command -----------------------------------------------------------------------------

def test_tamer_app_serves_on_loopback_only_and_cleans_up_on_ctrl_c(ctx, tmp_path):
    """`tamer app` as a user starts it: the page answers, nothing it opened listens beyond
    127.0.0.1 (psutil, the same check as Ray's and Prefect's servers), and Ctrl+C removes
    its scratch folder."""
    import functools
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil
    from sockets import exposed, tree

    from tasks.index import free_port

    port, scratch = free_port(), tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "tamer.cli", "app", "--root", ctx.config.root,
               "--port", str(port)]
    # as from a terminal: a suite started in the background (`&`) passes SIGINT on ignored
    terminal = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                                    "TMPDIR": str(scratch)}, preexec_fn=terminal)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200 and "tamer" in page.read().decode()
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "tamer app did not answer in 120 s"
                time.sleep(0.5)
        assert exposed(tree(psutil.Process(process.pid))) == []
        assert [p.name for p in scratch.glob("tamer-app-*")]  # its scratch folder, in use
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert list(scratch.glob("tamer-app-*")) == []
    finally:
        process.kill()
        process.wait()


# --- In a browser ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(ctx):
    """The app served on a free loopback port, open in headless Debian Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[test])")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from tamer.app.server import launch
    from tasks.index import free_port

    port = free_port()
    demo = launch(ctx, port=port, block=False)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{port}/")
        yield page
        browser.close()
    demo.close()


def _shot(page, name: str, tmp_path) -> None:
    """Screenshots land in $TAMER_APP_SCREENSHOTS when set (to look at), else tmp_path."""
    folder = os.environ.get("TAMER_APP_SCREENSHOTS") or str(tmp_path)
    page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def test_browser_bad_upload_then_upload_and_generate(page, ctx, tmp_path):
    import psutil
    from playwright.sync_api import expect
    from sockets import exposed

    assert exposed([psutil.Process()]) == []  # the app listens on loopback only
    html = tmp_path / "photo-really.png"
    html.write_bytes(b"<html><script>alert(1)</script></html>")
    page.locator("#upload input[type=file]").set_input_files(str(html))
    page.get_by_text("this upload is not usable: not_an_image").wait_for()
    page.reload()
    expect(page.locator("#run input")).to_have_value(re.compile("^train-new "))
    photo = tmp_path / "photo.png"
    photo.write_bytes(ctx.image_bytes(customize.dataset_choices(ctx)[0][1]))
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    page.get_by_text("reference ready").wait_for()
    for slider, value in (("#steps", "2"), ("#count", "2")):
        page.locator(f"{slider} input[type=number]").fill(value)
        page.locator(f"{slider} input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.locator("#customize-status").get_by_text("2 image(s) in").wait_for()
    assert page.locator("#generated img").count() == 2
    assert "from train-new" in page.locator("#customize-status").inner_text()
    _shot(page, "customize", tmp_path)


def test_browser_quarantine_and_runs(page, app_root, tmp_path):
    _, expect = app_root
    page.get_by_role("tab", name="Dataset").click()
    page.get_by_role("tab", name="Quarantine").click()
    table = page.locator("#quarantine")
    table.get_by_text("decompression_bomb").filter(visible=True).first.wait_for()
    shown = table.inner_text()
    wanted = {e["reason"] for e in expect.values() if e["outcome"] == "quarantined"}
    assert {reason for reason in wanted if reason not in shown} == set()
    _shot(page, "quarantine", tmp_path)
    page.get_by_role("tab", name="Subjects").click()
    _shot(page, "subjects", tmp_path)
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-table").get_by_text("train-failed").filter(visible=True).first.wait_for()
    link = page.locator("#reports").get_by_role("link", name="eval-1")
    report = page.request.get(urljoin(page.url, link.get_attribute("href")))
    assert report.ok and "<h1>evaluation eval-1</h1>" in report.text()
    _shot(page, "runs", tmp_path)
