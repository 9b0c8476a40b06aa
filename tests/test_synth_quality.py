"""The synth-quality benchmark end to end in its `--smoke` setting on the smoke synth profile
(tests/conftest.py): every stage runs (ours + ablations, Textual Inversion, scoring, report) and
the JSON is complete and sane."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import synth_quality
from benchmarks.synthq_measure import MEASURES
from tasks.profile_roles import Recipe, recipe

METHODS = {"real", "copy_reference", "text_only", "ours", "ours_no_crossref", "ours_no_idloss",
           "ours_adapter_only", "textual_inversion"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, smoke_profile) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("synth_quality")
    assert synth_quality.main(["--smoke", "--profile", str(smoke_profile[0]), "--out", str(out)]) == 0
    return json.loads((out / "synth_quality.json").read_text()), out


def test_every_method_has_a_row_with_valid_ranges(smoke):
    result, out = smoke
    assert set(result["summary"]) == METHODS
    for method, entry in result["summary"].items():
        assert entry["objects"] == recipe("smoke").held_out, method
        for measure in MEASURES:
            low, high = (0.0, 1.0) if measure.endswith(("acc", "exact")) else (-1.0, 1.0)
            assert low - 1e-6 <= entry[measure] <= high + 1e-6, (method, measure)
            assert all(math.isnan(v) or low - 1e-6 <= v <= high + 1e-6 for v in entry[f"{measure}_ci"])
    assert {"index.html", "report.md", "accuracy.png", "samples.png"} <= {p.name for p in out.iterdir()}
    assert "Targets" in (out / "index.html").read_text()
    assert Recipe(**result["recipe"]) == recipe("smoke")  # the profile's, not a copy


def test_copying_the_reference_beats_text_only_and_ti_has_a_cost(smoke):
    result, _ = smoke
    copy, text_only = result["summary"]["copy_reference"], result["summary"]["text_only"]
    assert copy["clip_i"] > text_only["clip_i"]
    assert result["summary"]["textual_inversion"]["cost_s"] > 0


def _entry(identity: tuple[float, float, float], prompt: float, cost_s: float) -> dict:
    mean, low, high = identity
    return {"identity_acc": mean, "identity_acc_ci": (low, high), "prompt_acc": prompt, "cost_s": cost_s}


def test_targets_are_judged_from_intervals_costs_and_prompt_ratio():
    from benchmarks.synthq_report import targets

    text_only = _entry((0.40, 0.35, 0.45), 0.90, 0.0)
    good = {"ours": _entry((0.70, 0.62, 0.78), 0.80, 0.1), "text_only": text_only,
            "textual_inversion": _entry((0.80, 0.74, 0.86), 0.85, 200.0)}
    assert [t["met"] for t in targets(good)] == [True, True, True, True]
    bad = {**good, "ours": _entry((0.44, 0.40, 0.50), 0.60, 1.0)}  # overlaps text-only; 200x; 0.6 < 0.72
    assert [t["met"] for t in targets(bad)] == [False, False, False, False]


def test_text_to_image_pipeline_samples_pixels_with_a_clipping_scheduler():
    """StableDiffusionPipeline's constructor turns `clip_sample` off (right for latents); in pixel
    space that let x0 estimates run to +-200 and every method sampled saturated noise. The
    benchmark's pipeline must equal a plain clipping DDIM loop over the same UNet."""
    import torch
    from diffusers import DDIMScheduler
    from transformers import CLIPModel

    from model.base_family import token_ids
    from model.pixel_base import build_unet, scheduler, sd_pipeline, text_encoder_from_clip
    from tasks.profile_roles import clip_config, clip_processor

    torch.manual_seed(0)
    processor = clip_processor(32)
    text_encoder = text_encoder_from_clip(CLIPModel(clip_config(32)))
    unet = build_unet(32, text_encoder.config.hidden_size).eval()
    prompts, start = ["a circle, on a wooden surface"] * 2, torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = text_encoder(token_ids(processor.tokenizer, prompts))[0]
        ddim = DDIMScheduler.from_config(scheduler().config)
        ddim.set_timesteps(5)
        expected = start.clone()
        for t in ddim.timesteps:
            expected = ddim.step(unet(expected, t, encoder_hidden_states=states).sample, t, expected).prev_sample
        pipe = sd_pipeline(unet, text_encoder, processor.tokenizer)
        got = pipe(prompts, guidance_scale=1.0, num_inference_steps=5, output_type="latent", latents=start.clone()).images
    assert pipe.scheduler.config.clip_sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert got.abs().max() <= 1.0 + 1e-5
