"""Model profiles: which checkpoint fills each role, and how to load it.

Contract: `configs/profiles/<name>.yaml` maps every role to a hub id, a local directory or a
`tiny://<component>` built offline by model/tiny.py; `load_role` loads any of them with the same
`from_pretrained` call. model/profile_check.py checks a profile without loading its weights.
"""

from __future__ import annotations

import importlib
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from diffusers import ConfigMixin
from huggingface_hub.utils import HFValidationError, validate_repo_id
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model import tiny
from model.sampling import Sampler
from tamer.config import PROFILES_DIR, profile_path  # noqa: F401 - PROFILES_DIR is re-exported

TINY_SCHEME = "tiny://"


@dataclass(frozen=True)
class RoleSpec:
    """How a role loads: default classes, the file that proves a checkpoint is there."""

    model: str  # dotted class path, overridable per profile with ModelRef.class_name
    processor: str | None  # loaded beside the model; the role then returns (model, processor)
    config_file: str
    weights: bool  # a torch module: needs safetensors, gets dtype, device and eval()


ROLES: dict[str, RoleSpec] = {
    "captioner": RoleSpec("transformers.BlipForConditionalGeneration", "transformers.AutoProcessor",
                          "config.json", True),
    "clip": RoleSpec("transformers.CLIPModel", "transformers.CLIPProcessor", "config.json", True),
    "text_encoder": RoleSpec("transformers.CLIPTextModel", None, "config.json", True),
    "tokenizer": RoleSpec("transformers.CLIPTokenizer", None, "tokenizer_config.json", False),
    # SDXL's second text tower (model/base_family.py): both or neither
    "text_encoder_2": RoleSpec("transformers.CLIPTextModelWithProjection", None, "config.json", True),
    "tokenizer_2": RoleSpec("transformers.CLIPTokenizer", None, "tokenizer_config.json", False),
    "unet": RoleSpec("diffusers.UNet2DConditionModel", None, "config.json", True),
    "vae": RoleSpec("diffusers.AutoencoderKL", None, "config.json", True),
    # DDPM: the training schedule; inference code may swap schedulers via from_config.
    "scheduler": RoleSpec("diffusers.DDPMScheduler", None, "scheduler_config.json", False),
    "dino": RoleSpec("transformers.AutoModel", "transformers.AutoImageProcessor", "config.json", True),
    "segmentation": RoleSpec("transformers.AutoModelForSemanticSegmentation",
                             "transformers.AutoImageProcessor", "config.json", True),
    # reads every labelled attribute of a synth render (evaluation on synth subjects)
    "oracle": RoleSpec("model.oracle.AttributeOracle", None, "config.json", True),
}
# null (or absent) = segmentation: the saliency fallback for foreground masks; oracle: no
# oracle columns in evaluation (profiles not trained on synth renders have none)
# oracle columns in evaluation (profiles not trained on synth renders have none); the second
# text tower: a one-encoder (SD 1.x/2.x) base
NULLABLE_ROLES = {"segmentation", "oracle", "text_encoder_2", "tokenizer_2"}
SECOND_TEXT_TOWER = ("text_encoder_2", "tokenizer_2")


class ModelLoadError(RuntimeError):
    """A role's checkpoint cannot be loaded; names the role, the id and why."""

    def __init__(self, role: str, id: str, reason: str):
        super().__init__(f"cannot load {role} model {id!r}: {reason}")
        self.role, self.id, self.reason = role, id, reason


class ModelRef(BaseModel):
    """Where one role's checkpoint lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # hub id, local directory, or tiny://<component>
    subfolder: str | None = None
    revision: str | None = None
    class_name: str | None = None  # e.g. "transformers.Blip2ForConditionalGeneration"

    @field_validator("id")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        if value.startswith(TINY_SCHEME):
            if value[len(TINY_SCHEME):] not in tiny.BUILDERS:
                raise ValueError(f"unknown tiny component in {value!r} (known: {sorted(tiny.BUILDERS)})")
        elif not is_local(value):
            try:
                validate_repo_id(value)
            except HFValidationError as exc:
                raise ValueError(f"not a hub id or local path: {exc}") from None
        return value


class Profile(BaseModel):
    """A named set of checkpoints plus where and at what precision they run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    device: str
    dtype: Literal["float32", "float16", "bfloat16"]
    resolution: int  # image side in pixels that data and training use with this profile
    roles: dict[str, ModelRef | None]
    trust_remote_code: bool = False
    # The text CFG its base samples well at, used wherever a run does not set one: SD's 7.5
    # over-drives the synth profile's small pixel-space base (the oracle read background 0.67
    # and scale 0.52 at 7.5, 1.00 and 0.84 at 2.0).
    guidance_scale: float = Field(7.5, ge=1.0)
    # The image-embedding cosine above which two images count as near-duplicates: a property of
    # the CLIP, like the scale. The synth CLIP packs its space tighter (same-object-same-scene
    # precision 0.62 at 0.97, 0.94 at 0.995; provenance.json).
    near_duplicate_threshold: float = Field(0.97, gt=0.0, le=1.0)
    # The identity-vector (dino role CLS) cosine above which two images may join one identity
    # group (mutual kNN, `tasks.pairs.propose_groups`): a property of the dino, like the above.
    group_threshold: float = Field(0.9, gt=-1.0, le=1.0)
    # The scheduler its base samples well with (`model.sampling`), used wherever a run does not
    # set one. The synth base draws the scene's tilt and light only when sampled ancestrally
    # (oracle: rotation 0.83 -> 0.94, lighting 0.66 -> 0.92 with its own DDPM schedule; README).
    sampler: Sampler = "ddim"
    # The object CFG of ours (`model.pipeline.combine_guidance`) where a run does not set one. With
    # the synth base at 3.0 ours' samples lost their prompted backgrounds to dark fields (main-job
    # report); at 2.0, ours samples 2 v(text, object) - v(nothing), like text CFG at 2.
    object_guidance_scale: float = Field(3.0, ge=1.0)
    # A prompt in the form its base learned ("{}" for the object), where a user starts (the web
    # app's prompt box): the synth base learned one caption form and draws a dark field for
    # "a photo of a {} on the beach".
    example_prompt: str = "a photo of a {} on the beach"

    def own(self, name: str, configured: Any) -> Any:
        """`configured` (a run's setting) if set, else this profile's own value of field `name`."""
        return getattr(self, name) if configured is None else configured

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"expected cpu, mps, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("resolution")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("roles")
    @classmethod
    def _complete(cls, roles: dict[str, ModelRef | None]) -> dict[str, ModelRef | None]:
        unknown = sorted(set(roles) - set(ROLES))
        missing = sorted(set(ROLES) - set(roles) - NULLABLE_ROLES)
        nulled = sorted(r for r, ref in roles.items() if ref is None and r not in NULLABLE_ROLES)
        if unknown or missing or nulled:
            raise ValueError(f"unknown roles {unknown}, missing roles {missing}, "
                             f"null roles that need a model {nulled} (known roles: {list(ROLES)})")
        return roles

    @property
    def family(self) -> str:
        """The base-model family (model.base_family.FAMILIES): a second text tower means SDXL."""
        return "sdxl" if self.roles.get("text_encoder_2") is not None else "sd"

    @model_validator(mode="after")
    def _both_text_towers(self) -> Profile:
        present = [role for role in SECOND_TEXT_TOWER if self.roles.get(role) is not None]
        if len(present) == 1:
            raise ValueError(f"{present[0]} is set without {set(SECOND_TEXT_TOWER) - set(present)}: "
                             "an SDXL base needs its second text encoder and tokenizer both")
        return self

    @model_validator(mode="after")
    def _tiny_resolution(self) -> Profile:
        # Tiny image models have fixed input sizes; another resolution would fail mid-pipeline.
        uses_tiny = any(r is not None and r.id.startswith(TINY_SCHEME) for r in self.roles.values())
        if uses_tiny and self.resolution != tiny.RESOLUTION:
            raise ValueError(f"resolution must be {tiny.RESOLUTION} with tiny:// models, "
                             f"got {self.resolution}")
        return self


def is_local(model_id: str) -> bool:
    """Paths are explicit (absolute, ./, ../, ~) so a hub id is never mistaken for a directory."""
    return model_id.startswith(("/", ".", "~"))


def load_profile(name_or_path: str) -> Profile:
    """Load `configs/profiles/<name>.yaml`, or a YAML path; relative local ids are relative to it."""
    path = profile_path(name_or_path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile must be a YAML mapping")
    data.setdefault("name", path.stem)
    for ref in (data.get("roles") or {}).values():
        if isinstance(ref, dict) and isinstance(ref.get("id"), str) and ref["id"].startswith((".", "~")):
            ref["id"] = str((path.parent / Path(ref["id"]).expanduser()).resolve())
    return Profile.model_validate(data)


def weights_origin(name_or_path: str) -> str:
    """Which weights a profile's numbers come from, in one line for reports: random (tiny), the
    training record of a profile trained here (`provenance.json` beside its UNet folder), or the
    UNet's id."""
    try:
        profile = load_profile(name_or_path)
    except (OSError, ValueError, ValidationError, yaml.YAMLError):
        return f"unknown (no profile {name_or_path!r} here)"
    unet = profile.roles["unet"]
    if unet.id.startswith(TINY_SCHEME):
        return "random (tiny://, built offline)"
    record = Path(unet.id).parent / "provenance.json" if is_local(unet.id) else None
    if record is not None and record.is_file():
        p = json.loads(record.read_text())
        return (f"trained here by `tamer models train-profile`: recipe {p['recipe_fingerprint']}, seed {p['seed']}, "
                f"code {p['code_commit']}, written {p['written']}")
    return f"UNet {unet.id}" + (f" ({unet.subfolder})" if unet.subfolder else "")


def torch_dtype(profile: Profile) -> torch.dtype:
    """The profile's dtype as torch's object (models load directly in it)."""
    return getattr(torch, profile.dtype)


def device(profile: Profile) -> torch.device:
    """The profile's device, or cpu (with a warning) when that accelerator is absent."""
    dev = torch.device(profile.device)
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}[dev.type]
    if not available:
        warnings.warn(f"profile {profile.name!r} wants {dev} but it is not available; using cpu",
                      stacklevel=2)
        return torch.device("cpu")
    return dev


_profile_device = device  # load_role's `device` argument shadows the function's name


def resolve(profile: Profile, role: str) -> tuple[str, str | None]:
    """(local dir or hub id, subfolder) for a role; builds the tiny cache on demand."""
    ref = _ref(profile, role)
    if ref.id.startswith(TINY_SCHEME):
        return str(tiny.ensure_built(ref.id[len(TINY_SCHEME):])), ref.subfolder
    return ref.id, ref.subfolder


_SHARED_ROLES: ContextVar[dict[tuple, Any] | None] = ContextVar("tamer_shared_roles", default=None)


@contextmanager
def shared_roles() -> Iterator[None]:
    """Inside this block, `load_role(..., shared=True)` loads each checkpoint once per device and
    hands every caller the same copy; the copies are dropped when it ends. The pipeline's data
    stages run in one process when the new data is small: caption and embed both need CLIP,
    and loading it again (and embed's image and text passes each loading it) was most of an
    incremental run's embed stage. Only callers that never change the model may share it."""
    token = _SHARED_ROLES.set({})
    try:
        yield
    finally:
        _SHARED_ROLES.reset(token)


def load_role(profile: Profile, role: str, *, device: str | torch.device | None = None,
              shared: bool = False, **kwargs: Any):
    """Load a role in eval mode with `from_pretrained`; processor roles return (model, processor).

    `device` overrides the profile's device; other kwargs go to the model's `from_pretrained`.
    `shared`: inside `shared_roles()`, the block's one copy (the caller must not change it).
    Returns None for a null role (segmentation: use the saliency fallback).
    """
    if role in NULLABLE_ROLES and profile.roles.get(role) is None:  # null or absent
        return None
    cache = _SHARED_ROLES.get() if shared and not kwargs else None
    if cache is None:
        return _load_role(profile, role, device, **kwargs)
    ref = _ref(profile, role)
    key = (role, ref.id, ref.subfolder, ref.class_name, ref.revision, str(torch_dtype(profile)),
           str(device or _profile_device(profile)), profile.trust_remote_code)
    if key not in cache:
        cache[key] = _load_role(profile, role, device)
    return cache[key]


def _load_role(profile: Profile, role: str, device: str | torch.device | None, **kwargs: Any):
    ref, spec = _ref(profile, role), ROLES[role]
    try:
        path, subfolder = resolve(profile, role)  # inside: a failed tiny build is a load error too
        model = _from_pretrained(import_class(ref.class_name or spec.model), profile, ref, path,
                                 subfolder, spec.weights, kwargs)
        if spec.weights:
            model = model.to(device or _profile_device(profile)).eval()
        if spec.processor is None:
            return model
        processor = _from_pretrained(import_class(spec.processor), profile, ref, path, subfolder,
                                     False, {})
    except Exception as exc:  # any loader failure is reported the same way, with the id
        raise ModelLoadError(role, ref.id, f"{type(exc).__name__}: {exc}") from exc
    return model, processor


# ---- helpers ----

def _ref(profile: Profile, role: str) -> ModelRef:
    if role not in ROLES:
        raise KeyError(f"unknown role {role!r} (known: {list(ROLES)})")
    ref = profile.roles.get(role)
    if ref is None:
        raise ModelLoadError(role, "null", f"profile {profile.name!r} sets no model for this role")
    return ref


def import_class(name: str) -> type:
    """'transformers.CLIPModel', or a bare name looked up in transformers, then diffusers."""
    module, _, attr = name.rpartition(".")
    for candidate in [module] if module else ["transformers", "diffusers"]:
        found = getattr(importlib.import_module(candidate), attr, None)
        if isinstance(found, type):
            return found
    raise ImportError(f"class {name!r} not found")


def _from_pretrained(cls: type, profile: Profile, ref: ModelRef, path: str, subfolder: str | None,
                     weights: bool, extra: dict[str, Any]) -> Any:
    # diffusers' classes and the project's own ConfigMixin models (oracle, pixel-space VAE)
    is_diffusers = issubclass(cls, ConfigMixin)
    kwargs: dict[str, Any] = {"revision": ref.revision}
    if subfolder:
        kwargs["subfolder"] = subfolder
    if not is_diffusers:  # diffusers' single components take no remote code
        kwargs["trust_remote_code"] = profile.trust_remote_code
    if weights:
        kwargs["use_safetensors"] = True  # never unpickle a checkpoint
        kwargs["torch_dtype" if is_diffusers else "dtype"] = torch_dtype(profile)
    return cls.from_pretrained(path, **{**kwargs, **extra})
