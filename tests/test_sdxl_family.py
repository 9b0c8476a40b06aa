"""The SDXL base family on the tiny-sdxl profile: two text towers and added conditioning reach
the UNet in training, sampling, Textual Inversion and DreamBooth-LoRA, and what the baselines save
loads with diffusers' own SDXL loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import make_batch
from PIL import Image

from model.base_family import FAMILIES, family_of
from model.dreambooth_lora import DreamBoothLoraConfig, load_lora, save_lora, train_dreambooth_lora
from model.finetune import base_pipeline
from model.pipeline import TamerPipeline
from model.profiles import load_profile
from model.tamer_model import TamerModel
from model.textual_inversion import (SDXL_KEYS, TextualInversionConfig, load_learned_embeds, placeholder_tokens,
                                     save_learned_embeds, train_textual_inversion, unload_learned_embeds)
from tamer.model_config import TamerModelConfig

PROFILE = "tiny-sdxl"


def _images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def model() -> TamerModel:
    torch.manual_seed(0)
    return TamerModel.from_profile(PROFILE, TamerModelConfig(trainable="full"))


def test_profile_family_needs_both_text_towers():
    profile = load_profile(PROFILE)
    assert profile.family == "sdxl" and load_profile("tiny").family == "sd"
    roles = dict(profile.roles)
    roles.pop("tokenizer_2")
    with pytest.raises(ValueError, match="second text encoder and tokenizer both"):
        type(profile).model_validate({**profile.model_dump(), "roles": roles})


def test_sdxl_conditioning_is_both_penultimate_states_and_the_pooled_projection(model):
    family = family_of(model.pipe)
    assert family is FAMILIES["sdxl"]
    ids = family.tokenize(model.pipe, ["a red dog", "a blue cat"])
    assert set(ids) == {"input_ids", "input_ids_2"}
    with torch.no_grad():
        text = family.encode(model.pipe, ids, 32)
        second = model.pipe.text_encoder_2(ids["input_ids_2"], output_hidden_states=True)
    width_1 = model.pipe.text_encoder.config.hidden_size
    assert text.states.shape[-1] == model.unet.config.cross_attention_dim
    torch.testing.assert_close(text.states[..., width_1:], second.hidden_states[-2])
    torch.testing.assert_close(text.added["text_embeds"], second.text_embeds)
    assert text.added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2


def test_training_step_reaches_the_unet_through_the_added_conditioning(model):
    batch = make_batch(model, 2)
    assert "input_ids_2" in batch
    model.zero_grad(set_to_none=True)
    terms = model.training_step(batch, torch.Generator().manual_seed(0))
    terms["total"].backward()
    # the pooled text and time ids enter through add_embedding: it gets a gradient
    assert model.unet.add_embedding.linear_1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoders.parameters())  # frozen, both towers
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())


def test_pipeline_round_trip_samples_the_same_images(model, tmp_path):
    reference = _images(1)[0]
    model.save_pretrained(tmp_path / "ckpt")
    loaded = TamerPipeline.from_pretrained(tmp_path / "ckpt")
    loaded.segmenter = model.pipe.segmenter  # not saved: the profile's role, set by who loads
    assert family_of(loaded).name == "sdxl"
    kwargs = dict(object_image=reference, num_inference_steps=2, output_type="np")
    first = model.pipe("a photo of a dog", generator=torch.Generator().manual_seed(3), **kwargs).images
    again = loaded("a photo of a dog", generator=torch.Generator().manual_seed(3), **kwargs).images
    other = loaded("a painting of a house", generator=torch.Generator().manual_seed(3), **kwargs).images
    np.testing.assert_allclose(first, again, atol=1e-5)
    assert not np.allclose(first, other)  # the prompt reaches the sampler


def test_textual_inversion_learns_one_embedding_per_encoder_and_diffusers_loads_both(tmp_path):
    trainer = base_pipeline(PROFILE)
    assert type(trainer).__name__ == "StableDiffusionXLPipeline"
    config = TextualInversionConfig(steps=2, batch_size=2, num_vectors=2)
    embeds = train_textual_inversion(trainer, _images(), "<thing>", "backpack", config)
    sizes = [trainer.text_encoder.config.hidden_size, trainer.text_encoder_2.config.hidden_size]
    assert [tuple(e.shape) for e in embeds] == [(2, size) for size in sizes]
    path = save_learned_embeds(tmp_path, "<thing>", embeds)

    pipe = base_pipeline(PROFILE)  # a fresh base, as a user would load it
    load_learned_embeds(pipe, path, "<thing>")
    for learned, tokenizer, encoder in zip(embeds, (pipe.tokenizer, pipe.tokenizer_2),
                                           (pipe.text_encoder, pipe.text_encoder_2)):
        rows = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(placeholder_tokens("<thing>", 2))]
        assert torch.equal(rows, learned)
    images = pipe("a photo of <thing>", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)
    unload_learned_embeds(pipe, "<thing>")
    assert "<thing>" not in pipe.tokenizer.get_vocab() and "<thing>" not in pipe.tokenizer_2.get_vocab()
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == set(SDXL_KEYS)


def test_dreambooth_lora_on_sdxl_saves_and_loads_with_diffusers(tmp_path, monkeypatch):
    monkeypatch.setattr("diffusers.loaders.lora_base.HF_HUB_OFFLINE", True)
    pipe = base_pipeline(PROFILE)
    kwargs = dict(num_inference_steps=2, output_type="np")
    base = pipe("a photo of sks backpack", generator=torch.Generator().manual_seed(0), **kwargs).images
    weights = train_dreambooth_lora(pipe, _images(), "backpack", DreamBoothLoraConfig(steps=2, lr=1e-2), "s")
    pipe.unet.delete_adapters("s")
    path = save_lora(pipe, tmp_path, weights)
    fresh = base_pipeline(PROFILE)
    load_lora(fresh, path, "s")
    tuned = fresh("a photo of sks backpack", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not np.allclose(base, tuned)


def test_evaluation_runs_every_method_on_the_sdxl_family(model, dreambench, tmp_path):
    from storage.shards import ShardStore
    from tamer.config import load_config
    from tasks.evaluate import new_eval_run_id, read_results, resolve_model, run_evaluation

    model.save_pretrained(tmp_path / "pipeline")
    methods = ["ours", "textual_inversion", "dreambooth_lora", "real"]
    settings = {"data": str(dreambench), "pipeline": str(tmp_path / "pipeline"), "methods": methods,
                "subjects": 1, "prompts": 1, "seeds": 1, "steps": 2, "bootstrap": 10,
                "textual_inversion": {"steps": 2}, "dreambooth_lora": {"steps": 2}}
    config = load_config(None, root=str(tmp_path / "root"), profile=PROFILE,
                         **{f"eval.{key}": value for key, value in settings.items()})
    store = ShardStore(config.root)
    summary = run_evaluation(config, resolve_model(store, None, settings["pipeline"]), new_eval_run_id())
    rows = read_results(store, summary["eval_run_id"])
    assert sorted(row["method"] for row in rows) == sorted(methods)
    for row in rows:
        assert -1.0 <= row["clip_i"] <= 1.0
        if row["method"] != "real":
            assert row["prepare_s"] > 0 and row["subject_bytes"] > 0
