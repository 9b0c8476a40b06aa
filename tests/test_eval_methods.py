"""The baselines' artifacts load through diffusers and change the base model; prompt parsing."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from model.dreambooth_lora import DreamBoothLoraConfig, load_lora, save_lora, train_dreambooth_lora
from model.finetune import base_pipeline
from model.textual_inversion import (TextualInversionConfig, placeholder_tokens, save_learned_embeds,
                                     train_textual_inversion)
from tasks.eval_subjects import LIVE_CLASSES, dreambench_subjects


def _images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def _encode(pipe, text: str) -> torch.Tensor:
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def test_textual_inversion_embedding_loads_with_diffusers_and_changes_the_text(tmp_path):
    trainer = base_pipeline("tiny")
    config = TextualInversionConfig(steps=2, batch_size=2, num_vectors=2)
    (embeds,) = train_textual_inversion(trainer, _images(), "<thing>", "backpack", config)
    assert embeds.shape == (2, trainer.text_encoder.config.hidden_size)
    path = save_learned_embeds(tmp_path, "<thing>", [embeds])

    pipe = base_pipeline("tiny")  # a fresh base model, as a user would load it
    before = _encode(pipe, "a photo of <thing>")
    pipe.load_textual_inversion(str(path), token="<thing>")
    loaded = pipe.text_encoder.get_input_embeddings().weight[
        pipe.tokenizer.convert_tokens_to_ids(placeholder_tokens("<thing>", 2))]
    assert torch.equal(loaded, embeds)
    after = _encode(pipe, pipe.maybe_convert_prompt("a photo of <thing>", pipe.tokenizer))
    assert not torch.allclose(before, after)
    # trained for 2 steps away from its initializer ("backpack"), every vector moved
    start = trainer.text_encoder.get_input_embeddings().weight[trainer.tokenizer.encode("backpack", add_special_tokens=False)[0]]
    assert not torch.allclose(embeds, start.expand_as(embeds))


def test_dreambooth_lora_saves_loads_and_restores_the_base_unet(tmp_path, monkeypatch):
    monkeypatch.setattr("diffusers.loaders.lora_base.HF_HUB_OFFLINE", True)  # loads must work offline
    pipe = base_pipeline("tiny")
    unet = pipe.unet
    sample = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 8, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = unet(sample, 10, encoder_hidden_states=text).sample
    weights = train_dreambooth_lora(pipe, _images(), "backpack", DreamBoothLoraConfig(steps=2, lr=1e-2), "s")
    unet.delete_adapters("s")
    with torch.no_grad():
        assert torch.allclose(unet(sample, 10, encoder_hidden_states=text).sample, base)
    path = save_lora(pipe, tmp_path, weights)
    load_lora(pipe, path, "s")
    with torch.no_grad():
        assert not torch.allclose(unet(sample, 10, encoder_hidden_states=text).sample, base)
    assert path.stat().st_size > 0


def test_dreambench_prompts_by_class(dreambench):
    subjects = dreambench_subjects(dreambench, None, None).subjects
    by_name = {subject.name: subject for subject in subjects}
    assert len(by_name["dog"].prompts) == len(by_name["backpack"].prompts) == 25
    assert "a {} wearing a red hat" in by_name["dog"].prompts  # live-subject list
    assert "a {} in the jungle" in by_name["backpack"].prompts
    assert "a {} wearing a red hat" not in by_name["backpack"].prompts
    assert {s.class_noun for s in subjects if "a {} in a chef outfit" in s.prompts} == set(LIVE_CLASSES)
    assert all(len(subject.images) >= 4 for subject in subjects)


def test_the_base_pipeline_samples_with_its_scheduler_as_saved():
    """StableDiffusionPipeline's constructor turns `clip_sample` off; the synth base draws in
    pixel space, where that lets x0 estimates run far past [-1, 1]. TI, DreamBooth-LoRA and
    DreamBooth sample through this pipeline, so it must keep the saved scheduler."""
    from model.profiles import load_profile, load_role

    saved = load_role(load_profile("synth"), "scheduler")
    pipe = base_pipeline("synth")
    assert type(pipe.scheduler) is type(saved)
    assert saved.config.clip_sample and pipe.scheduler.config.clip_sample
    assert not base_pipeline("tiny").scheduler.config.clip_sample  # tiny's saved latent schedule: off
