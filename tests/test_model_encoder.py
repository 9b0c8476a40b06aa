"""Object encoder shapes and object embedding masking on the tiny profile's CLIP and Segformer."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import tiny_components, tiny_model

from model.encoder import ObjectEncoder, vision_tower_from_clip
from model.masking import (
    SegmentationMasker,
    foreground_mask,
    mask_patch_tokens,
    patch_keep,
    saliency_mask,
)


@pytest.fixture(scope="module")
def components():
    return tiny_components()


@pytest.fixture(scope="module")
def encoder(components):
    return ObjectEncoder(vision_tower_from_clip(components["clip"]), components["image_processor"])


def test_vision_tower_matches_clip_image_features(components, encoder):
    pixels = torch.randn(2, 3, encoder.image_size, encoder.image_size)
    with torch.no_grad():
        expected = components["clip"].get_image_features(pixel_values=pixels)
        patch_tokens, pooled = encoder(pixels)
    grid = (encoder.image_size // encoder.patch_size) ** 2
    assert patch_tokens.shape == (2, grid, encoder.hidden_size) and patch_tokens.dtype == torch.float32
    torch.testing.assert_close(pooled, expected)
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("num_tokens", [1, 5])
def test_object_tokens_shape_follow_config(num_tokens):
    model = tiny_model(num_object_tokens=num_tokens)
    pixels = torch.randn(3, 3, 32, 32)
    tokens, pooled = model.pipe.object_tokens(pixels)
    assert tokens.shape == (3, num_tokens, model.unet.config.cross_attention_dim)
    assert pooled.shape == (3, model.object_encoder.tower.config.projection_dim)
    assert tokens.requires_grad and not pooled.requires_grad  # projection trains, tower is frozen


def test_masking_changes_patch_tokens_only_where_mask_is_off():
    tokens = torch.randn(2, 16, 8)  # (B, P, C) on a 4x4 grid
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, :8, :8] = 1  # top-left quarter of image 0
    mask[1] = 1  # image 1 all object
    keep = patch_keep(mask, patch_size=4)
    masked = mask_patch_tokens(tokens, keep)
    assert keep[0].sum() == 4 and keep[1].all()
    assert torch.equal(masked[keep], tokens[keep])
    assert (masked[~keep] == 0).all() and (tokens[~keep] != 0).all()


def test_empty_mask_keeps_every_patch():
    assert patch_keep(torch.zeros(1, 1, 16, 16), patch_size=4).all()


def test_saliency_finds_a_centred_object_on_a_plain_ground():
    image = torch.full((1, 3, 32, 32), 0.2)
    image[:, :, 10:22, 10:22] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    mask = saliency_mask(image)
    assert mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, 10:22, 10:22].mean() > 0.9 and mask[0, 0, :4].sum() == 0


def test_data_mask_wins_per_row_then_segmenter(components):
    seg = SegmentationMasker(*components["segmentation"], components["image_processor"].image_mean,
                             components["image_processor"].image_std)
    pixels = torch.randn(2, 3, 32, 32)
    from_model = seg(pixels)
    assert from_model.shape == (2, 1, 32, 32) and set(from_model.unique().tolist()) <= {0.0, 1.0}
    data = torch.zeros(2, 1, 32, 32)
    mixed = foreground_mask(pixels, data, torch.tensor([True, False]), seg)
    assert torch.equal(mixed[0], data[0]) and torch.equal(mixed[1], from_model[1])
    assert torch.equal(foreground_mask(pixels), saliency_mask(pixels))


def test_masking_switch_off_ignores_the_mask():
    on, off = tiny_model(masking=True), tiny_model(masking=False)
    pixels = torch.randn(1, 3, 32, 32)
    half = torch.zeros(1, 1, 32, 32)
    half[..., :16] = 1
    with torch.no_grad():
        assert not torch.allclose(on.pipe.object_tokens(pixels, half)[0], on.pipe.object_tokens(pixels)[0])
        assert torch.equal(off.pipe.object_tokens(pixels, half)[0], off.pipe.object_tokens(pixels)[0])
