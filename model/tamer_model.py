"""TamerModel: the trainable wrapper around a TamerPipeline. Owns the training-step math
(conditioning dropout, diffusion loss, identity preservation loss), what is trainable, and
checkpoint state. The training loop (elsewhere) owns data, optimizer and schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPModel

from model.base_family import family_of
from model.encoder import vision_tower_from_clip
from model.losses import diffusion_loss, identity_loss, predicted_original
from model.masking import SegmentationMasker
from model.pipeline import TamerPipeline
from tamer.model_config import TamerModelConfig

CONFIG_FILE = "tamer_model.json"


class TamerModel(torch.nn.Module):
    """UNet + VAE + text encoder(s) + object encoder + adapter, with the training step. Prompts
    become conditioning through the base family (model/base_family.py)."""

    def __init__(self, pipe: TamerPipeline, config: TamerModelConfig):
        super().__init__()
        self.pipe = pipe
        self.config = config
        self.family = family_of(pipe)
        self.unet, self.vae, self.scheduler = pipe.unet, pipe.vae, pipe.scheduler
        self.text_encoders = torch.nn.ModuleList(encoder for _, encoder in self.family.text_towers(pipe))
        self.object_encoder, self.adapter = pipe.object_encoder, pipe.object_adapter
        for module in (self.vae, self.text_encoders, self.object_encoder, self.unet):
            module.requires_grad_(False)
        if config.trainable == "full":
            self.unet.requires_grad_(True)
        self.adapter.requires_grad_(True)
        self.train(False)
        self.empty_ids = self.family.tokenize(pipe, [""])  # {ids key: (1, L)}: the dropped caption

    def train(self, mode: bool = True) -> TamerModel:
        """Frozen parts stay in eval mode whatever the loop asks: they are fixed functions."""
        super().train(mode)
        self.vae.eval()
        self.text_encoders.eval()
        if self.config.trainable == "adapter":
            self.unet.eval()
        return self

    # ---- construction ----

    @classmethod
    def from_components(cls, unet, vae, text_encoder, tokenizer, scheduler, clip: CLIPModel, image_processor,
                        config: TamerModelConfig, segmenter: SegmentationMasker | None = None,
                        text_encoder_2=None, tokenizer_2=None) -> TamerModel:
        """`text_encoder_2` and `tokenizer_2`: an SDXL base's second text tower."""
        pipe = TamerPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                             image_encoder=vision_tower_from_clip(clip), feature_extractor=image_processor,
                             num_object_tokens=config.num_object_tokens, object_scale=config.object_scale,
                             masking=config.masking, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        pipe.segmenter = segmenter
        return cls(pipe, config)

    @classmethod
    def from_profile(cls, profile, config: TamerModelConfig) -> TamerModel:
        """Base components from a model profile (name or Profile); the adapter starts fresh."""
        from model.profiles import load_profile, load_role

        profile = load_profile(profile) if isinstance(profile, str) else profile
        clip, clip_processor = load_role(profile, "clip")
        segmentation = load_role(profile, "segmentation")
        image_processor = clip_processor.image_processor
        segmenter = None
        if segmentation is not None:
            segmenter = SegmentationMasker(*segmentation, image_processor.image_mean, image_processor.image_std)
        model = cls.from_components(
            load_role(profile, "unet"), load_role(profile, "vae"), load_role(profile, "text_encoder"),
            load_role(profile, "tokenizer"), load_role(profile, "scheduler"), clip, image_processor, config, segmenter,
            load_role(profile, "text_encoder_2"), load_role(profile, "tokenizer_2"))
        return model.to(profile.device)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TamerModel:
        """Rebuild from `save_pretrained`: the saved config, base weights and adapter."""
        config = TamerModelConfig.model_validate_json((Path(path) / CONFIG_FILE).read_text())
        return cls(TamerPipeline.from_pretrained(path), config)

    # ---- what trains, and what is saved ----

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Adapter always; the UNet too in "full" mode. Build the optimizer from exactly these."""
        return [p for p in self.parameters() if p.requires_grad]

    def save_adapter(self, path: str | Path) -> None:
        self.adapter.save(path)

    def load_adapter(self, path: str | Path) -> None:
        self.adapter.load(path)

    def save_pretrained(self, path: str | Path) -> None:
        """A checkpoint directory that `TamerPipeline.from_pretrained` and `generate` load."""
        self.pipe.save_pretrained(path)
        (Path(path) / CONFIG_FILE).write_text(json.dumps(self.config.model_dump(), indent=2))

    def state_for_checkpoint(self) -> dict:
        """Config + adapter weights (+ base UNet weights in "full" mode): enough to resume."""
        state = {"config": self.config.model_dump(), "adapter": self.adapter.state_dict()}
        if self.config.trainable == "full":  # installed processors sit under "<attention>.processor."
            state["unet"] = {k: v for k, v in self.unet.state_dict().items() if ".processor." not in k}
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        if TamerModelConfig.model_validate(state["config"]) != self.config:
            raise ValueError("checkpoint was trained with another TamerModelConfig")
        self.adapter.load_state_dict(state["adapter"])
        if "unet" in state:  # strict except for the processors, which came with the adapter
            result = self.unet.load_state_dict(state["unet"], strict=False)
            if result.unexpected_keys or any(".processor." not in k for k in result.missing_keys):
                raise ValueError(f"UNet state does not match this UNet: {result}")

    # ---- the training step ----

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One forward pass on a `model.batching.collate` batch -> {"total", "diffusion", "identity"}.

        Backpropagate "total"; the terms keep their graphs (for logging, use .item()). All
        randomness (VAE sample, noise, timesteps, dropout) comes from `generator`.
        """
        device, dtype = self.unet.device, self.unet.dtype
        pixel_values = batch["pixel_values"].to(device, self.vae.dtype)  # (B, 3, H, W)
        batch_size = len(pixel_values)
        with torch.no_grad():
            latents = self.vae.encode(pixel_values).latent_dist.sample(generator).to(dtype)
            latents = latents * self.vae.config.scaling_factor  # (B, 4, h, w)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device, dtype)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch_size,),
                                  generator=generator, device=generator.device).to(device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)

        keep_text = torch.rand(batch_size, generator=generator, device=generator.device) >= self.config.text_dropout
        keep_object = torch.rand(batch_size, generator=generator, device=generator.device) >= self.config.object_dropout
        keep_object = keep_object.to(device) & batch["has_object"].to(device)  # (B,)
        ids = {key: torch.where(keep_text.to(device)[:, None], batch[key].to(device), empty.to(device))
               for key, empty in self.empty_ids.items()}
        with torch.no_grad():  # states (B, L, D), and SDXL's added conditioning
            text = self.family.encode(self.pipe, ids, pixel_values.shape[-1]).map(lambda t: t.to(dtype))
        objects, reference_embeds = self._object_tokens(batch, keep_object)  # (B, K, D), (B, E) or None

        model_output = self.unet(noisy, timesteps, **text.with_tokens(objects).unet_kwargs()).sample
        diffusion = diffusion_loss(model_output, noise, latents, timesteps, self.scheduler)
        identity_rows = keep_object & (timesteps < self.config.identity_loss_max_timestep)
        identity = torch.zeros((), device=device)
        if self.config.identity_loss_weight > 0 and identity_rows.any():
            identity = self._identity_loss(model_output[identity_rows], noisy[identity_rows],
                                           timesteps[identity_rows], reference_embeds[identity_rows])
        total = diffusion + self.config.identity_loss_weight * identity
        return {"total": total, "diffusion": diffusion, "identity": identity}

    def _object_tokens(self, batch: dict, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Object tokens for kept rows, exact zeros (no object) elsewhere; the encoder runs only
        on kept rows, and not at all when none is kept."""
        shape = (len(keep), self.adapter.num_tokens, self.unet.config.cross_attention_dim)
        objects = torch.zeros(shape, device=self.unet.device, dtype=self.unet.dtype)  # (B, K, D)
        if not keep.any():
            return objects, None
        rows = keep.nonzero().squeeze(1)
        mask, has_mask = batch.get("reference_mask"), batch.get("has_mask")
        tokens, pooled = self.pipe.object_tokens(
            batch["reference_pixel_values"].to(self.unet.device)[rows],
            None if mask is None else mask.to(self.unet.device)[rows],
            None if has_mask is None else has_mask.to(self.unet.device)[rows],
        )
        reference_embeds = pooled.new_zeros(len(keep), pooled.shape[-1]).index_copy(0, rows, pooled)  # (B, E)
        return objects.index_copy(0, rows, tokens), reference_embeds

    def _identity_loss(self, model_output, noisy, timesteps, reference_embeds) -> torch.Tensor:
        """1 - cos(CLIP(decode(x0_hat)), CLIP(reference)) on the low-noise object rows."""
        x0 = predicted_original(model_output, noisy, timesteps, self.scheduler)  # (b, 4, h, w)
        images = self.vae.decode((x0 / self.vae.config.scaling_factor).to(self.vae.dtype)).sample  # (b, 3, H, W)
        _, predicted_embeds = self.object_encoder(self.object_encoder.normalize_decoded(images))  # (b, E)
        return identity_loss(predicted_embeds, reference_embeds)
