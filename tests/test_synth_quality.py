"""The synth-quality benchmark end to end in its `--smoke` setting on the smoke synth profile
(tests/conftest.py): every stage runs (ours + ablations, Textual Inversion, scoring, report) and
the JSON is complete and sane."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import synth_quality
from benchmarks.synthq_measure import HITS, MEASURES
from tasks.profile_roles import Recipe, recipe

METHODS = {"real", "copy_reference", "text_only", "ours", "ours_no_crossref", "ours_no_idloss",
           "ours_adapter_only", "ours_no_masking", "textual_inversion"}


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


def _rows(method: str, identity: list[float], prompt: float = 0.9) -> list[dict]:
    """Two images per held-out object for `method`, with these per-object identity accuracies."""
    others = dict.fromkeys(MEASURES + HITS, 0.0)
    return [{**others, "method": method, "object": k, "identity_acc": value, "prompt_acc": prompt}
            for k, value in enumerate(identity) for _ in range(2)]


def test_every_method_samples_the_same_noise_per_prompt():
    """Paired differences compare methods on the same prompts and seeds: each method's sampler
    gets generators in the same state, whatever the methods before it drew."""
    from benchmarks.synth_quality import SMOKE, sampling

    first = sampling(SMOKE, 3, 2)["generator"]
    drawn = [torch.randn(4, generator=g) for g in first]  # a method samples
    again = [torch.randn(4, generator=g) for g in sampling(SMOKE, 3, 2)["generator"]]
    assert all(torch.equal(a, b) for a, b in zip(drawn, again))
    assert not torch.equal(drawn[0], drawn[1])  # prompts and seeds differ from each other


def test_paired_differences_decide_what_overlapping_intervals_cannot():
    """Objects differ a lot in difficulty, so the per-method intervals overlap; ours is 0.05
    above text-only on every object, so the paired interval is above 0. Against TI the gain
    flips sign by object, so its interval straddles 0."""
    from benchmarks.synthq_measure import paired_differences, summarize

    hard_to_easy = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.6, 0.8]
    rows = (_rows("ours", [v + 0.05 for v in hard_to_easy]) + _rows("text_only", hard_to_easy)
            + _rows("textual_inversion", [v + (0.2 if k % 2 else -0.1) for k, v in enumerate(hard_to_easy)]))
    summary, differences = summarize(rows), paired_differences(rows)
    ours_low, text_high = summary["ours"]["identity_acc_ci"][0], summary["text_only"]["identity_acc_ci"][1]
    assert ours_low < text_high  # per-method intervals overlap ...
    low, high = differences["text_only"]["identity_acc"]["ci"]
    assert differences["text_only"]["identity_acc"]["mean"] == pytest.approx(0.05)
    assert 0 < low < high  # ... the paired difference does not
    assert differences["textual_inversion"]["identity_acc"]["ci"][0] < 0 < differences["textual_inversion"]["identity_acc"]["ci"][1]
    assert set(differences) == {"text_only", "textual_inversion"}


def test_targets_are_judged_from_paired_differences_costs_and_prompt_ratio():
    from benchmarks.synthq_measure import paired_differences, summarize
    from benchmarks.synthq_report import targets

    base = [0.2, 0.4, 0.6, 0.3]
    text_only, ti = _rows("text_only", base, 0.9), _rows("textual_inversion", [v + 0.1 for v in base], 0.9)

    def judged(ours: list[dict], ti_cost: float) -> list[bool]:
        rows = ours + text_only + ti
        summary = summarize(rows)
        summary["ours"]["cost_s"], summary["textual_inversion"]["cost_s"] = 0.1, ti_cost
        return [t["met"] for t in targets(summary, paired_differences(rows))]

    assert judged(_rows("ours", [v + 0.2 for v in base], 0.8), 200.0) == [True, True, True, True]
    # above text-only but not TI; prompt 0.6 < 0.8 x 0.9; 200x cheaper only
    assert judged(_rows("ours", [v + 0.1 for v in base], 0.6), 20.0) == [True, False, False, False]


@pytest.mark.parametrize("sampler", ["ddim", "default"])
def test_text_to_image_pipeline_samples_pixels_with_a_clipping_scheduler(sampler):
    """StableDiffusionPipeline's constructor turns `clip_sample` off (right for latents); in pixel
    space that let x0 estimates run to +-200 and every method sampled saturated noise. The
    benchmark's pipeline must equal a plain clipping loop over the same UNet with the sampler's
    scheduler: DDIM, or the base's own DDPM schedule drawing its step noise from the generator."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler
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
        loop = (DDIMScheduler if sampler == "ddim" else DDPMScheduler).from_config(scheduler().config)
        loop.set_timesteps(5)
        expected, noise = start.clone(), torch.Generator().manual_seed(3)
        for t in loop.timesteps:
            output = unet(expected, t, encoder_hidden_states=states).sample
            expected = loop.step(output, t, expected, generator=noise).prev_sample
        pipe = sd_pipeline(unet, text_encoder, processor.tokenizer, sampler)
        got = pipe(prompts, guidance_scale=1.0, num_inference_steps=5, output_type="latent", latents=start.clone(),
                   generator=torch.Generator().manual_seed(3)).images
        again = pipe(prompts, guidance_scale=1.0, num_inference_steps=5, output_type="latent", latents=start.clone(),
                     generator=torch.Generator().manual_seed(4)).images
    assert type(pipe.scheduler) is type(loop) and pipe.scheduler.config.clip_sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert got.abs().max() <= 1.0 + 1e-5
    # DDIM (eta 0) is deterministic given the start; the ancestral sampler draws new step noise
    assert torch.allclose(got, again, atol=1e-5) == (sampler == "ddim")


def test_base_sampler_compares_both_samplers_on_the_same_prompts(tmp_path, smoke_profile):
    """Both prompt sets, both samplers, every held-out object; the paired difference is the
    difference of the two accuracies (equal samples per object), so rows carry the right labels."""
    from benchmarks import base_sampler

    assert base_sampler.main(["--profile", str(smoke_profile[0]), "--steps", "2", "--results", str(tmp_path)]) == 0
    sets = json.loads((tmp_path / "base_sampler.json").read_text())["sets"]
    held_out = recipe("smoke").held_out
    for name, (scenes, _, _) in base_sampler.SETS.items():
        entry = sets[name]
        assert entry["samples"] == held_out * scenes
        assert set(entry["accuracy"]) == {"ddim", "default"}
        for key in base_sampler.READ:
            difference = entry["default_minus_ddim"][key]
            assert difference["objects"] == held_out
            assert difference["mean"] == pytest.approx(entry["accuracy"]["default"][key] - entry["accuracy"]["ddim"][key])
