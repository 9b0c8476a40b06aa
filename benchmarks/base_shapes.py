"""The real base models' architectures as plain configs, so a GPU check and the real-size shape
check can build them with random weights and nothing downloaded (throughput and shapes do not
depend on weight values). Copied from the published `config.json` files of stable-diffusion-v1-5
and stabilityai/stable-diffusion-xl-base-1.0 (unet, vae, text encoders, scheduler) and
openai/clip-vit-large-patch14 (the object encoder's CLIP for both); `TINY` and `TINY_SDXL` are the
same layouts at the tiny profiles' sizes, for dry runs on CPU in seconds.
"""

from __future__ import annotations

from typing import Any

from model.tiny import RECIPES


def _clip_text(width: int, heads: int, layers: int, activation: str) -> dict[str, Any]:
    """A published CLIP text tower's config (77 positions, 49,408 tokens, 4x MLP)."""
    return dict(hidden_size=width, intermediate_size=4 * width, num_attention_heads=heads, num_hidden_layers=layers,
                max_position_embeddings=77, hidden_act=activation, projection_dim=width, vocab_size=49408)


_CLIP_TEXT_L14 = _clip_text(768, 12, 12, "quick_gelu")  # openai/clip-vit-large-patch14

SD15: dict[str, Any] = {
    "resolution": 512,
    "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
                 attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
                 flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
                 mid_block_scale_factor=1, center_input_sample=False,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=[128, 256, 512, 512], norm_num_groups=32, act_fn="silu",
                sample_size=512, scaling_factor=0.18215,
                down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4),
    "text_encoder": _CLIP_TEXT_L14,
    "scheduler": dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                      set_alpha_to_one=False, prediction_type="epsilon"),
    # the clip role (object encoder, attributes, metrics, embeddings): ViT-L/14 at 224 px
    "clip": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                            num_hidden_layers=24, patch_size=14, image_size=224,
                            hidden_act="quick_gelu"),
             "text": _CLIP_TEXT_L14, "projection_dim": 768},
}

_CLIP_TEXT_BIGG = _clip_text(1280, 20, 32, "gelu")  # OpenCLIP ViT-bigG/14, SDXL's second tower

SDXL: dict[str, Any] = {
    "resolution": 1024,
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
                 attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10],
                 use_linear_projection=True, addition_embed_type="text_time",
                 addition_embed_type_num_heads=64, addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5,
                 act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
                 mid_block_scale_factor=1, center_input_sample=False,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "vae": dict(SD15["vae"], sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "text_encoder": _CLIP_TEXT_L14,
    "text_encoder_2": _CLIP_TEXT_BIGG,
    "scheduler": dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                      set_alpha_to_one=False, prediction_type="epsilon", timestep_spacing="leading"),
    "clip": SD15["clip"],
}

TINY: dict[str, Any] = {
    "resolution": 32,
    **{key: RECIPES["sd"][key] for key in ("unet", "vae", "text_encoder", "scheduler")},
    "clip": RECIPES["clip"],
}

TINY_SDXL: dict[str, Any] = {
    "resolution": 32,
    **{key: RECIPES["sdxl"][key] for key in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")},
    "clip": RECIPES["clip"],
}

SHAPES: dict[str, dict[str, Any]] = {"sd15": SD15, "sdxl": SDXL, "tiny": TINY, "tiny-sdxl": TINY_SDXL}
