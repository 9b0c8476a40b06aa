"""The model's and the evaluation methods' knobs as plain pydantic models: no torch, so
configuration can validate them (and `tamer sql` can start) without importing the model stack.

model/ builds from these; tamer/config.py checks `train.model` against `TamerModelConfig`, and
`eval.methods` and every `eval.<method>` section against `METHOD_SETTINGS`.

Why an evaluation method's name and knobs live here and not on its class in tasks/methods/:
configuration is a leaf (it imports neither tasks/ nor torch), yet an unknown method or knob must
fail when the configuration loads, before any work starts. So each method's settings model names
its method (`method`, and an optional short `alias` that `--methods` and the CLI's `--<alias>-steps`
flag use) and registers itself by being defined; the method's class (tasks/methods/) points at
it and carries everything else (label, colour, cost, behaviour). tasks/methods checks on import
that the two registries name the same methods.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class TamerModelConfig(BaseModel):
    """The method's knobs. Saved whole into every checkpoint, so a resume rebuilds it exactly."""

    model_config = ConfigDict(extra="forbid")

    # More tokens keep more of the patches' spatial detail; cost grows only in the object
    # attention's keys. 8 sits between IP-Adapter's 4 (global embedding) and all 256 patches.
    num_object_tokens: int = Field(8, ge=1)
    # 1.0 = object attention as strong as it was trained; lower at inference to favour the text.
    object_scale: float = 1.0
    # The paper finds whole-network training best; "adapter" keeps the UNet frozen (cheaper, and
    # the base model stays shareable).
    trainable: Literal["adapter", "full"] = "full"
    # Masking background patches separates identity from background (the paper's ablation).
    masking: bool = True
    # 5% each, independently, as in InstructPix2Pix: enough unconditional rows for both guidance
    # scales without starving the conditional task.
    text_dropout: float = Field(0.05, ge=0.0, le=1.0)
    object_dropout: float = Field(0.05, ge=0.0, le=1.0)
    # Small weight: identity is a nudge on top of denoising, and the gradient runs through the VAE
    # decoder and CLIP, which a large weight would let dominate.
    identity_loss_weight: float = Field(0.1, ge=0.0)
    # Only at low noise is the one-step x0 estimate sharp enough for CLIP to read identity.
    identity_loss_max_timestep: int = Field(250, ge=0)
    # Share of object-conditioned rows per batch; the rest is general text-only data that keeps
    # the text-to-image prior (regularized joint training).
    domain_ratio: float = Field(0.8, ge=0.0, le=1.0)


# diffusers' `imagenet_templates_small`, the prompts the example trains objects with.
TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
)


class MethodSettings(BaseModel):
    """An evaluation method's knobs; a subclass with a `method` name registers in METHOD_SETTINGS."""

    model_config = ConfigDict(extra="forbid")

    method: ClassVar[str]
    alias: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "method" not in cls.__dict__:  # a shared recipe base (DreamBoothRecipe), not a method
            return
        if cls.method in METHOD_SETTINGS or cls.alias in {m.alias for m in METHOD_SETTINGS.values()} - {None}:
            raise ValueError(f"evaluation method {cls.method!r} (alias {cls.alias!r}) is defined twice")
        METHOD_SETTINGS[cls.method] = cls


METHOD_SETTINGS: dict[str, type[MethodSettings]] = {}  # name -> settings, in definition order


class OursConfig(MethodSettings):
    """No knobs: the trained TamerPipeline and the shared sampling settings are the whole method."""

    method = "ours"


class TextualInversionConfig(MethodSettings):
    """The recipe's knobs; defaults are the diffusers example's documented run."""

    method, alias = "textual_inversion", "ti"

    steps: int = Field(3000, ge=1)
    # The example's 5e-4 is scaled by batch x accumulation (--scale_lr); 4 images per step here.
    lr: float = Field(5e-4 * 4, gt=0.0)
    batch_size: int = Field(4, ge=1, description="images per step (the example: 1 x 4 accumulated)")
    weight_decay: float = Field(1e-2, ge=0.0)
    num_vectors: int = Field(1, ge=1, description="embedding vectors behind the token")
    flip: bool = Field(True, description="random horizontal flips (the example's flip_p=0.5)")
    templates: tuple[str, ...] = TEMPLATES
    seed: int = 0


class DreamBoothRecipe(MethodSettings):
    """What DreamBooth with LoRA and full DreamBooth share: diffusers' `train_dreambooth*.py`."""

    steps: int = Field(500, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(1, ge=1)
    identifier: str = Field("sks", description="the rare token that names the subject")
    instance_prompt: str = Field("a photo of {}", description="{} = '<identifier> <class>'")
    prior_preservation: bool = False
    class_images: int = Field(100, ge=1, description="sampled from the base model (prior only)")
    class_prompt: str = Field("a photo of {}", description="{} = the class noun (prior only)")
    prior_loss_weight: float = Field(1.0, ge=0.0)
    class_inference_steps: int = Field(25, ge=1)
    flip: bool = False  # the example does not flip
    seed: int = 0


class DreamBoothLoraConfig(DreamBoothRecipe):
    """`train_dreambooth_lora.py`'s documented run: rank 4, lr 1e-4, 500 steps."""

    method, alias = "dreambooth_lora", "lora"

    rank: int = Field(4, ge=1)


class DreamBoothConfig(DreamBoothRecipe):
    """`train_dreambooth.py`'s documented run without prior preservation: the whole UNet at
    lr 5e-6 for 400 steps (text encoder frozen, its default)."""

    method, alias = "dreambooth", "db"

    steps: int = Field(400, ge=1)
    lr: float = Field(5e-6, gt=0.0)


class RealImagesConfig(MethodSettings):
    """No knobs: the subject's own images, the metrics' ceiling."""

    method = "real"
