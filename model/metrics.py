"""Subject-fidelity and prompt-alignment metrics of the DreamBench protocol: CLIP-I, CLIP-T, DINO.

The recipe, as in DreamBooth (Ruiz et al. 2023) and the papers that report on DreamBench:
- CLIP-I: cosine between the CLIP image embeddings (`get_image_features`, the projected pooled
  output) of a generated image and of each real image of its subject, averaged over the pairs.
- CLIP-T: cosine between the CLIP image embedding of a generated image and the CLIP text
  embedding (`get_text_features`) of its prompt, with the placeholder replaced by the class
  noun ("a dog in the jungle", not "a sks dog in the jungle"). A raw cosine (no CLIPScore x2.5).
- DINO: cosine between the CLS tokens (`last_hidden_state[:, 0]`, after the final layer norm;
  not the pooler) of a self-supervised ViT (ViT-S/16 DINO) of a generated and a real image,
  averaged over the pairs. It separates look-alike instances of a class better than CLIP.
Preprocessing, per model input side S (CLIP ViT-L/14 and DINO ViT-S/16: 224):
- CLIP: resize the shorter side to S (bicubic), center crop S x S, scale to [0, 1], normalise
  with the processor's mean/std (OpenAI CLIP's), exactly as `CLIPProcessor` does.
- DINO: resize the shorter side to S * 256 / 224 (256 for 224, bicubic), center crop S x S,
  normalise with the processor's mean/std (ImageNet's): the torchvision recipe DINO was
  evaluated with. (`ViTImageProcessor` would squash the image to S x S instead.)
A pair of identical images is left out of the means, so real images scored against their own
subject (the protocol's ceiling row) are compared only with the *other* real images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DINO_RESIZE_RATIO = 256 / 224  # shorter side before the center crop, relative to the crop


def resize_center_crop(image: Image.Image, resize: int, crop: int) -> Image.Image:
    """Resize the shorter side to `resize` (bicubic), then center crop `crop` x `crop`."""
    image = image.convert("RGB")
    scale = resize / min(image.size)
    width, height = (max(crop, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - crop) // 2, (height - crop) // 2
    return image.crop((left, top, left + crop, top + crop))


def to_pixels(images: Sequence[Image.Image], resize: int, crop: int, mean: Sequence[float],
              std: Sequence[float]) -> torch.Tensor:
    """PIL images -> normalised pixels (B, 3, crop, crop), float32."""
    arrays = [np.asarray(resize_center_crop(image, resize, crop), dtype=np.float32) / 255.0
              for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, crop, crop)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def dino_pixels(images: Sequence[Image.Image], side: int, norm: tuple[Sequence[float], Sequence[float]]
                ) -> torch.Tensor:
    """The DINO score's preprocessing: resize to `DINO_RESIZE_RATIO` x `side`, center crop, normalise."""
    return to_pixels(images, round(side * DINO_RESIZE_RATIO), side, *norm)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, E), (M, E) -> (N, M) cosine similarities."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def mean_pair_cosine(generated: torch.Tensor, real: torch.Tensor,
                     skip: torch.Tensor | None = None) -> torch.Tensor:
    """(G, E) x (R, E) -> (G,): each generated image's mean cosine to the real images, leaving
    out pairs where `skip` (G, R) is True. NaN for a row with no pair left."""
    cosines = cosine_matrix(generated, real)  # (G, R)
    keep = torch.ones_like(cosines, dtype=torch.bool) if skip is None else ~skip
    return (cosines * keep).sum(1) / keep.sum(1)  # 0/0 = NaN: no pair to average


def identical_pairs(generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> torch.Tensor:
    """(G, R) True where a generated image has exactly the pixels of a real one."""
    real_arrays = [np.asarray(image.convert("RGB")) for image in real]
    return torch.tensor([[np.array_equal(np.asarray(g.convert("RGB")), r) for r in real_arrays]
                         for g in generated], dtype=torch.bool)


@dataclass(frozen=True)
class Reference:
    """A subject's real images and their features, computed once per subject."""

    images: tuple[Image.Image, ...]
    clip: torch.Tensor  # (R, E) CLIP image embeddings
    dino: torch.Tensor  # (R, Ed) DINO CLS tokens


class Scorer:
    """CLIP-I, CLIP-T and DINO with a profile's `clip` and `dino` roles (recipe: module doc)."""

    def __init__(self, clip, clip_processor, dino, dino_processor):
        self.clip, self.dino = clip.eval(), dino.eval()
        self.tokenizer = clip_processor.tokenizer
        clip_images = clip_processor.image_processor
        self.clip_side = clip.config.vision_config.image_size
        self.clip_norm = (clip_images.image_mean, clip_images.image_std)
        self.dino_side = dino.config.image_size
        self.dino_norm = (dino_processor.image_mean, dino_processor.image_std)

    @classmethod
    def from_profile(cls, profile) -> Scorer:
        from model.profiles import load_profile, load_role

        profile = load_profile(profile) if isinstance(profile, str) else profile
        return cls(*load_role(profile, "clip"), *load_role(profile, "dino"))

    @torch.no_grad()
    def clip_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = to_pixels(images, self.clip_side, self.clip_side, *self.clip_norm)
        return self.clip.get_image_features(pixel_values=pixels.to(self.clip.device, self.clip.dtype))

    @torch.no_grad()
    def clip_texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        return self.clip.get_text_features(**tokens.to(self.clip.device))

    @torch.no_grad()
    def dino_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = dino_pixels(images, self.dino_side, self.dino_norm)
        out = self.dino(pixel_values=pixels.to(self.dino.device, self.dino.dtype))
        return out.last_hidden_state[:, 0]  # (B, Ed): the CLS token

    def reference(self, images: Sequence[Image.Image]) -> Reference:
        return Reference(tuple(images), self.clip_images(images), self.dino_images(images))

    def score(self, images: Sequence[Image.Image], prompt: str | None,
              reference: Reference) -> list[dict[str, float | None]]:
        """One {clip_i, clip_t, dino} per image; clip_t is None without a prompt."""
        skip = identical_pairs(images, reference.images)
        clip = self.clip_images(images)
        clip_i = mean_pair_cosine(clip, reference.clip, skip)
        dino = mean_pair_cosine(self.dino_images(images), reference.dino, skip)
        clip_t = cosine_matrix(clip, self.clip_texts([prompt]))[:, 0] if prompt else None
        return [{"clip_i": _number(clip_i[k]), "dino": _number(dino[k]),
                 "clip_t": None if clip_t is None else _number(clip_t[k])}
                for k in range(len(images))]


def _number(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if np.isnan(number) else number


IDENTITY_ATTRIBUTES = ("shape", "primary", "secondary", "texture", "eyes")
SCENE_ATTRIBUTES = ("background", "position", "scale", "rotation", "lighting")


class OracleReader:
    """Identity and prompt accuracy of generated images on synth subjects: the profile's
    attribute oracle reads each image, and the share of identity attributes (shape, colours,
    texture, eyes) matching the subject, and of scene attributes matching the prompt, is scored.
    Attributes the oracle does not know, or whose truth is unknown, are left out."""

    def __init__(self, oracle, side: int):
        self.oracle, self.side = oracle.eval(), side  # the side it was trained at
        config = oracle.config
        self.values = {key: list(values) for key, values in zip(config.attributes, config.values)}

    @classmethod
    def from_profile(cls, profile) -> OracleReader | None:
        """None when the profile has no oracle (only profiles trained on synth renders do)."""
        from model.profiles import load_profile, load_role

        profile = load_profile(profile) if isinstance(profile, str) else profile
        oracle = load_role(profile, "oracle")
        return None if oracle is None else cls(oracle, profile.resolution)

    @torch.no_grad()
    def read(self, image: Image.Image, identity: dict[str, str] | None,
             scene: dict[str, str] | None) -> dict[str, float | None]:
        """{"identity_acc", "prompt_acc"}; None for a side without truth."""
        pixels = to_pixels([image], self.side, self.side, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [-1, 1]
        predicted = self.oracle.predict(pixels.to(next(self.oracle.parameters()).device))[0]
        said = {key: self.values[key][int(index)] for key, index in zip(self.oracle.keys, predicted)}

        def share(truth: dict[str, str] | None, keys: tuple[str, ...]) -> float | None:
            known = [key for key in keys if truth and key in truth and key in said]
            return sum(said[key] == truth[key] for key in known) / len(known) if known else None

        return {"identity_acc": share(identity, IDENTITY_ATTRIBUTES), "prompt_acc": share(scene, SCENE_ATTRIBUTES)}
