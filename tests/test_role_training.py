"""Trainers of the roles the synth profile learns: each must learn what its role is used for,
on real synth renders, and load back through from_pretrained."""

from __future__ import annotations

import numpy as np
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor, SegformerConfig, SegformerImageProcessor

from model.captioning import Captioner
from model.role_training import processor_pixels, train_captioner, train_segmentation
from model.tiny import ensure_built
from tamer.synth import describe, identities, render, sample_scene

SIZE = 32


def _renders(objects: int, views: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels, masks, owners, captions = [], [], [], []
    for k, subject in enumerate(identities(objects, seed)):
        for _ in range(views):
            image, mask = render(subject.identity, sample_scene(rng), SIZE)
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None])
            owners.append(k)
            captions.append(describe(subject.identity))
    return torch.stack(pixels), torch.stack(masks), torch.tensor(owners), captions


def test_captioner_learns_to_say_the_descriptions_and_reloads(tmp_path):
    pixels, _, _, captions = _renders(4, 1)
    source = ensure_built("captioner")
    processor = BlipProcessor.from_pretrained(source)
    config = BlipForConditionalGeneration.from_pretrained(source).config
    model, _ = train_captioner(config, processor, pixels, captions, steps=150, batch=4, lr=3e-3, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    loaded = BlipForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=True)
    images = [render(s.identity, sample_scene(np.random.default_rng(0)), SIZE)[0] for s in identities(4, 0)]
    said = Captioner(loaded, BlipProcessor.from_pretrained(tmp_path))(images[:1])
    # the first training object's description, word for word (BLIP lower-cases)
    assert said[0] == captions[0].lower()


def test_segmentation_learns_the_render_masks():
    pixels, masks, _, _ = _renders(12, 2)
    processor = SegformerImageProcessor(size={"height": SIZE, "width": SIZE})
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[3, 3], strides=[2, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, num_labels=2)

    def iou(model) -> float:
        with torch.no_grad():
            logits = model(pixel_values=processor_pixels(pixels, processor)).logits
        logits = torch.nn.functional.interpolate(logits, size=(SIZE, SIZE), mode="bilinear")
        predicted, truth = logits.argmax(1) == 1, masks[:, 0] > 0.5
        return float((predicted & truth).sum() / (predicted | truth).sum().clamp(min=1))

    untrained, _ = train_segmentation(config, processor, pixels, masks, steps=0, batch=8, lr=3e-3, seed=0)
    trained, _ = train_segmentation(config, processor, pixels, masks, steps=150, batch=8, lr=3e-3, seed=0)
    assert iou(trained) > max(0.6, iou(untrained) + 0.2)
