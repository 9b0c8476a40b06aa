"""Object attention invariants on the tiny profile's real UNet."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import tiny_components

from model.attention import ObjectAdapter, ObjectAttention

K = 4


@pytest.fixture()
def unet():
    return tiny_components()["unet"]


def _inputs(unet, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    width = unet.config.cross_attention_dim
    latents = torch.randn(2, unet.config.in_channels, size, size, generator=g)  # (B, 4, h, w)
    text = torch.randn(2, 7, width, generator=g)  # (B, L, D)
    objects = torch.randn(2, K, width, generator=g)  # (B, K, D)
    return latents, torch.tensor([10, 700]), text, objects


@torch.no_grad()
def test_scale_zero_is_base_output_and_large_scale_changes_it(unet):
    latents, t, text, objects = _inputs(unet)
    base = unet(latents, t, text).sample
    attention = ObjectAttention(unet, K, scale=0.0)
    attention.install(unet)
    assert torch.equal(unet(latents, t, torch.cat([text, objects], 1)).sample, base)
    attention.set_scale(5.0)
    changed = unet(latents, t, torch.cat([text, objects], 1)).sample
    assert (changed - base).abs().max() > 1e-2


@torch.no_grad()
def test_zero_object_tokens_add_nothing(unet):
    latents, t, text, objects = _inputs(unet)
    base = unet(latents, t, text).sample
    ObjectAttention(unet, K, scale=5.0).install(unet)
    assert torch.equal(unet(latents, t, torch.cat([text, torch.zeros_like(objects)], 1)).sample, base)


@torch.no_grad()
def test_install_covers_every_cross_attention_and_uninstall_restores_exactly(unet):
    latents, t, text, objects = _inputs(unet)
    base = unet(latents, t, text).sample
    originals = dict(unet.attn_processors)
    keys = set(unet.state_dict())
    attention = ObjectAttention(unet, K)
    attention.install(unet)
    cross = [n for n, m in unet.named_modules() if getattr(m, "is_cross_attention", False)]
    assert cross and all(unet.attn_processors[f"{n}.processor"] in attention.processors.values() for n in cross)
    with pytest.raises(RuntimeError):
        attention.install(unet)
    attention.uninstall(unet)
    assert all(unet.attn_processors[name] is proc for name, proc in originals.items())
    assert set(unet.state_dict()) == keys  # no object weight left inside the UNet
    assert torch.equal(unet(latents, t, text).sample, base)


def test_sizes_come_from_the_unet(unet):
    adapter = ObjectAdapter(unet, vision_hidden_size=48, num_tokens=3)
    width = unet.config.cross_attention_dim
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False):
            proc = adapter.attention.processors[name.replace(".", "__")]
            assert proc.to_k_obj.weight.shape == (module.inner_dim, width)
    tokens = adapter.projection(torch.randn(2, 64, 48))
    assert tokens.shape == (2, 3, width) and tokens.dtype == torch.float32


def test_adapter_file_round_trip_and_strict_mismatch(unet, tmp_path):
    torch.manual_seed(1)
    adapter = ObjectAdapter(unet, 48, K)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p))
    adapter.save(tmp_path / "a.safetensors")
    fresh = ObjectAdapter(tiny_components()["unet"], 48, K)
    fresh.load(tmp_path / "a.safetensors")
    for (name, a), b in zip(adapter.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(RuntimeError):
        ObjectAdapter(unet, 48, K + 1).load(tmp_path / "a.safetensors")
