"""TamerPipeline and generate(): save/load round trip, schedulers, guidance, one encoder pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from model_fixtures import make_batch, synthetic_object, tiny_model
from PIL import Image

from model.base_family import Conditioning
from model.generate import SETTINGS_FILE, fill_placeholder, generate
from model.pipeline import ADAPTER_FILE, TamerPipeline
from model.tamer_model import CONFIG_FILE, TamerModel

STEPS = 3


def _reference(tmp_path) -> Image.Image:
    array = ((synthetic_object(7, 40).permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    image = Image.fromarray(array)
    image.save(tmp_path / "ref.png")
    return image


def _run(pipe, reference, seed=0, **kwargs) -> np.ndarray:
    return pipe("a photo of a square", object_image=reference, num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A briefly trained model saved with save_pretrained (so weights are not at their init)."""
    model = tiny_model(trainable="full")
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for step in range(2):
        model.training_step(make_batch(model, 2), torch.Generator().manual_seed(step))["total"].backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path)
    return model, path


def test_save_load_generate_is_identical(checkpoint, tmp_path):
    model, path = checkpoint
    reference = _reference(tmp_path)
    model.pipe.set_progress_bar_config(disable=True)
    before = _run(model.pipe, reference, num_images_per_prompt=2)
    loaded = TamerPipeline.from_pretrained(path)
    loaded.set_progress_bar_config(disable=True)
    assert before.shape == (2, 32, 32, 3) and before.dtype == np.float32
    np.testing.assert_array_equal(_run(loaded, reference, num_images_per_prompt=2), before)
    assert not np.array_equal(_run(loaded, reference, seed=1, num_images_per_prompt=2), before)
    assert TamerModel.from_pretrained(path).config == model.config


def test_base_components_load_unchanged(checkpoint):
    from diffusers import UNet2DConditionModel

    model, path = checkpoint
    assert (path / ADAPTER_FILE).is_file() and (path / CONFIG_FILE).is_file()
    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    assert set(unet.state_dict()) == {k for k in model.unet.state_dict() if ".processor." not in k}


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler])
def test_any_compatible_scheduler(checkpoint, tmp_path, scheduler_cls):
    pipe = TamerPipeline.from_pretrained(checkpoint[1])
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    images = _run(pipe, _reference(tmp_path))
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()
    np.testing.assert_array_equal(_run(pipe, _reference(tmp_path)), images)


def test_one_encoder_pass_serves_many_prompts(checkpoint, tmp_path):
    pipe = checkpoint[0].pipe
    reference = _reference(tmp_path)
    embeds = pipe.encode_object(reference)
    assert embeds.shape == (1, pipe.config.num_object_tokens, pipe.unet.config.cross_attention_dim)
    direct = _run(pipe, reference)
    via_embeds = pipe("a photo of a square", object_embeds=embeds, num_inference_steps=STEPS,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(via_embeds, direct)
    two = pipe(["a red square", "a blue square"], object_embeds=embeds, num_inference_steps=STEPS,
               num_images_per_prompt=2, output_type="np").images
    assert two.shape == (4, 32, 32, 3)
    with pytest.raises(ValueError):
        pipe("x", object_image=reference, object_embeds=embeds)


def test_guidance_scales_one_is_plain_conditional_sampling(checkpoint):
    pipe = checkpoint[0].pipe
    eps = torch.randn(3, 4, 2, 2)
    e00, e0o, eto = eps.chunk(3)
    torch.testing.assert_close(pipe.combine_guidance(eps, 1.0, 1.0), eto)
    torch.testing.assert_close(pipe.combine_guidance(eps, 0.0, 0.0), e00)
    torch.testing.assert_close(pipe.combine_guidance(eps, 0.0, 1.0), e0o)
    text = Conditioning(torch.randn(2, 5, 32), {"text_embeds": torch.randn(2, 3)})
    uncond = Conditioning(torch.zeros(2, 5, 32), {"text_embeds": torch.zeros(2, 3)})
    objects = torch.randn(2, 4, 32)
    unguided = pipe.conditioning(text, None, objects, guided=False)
    guided = pipe.conditioning(text, uncond, objects, guided=True)
    assert unguided.states.shape == (2, 9, 32) and guided.states.shape == (6, 9, 32)
    assert (guided.states[:2, 5:] == 0).all() and torch.equal(guided.states[2:4, 5:], objects)
    assert torch.equal(guided.states[4:], unguided.states)
    # added conditioning (SDXL) follows its branch: negative, negative, prompt
    assert (guided.added["text_embeds"][:4] == 0).all()
    assert torch.equal(guided.added["text_embeds"][4:], text.added["text_embeds"])


def test_generate_writes_pngs_and_settings_deterministically(checkpoint, tmp_path):
    _reference(tmp_path)
    kwargs = dict(checkpoint_dir=checkpoint[1], reference_image_path=tmp_path / "ref.png",
                  prompt="a {} on the beach", n=2, seed=7, steps=STEPS, class_noun="square", device="cpu")
    first = generate(out_dir=tmp_path / "a", **kwargs)
    second = generate(out_dir=tmp_path / "b", **kwargs)
    assert [p.name for p in first] == [p.name for p in second] and len(first) == 2
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    settings = json.loads((tmp_path / "a" / SETTINGS_FILE).read_text())
    assert settings["resolved_prompt"] == "a square on the beach" and settings["seed"] == 7
    assert fill_placeholder("a {} here", None) == "a object here"
