"""Customize tab: one reference photo (uploaded or from the dataset) + a prompt -> images.

Generation is `model.generate.generate`, the function behind `tamer generate`, on the chosen
run's exported pipeline; uploads pass `tamer generate --image`'s validation and are stored
normalized (upright RGB), so the same inputs give the same images.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from tamer.app.reader import AppContext
from tamer.app.uploads import UserError, stored_image, validated_upload

MAX_IMAGES = 8
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    images: list[Image.Image]
    seconds: float
    run_id: str
    resolved_prompt: str


def usable_runs(ctx: AppContext) -> list[dict[str, Any]]:
    """Completed runs with an exported pipeline on this machine, newest first."""
    from tasks.runs import COMPLETED, list_runs

    return [run for run in list_runs(ctx.store) if run["status"] == COMPLETED
            and run["pipeline_uri"] and Path(run["pipeline_uri"]).is_dir()]


def run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, run id) for the run dropdown; the first is the default (the latest)."""
    return [(f"{run['run_id']} ({json.loads(run['config']).get('profile', '?')}, "
             f"step {run['step'] or 0})", run["run_id"]) for run in usable_runs(ctx)]


def dataset_choices(ctx: AppContext, limit: int = 500) -> list[tuple[str, str]]:
    """(label, image id) of dataset images to pick a reference from."""
    rows = ctx.rows("SELECT image_id, subject, class_name, source FROM images "
                    "ORDER BY subject NULLS LAST, source LIMIT ?", [limit])
    return [(f"{row['subject'] or '(no subject)'} · {row['class_name'] or '?'} · "
             f"{Path(row['source']).name}", row["image_id"]) for row in rows]


def class_of(ctx: AppContext, image_id: str) -> str | None:
    """The class noun stored with a dataset image (what training captions call it)."""
    found = ctx.rows("SELECT class_name FROM images WHERE image_id = ?", [image_id])
    return found[0]["class_name"] if found else None


def profile_defaults(ctx: AppContext) -> tuple[str, float, float]:
    """(prompt, text guidance, object guidance) the tab starts at: the configured profile's, as
    in `tamer eval` and `tamer generate` (the synth base draws dark fields at SD's scales, and
    for prompts not in the caption form it learned)."""
    from model.profiles import load_profile

    profile = load_profile(ctx.config.profile)
    return profile.example_prompt, profile.guidance_scale, profile.object_guidance_scale


def customize(ctx: AppContext, run_id: str | None, reference: Path | str | None, prompt: str,
              text_guidance: float, object_guidance: float, seed: int, n: int, steps: int,
              class_noun: str | None = None) -> Result:
    """Images of the reference's object for `prompt` ("{}" becomes `class_noun`, else
    "object"), from the run's pipeline."""
    from model.generate import SETTINGS_FILE, generate

    run = next((run for run in usable_runs(ctx) if run["run_id"] == run_id), None)
    if run is None:
        raise UserError("choose a completed training run (tamer run or tamer train makes one)")
    if not reference or not Path(reference).is_file():
        raise UserError("upload a photo of the object, or pick a dataset image")
    if not prompt or not prompt.strip():
        raise UserError('type a prompt, with "{}" where the object goes')
    if not 1 <= int(n) <= MAX_IMAGES:
        raise UserError(f"number of images: 1 to {MAX_IMAGES}")
    out = ctx.work_dir / "outputs" / uuid.uuid4().hex
    started = time.perf_counter()
    try:
        paths = generate(run["pipeline_uri"], reference, prompt.strip(), n=int(n), seed=int(seed),
                         out_dir=out, steps=int(steps), guidance_scale=float(text_guidance),
                         object_guidance_scale=float(object_guidance),
                         class_noun=(class_noun or "").strip() or None)
        seconds = time.perf_counter() - started
        images = [_loaded(path) for path in paths]
        resolved = json.loads((out / SETTINGS_FILE).read_text())["resolved_prompt"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return Result(images, seconds, run["run_id"], resolved)


def _loaded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.copy()


def build(ctx: AppContext, demo) -> None:
    """The tab's components and events, inside `demo` (a `gr.Blocks`); choices refresh on
    every page load, so new runs and images show without a restart."""
    import gradio as gr

    reference = gr.State(None)  # path of the validated, normalized reference
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Reference photo (one image of the object)", type="filepath",
                             height=140, elem_id="upload")
            pick = gr.Dropdown(label="... or a dataset image", choices=[], value=None,
                               elem_id="pick")
            preview = gr.Image(label="Reference", interactive=False, height=160,
                               elem_id="reference")
        with gr.Column(scale=2):
            prompt_default, text_default, object_default = profile_defaults(ctx)
            with gr.Row():
                prompt = gr.Textbox(label='Prompt ("{}" stands for the object)',
                                    value=prompt_default, elem_id="prompt", scale=3)
                noun = gr.Textbox(label="Word for {}", placeholder="object", scale=1,
                                  elem_id="noun")
            run = gr.Dropdown(label="Training run (completed, newest first)", choices=[],
                              elem_id="run")
            with gr.Row():
                text_guidance = gr.Slider(1.0, 15.0, value=text_default, step=0.5, label="Text guidance")
                object_guidance = gr.Slider(0.0, 10.0, value=object_default, step=0.5,
                                            label="Object guidance")
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images", elem_id="count")
                steps = gr.Slider(1, 100, value=30, step=1, label="Sampling steps",
                                  elem_id="steps")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
    status = gr.Markdown(elem_id="customize-status")
    gallery = gr.Gallery(label="Generated", columns=4, height=360, object_fit="contain",
                         elem_id="generated")

    def on_upload(path: str | None):
        if not path:
            return None, None, ""
        try:
            kept = validated_upload(ctx, path)
        except UserError as exc:
            return None, None, f"**{exc}**"
        return str(kept), str(kept), "reference ready"

    def on_pick(image_id: str | None):
        if not image_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        kept = stored_image(ctx, image_id)
        return str(kept), str(kept), class_of(ctx, image_id) or "", "reference: a dataset image"

    def on_generate(run_id, path, text, word, tg, og, seed_value, count, step_count):
        try:
            result = customize(ctx, run_id, path, text, tg, og, int(seed_value or 0),
                               int(count), int(step_count), class_noun=word)
        except UserError as exc:
            return [], f"**{exc}**"
        except Exception as exc:  # noqa: BLE001 - one line on the page, the traceback logged
            LOG.exception("generation failed")
            return [], f"**generation failed: {type(exc).__name__}: {exc}**"
        return result.images, (f"{len(result.images)} image(s) in {result.seconds:.1f} s "
                               f"from {result.run_id}: \"{result.resolved_prompt}\"")

    def on_load():
        runs, images = run_choices(ctx), dataset_choices(ctx)
        return (gr.Dropdown(choices=runs, value=runs[0][1] if runs else None),
                gr.Dropdown(choices=images, value=None))

    upload.change(on_upload, upload, [reference, preview, status])
    pick.change(on_pick, pick, [reference, preview, noun, status])
    go.click(on_generate, [run, reference, prompt, noun, text_guidance, object_guidance, seed, n,
                           steps], [gallery, status])
    demo.load(on_load, None, [run, pick], show_progress="hidden")
