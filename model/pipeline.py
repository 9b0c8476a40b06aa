"""TamerPipeline: text + one reference image -> images of that object, in one sampling pass with
no per-object optimization. Saved as a diffusers pipeline (base components unchanged) plus
`object_adapter.safetensors`. Loading accepts safetensors only: pickle weights (`.bin`, `.pt`,
`.ckpt`) can run code when unpickled, and pipeline folders come from users.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

from model.attention import ObjectAdapter
from model.base_family import Conditioning, family_of
from model.encoder import ObjectEncoder
from model.masking import SegmentationMasker, foreground_mask, mask_patch_tokens, patch_keep

ADAPTER_FILE = "object_adapter.safetensors"
PICKLE_WEIGHTS = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}


class PickleWeightsRefused(ValueError):
    """A pipeline folder whose weights exist only in a pickle format."""


def require_safetensors(folder: str | Path) -> None:
    """Refuse a folder, or a component subfolder, that holds pickle weights and no safetensors."""
    root = Path(folder)
    for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        files = [p for p in directory.iterdir() if p.is_file()]
        pickled = sorted(p.name for p in files if p.suffix in PICKLE_WEIGHTS)
        if pickled and not any(p.suffix == ".safetensors" for p in files):
            raise PickleWeightsRefused(f"refused to load {directory}: it holds only pickle weights "
                                       f"({', '.join(pickled)}); tamer loads .safetensors only")


class TamerPipeline(DiffusionPipeline):
    """Stable-Diffusion-style sampling with object tokens beside the text tokens.

    Guidance is the standard two-scale compositional classifier-free guidance (as in
    InstructPix2Pix), with three UNet branches per step:
        eps = eps(0, 0) + s_obj * (eps(0, o) - eps(0, 0)) + s_txt * (eps(t, o) - eps(0, o))
    where t / 0 = prompt / negative prompt, o / 0 = object tokens / no object (zero tokens, which
    add exactly nothing in the object attention). s_obj = `object_guidance_scale`,
    s_txt = `guidance_scale`; both 1 gives plain conditional sampling (one branch).

    `segmenter` (not saved) may be set to a `SegmentationMasker`; without it masking falls back
    to the saliency mask unless `encode_object` is given a mask.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->unet->vae"
    _optional_components = ["text_encoder_2", "tokenizer_2"]  # SDXL's second text tower

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler,
        image_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessor,
        num_object_tokens: int = 8,
        object_scale: float = 1.0,
        masking: bool = True,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        tokenizer_2: CLIPTokenizer | None = None,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, image_encoder=image_encoder, feature_extractor=feature_extractor,
                              text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        self.register_to_config(num_object_tokens=num_object_tokens, object_scale=object_scale, masking=masking)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.object_encoder = ObjectEncoder(image_encoder, feature_extractor).to(image_encoder.device)
        self.object_adapter = ObjectAdapter(unet, image_encoder.config.hidden_size, num_object_tokens, object_scale)
        self.object_adapter.attention.install(unet)
        self.segmenter: SegmentationMasker | None = None

    # ---- persistence: the base components load unchanged, the adapter has its own file ----

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        self.object_adapter.attention.uninstall(self.unet)  # keep object weights out of the UNet's files
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.object_adapter.attention.install(self.unet)
        self.object_adapter.save(Path(save_directory) / ADAPTER_FILE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> TamerPipeline:
        """Load a saved pipeline: every component from safetensors, no code from the folder."""
        if Path(pretrained_model_name_or_path).is_dir():
            require_safetensors(pretrained_model_name_or_path)
        safe = {"use_safetensors": True, "trust_remote_code": False}
        pipe = super().from_pretrained(pretrained_model_name_or_path, **{**kwargs, **safe})
        pipe.object_adapter.load(Path(pretrained_model_name_or_path) / ADAPTER_FILE)
        return pipe

    def to(self, *args, **kwargs) -> TamerPipeline:
        super().to(*args, **kwargs)
        # processors moved with the UNet; the projection and encoder buffers are not registered
        self.object_adapter.projection.to(device=self.unet.device, dtype=self.unet.dtype)
        self.object_encoder.to(device=self.image_encoder.device)
        return self

    # ---- object conditioning ----

    def object_tokens(
        self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None, has_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP pixels (B, 3, h, w) -> object tokens (B, K, D) with grad through the projection,
        and the reference's pooled CLIP embedding (B, E). The frozen tower runs without grad."""
        with torch.no_grad():
            patch_tokens, pooled = self.object_encoder(pixel_values)  # (B, P, Hv), (B, E)
            if self.config.masking:
                fg = foreground_mask(pixel_values, mask, has_mask, self.segmenter)  # (B, 1, h, w)
                patch_tokens = mask_patch_tokens(patch_tokens, patch_keep(fg, self.object_encoder.patch_size))
        tokens = self.object_adapter.projection(patch_tokens.to(self.unet.dtype))  # (B, K, D)
        return tokens, pooled

    @torch.no_grad()
    def encode_object(
        self, image: PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reference image(s) (PIL, or CLIP pixels (B, 3, h, w)) -> object_embeds (B, K, D).

        One encoder pass per object; pass the result as `object_embeds` to serve many prompts.
        `mask` (B, 1, h, w), 1 = object, overrides the segmenter / saliency fallback.
        """
        if not isinstance(image, torch.Tensor):
            image = self.object_encoder.preprocess(image if isinstance(image, list) else [image])
        return self.object_tokens(image.to(self.image_encoder.device), mask)[0]

    # ---- the recipe's steps ----

    def check_inputs(self, prompt, object_image, object_embeds, height: int, width: int) -> None:
        if not isinstance(prompt, (str, list)):
            raise TypeError(f"prompt must be a str or a list of str, got {type(prompt)}")
        if (object_image is None) == (object_embeds is None):
            raise ValueError("give exactly one of object_image or object_embeds")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}")
        if object_embeds is not None and object_embeds.shape[1:] != (
            self.object_adapter.num_tokens, self.unet.config.cross_attention_dim
        ):
            raise ValueError(f"object_embeds must be (B, K, D), got {tuple(object_embeds.shape)}")

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], size: int) -> Conditioning:
        """Prompts -> the base family's conditioning for `size` px images: text states (B, L, D)
        (and SDXL's added conditioning)."""
        return family_of(self).encode_prompts(self, prompts, size).map(lambda t: t.to(self.unet.dtype))

    @staticmethod
    def conditioning(
        text: Conditioning, uncond_text: Conditioning | None, objects: torch.Tensor, guided: bool
    ) -> Conditioning:
        """The UNet's conditioning for all branches: states (n * B, L + K, D), n = 3 or 1."""
        with_object = text.with_tokens(objects)  # (B, L + K, D)
        if not guided:
            return with_object
        return Conditioning.cat([
            uncond_text.with_tokens(torch.zeros_like(objects)),  # eps(0, 0)
            uncond_text.with_tokens(objects),  # eps(0, o)
            with_object,  # eps(t, o)
        ])

    def prepare_latents(self, batch_size: int, height: int, width: int, generator) -> torch.Tensor:
        shape = (batch_size, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=self.unet.device, dtype=self.unet.dtype)
        return latents * self.scheduler.init_noise_sigma

    def extra_step_kwargs(self, generator) -> dict:
        """Stochastic schedulers (DDPM, Euler ancestral) take the generator; others must not."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        return {"generator": generator} if "generator" in accepted else {}

    @staticmethod
    def combine_guidance(model_output: torch.Tensor, guidance_scale: float, object_guidance_scale: float) -> torch.Tensor:
        eps_00, eps_0o, eps_to = model_output.chunk(3)
        return eps_00 + object_guidance_scale * (eps_0o - eps_00) + guidance_scale * (eps_to - eps_0o)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample  # (B, 3, H, W) in [-1, 1]
        return self.image_processor.postprocess(images, output_type=output_type)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        object_image: PIL.Image.Image | torch.Tensor | None = None,
        object_embeds: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        negative_prompt: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        object_guidance_scale: float = 3.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate `num_images_per_prompt` images per prompt of the object in `object_image`
        (or precomputed `object_embeds` (1 or len(prompt), K, D) from `encode_object`)."""
        # 0. default size: the UNet's native resolution
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        # 1. check inputs
        self.check_inputs(prompt, object_image, object_embeds, height, width)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        guided = guidance_scale != 1.0 or object_guidance_scale != 1.0
        # 2. encode the prompts (and negative prompts)
        def per_image(c: Conditioning) -> Conditioning:
            return c.map(lambda t: t.repeat_interleave(num_images_per_prompt, dim=0))

        text = per_image(self.encode_prompt(prompts, height))  # states (B, L, D)
        uncond_text = per_image(self.encode_prompt(negatives, height)) if guided else None
        # 3. encode the object once, then share it across prompts and images
        if object_embeds is None:
            object_embeds = self.encode_object(object_image, object_mask)
        objects = object_embeds.to(device=self.unet.device, dtype=self.unet.dtype)
        objects = objects.expand(len(prompts), -1, -1) if len(objects) == 1 else objects
        objects = objects.repeat_interleave(num_images_per_prompt, dim=0)  # (B, K, D)
        # 4. conditioning for every guidance branch
        conditioning = self.conditioning(text, uncond_text, objects, guided)
        # 5. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=self.unet.device)
        # 6. initial latents
        latents = self.prepare_latents(len(objects), height, width, generator)
        step_kwargs = self.extra_step_kwargs(generator)
        # 7. denoising loop
        branches = len(conditioning.states) // len(latents)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * branches), t)
            model_output = self.unet(model_input, t, **conditioning.unet_kwargs()).sample
            if guided:
                model_output = self.combine_guidance(model_output, guidance_scale, object_guidance_scale)
            latents = self.scheduler.step(model_output, t, latents, **step_kwargs).prev_sample
        # 8. decode
        images = self.decode_latents(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
