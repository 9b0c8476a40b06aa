"""Stable Diffusion 1.5's and CLIP ViT-L/14's architectures as plain configs, so a GPU check can
build them with random weights and nothing downloaded (throughput does not depend on weight
values). Copied from the published `config.json` files of stable-diffusion-v1-5 (unet, vae,
text_encoder, scheduler) and openai/clip-vit-large-patch14; `TINY` is the same layout at the
tiny profile's sizes, for a dry run on CPU in seconds.
"""

from __future__ import annotations

from typing import Any

from model.tiny import RECIPES

_CLIP_TEXT_L14 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                      num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
                      projection_dim=768, vocab_size=49408)

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

TINY: dict[str, Any] = {
    "resolution": 32,
    **{key: RECIPES["sd"][key] for key in ("unet", "vae", "text_encoder", "scheduler")},
    "clip": RECIPES["clip"],
}
