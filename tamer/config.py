"""Typed configuration: one pydantic model per component, loaded from YAML in configs/.

Precedence (later wins): code defaults < configs/default.yaml < --config FILE < environment
(TAMER_ROOT, TAMER_PROFILE, RAY_ADDRESS) < CLI flags. Unknown keys and invalid values fail
before any work starts, with the offending field named by pydantic.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from tamer.model_config import METHOD_SETTINGS, MethodSettings, TamerModelConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
PROFILES_DIR = CONFIG_DIR / "profiles"
DEFAULT_ROOT = "./tamer-data"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestSettings(Strict):
    max_pixels: int = Field(64_000_000, gt=0, description="larger images are rejected as bombs")
    min_side: int = Field(32, ge=1, description="smaller images are kept but flagged tiny")
    max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="larger files are rejected")
    files_per_chunk: int = Field(256, ge=1, description="unit of parallel work")
    shard_rows: int = Field(4096, ge=1, description="rows per committed images shard")
    row_group_rows: int = Field(1024, ge=1, description="Parquet row group size")
    executor: str = Field("ray", pattern="^(ray|local)$",
                          description="ray (used where it adds parallel reads: > 1 chunk, or a cluster), or local")


class RaySettings(Strict):
    address: str | None = Field(None, description="a cluster address; None starts a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray; None = all")
    bind_host: str = Field("127.0.0.1", description="local Ray listens here; not loopback = exposed (no auth)")


class SynthSettings(Strict):
    objects: int = Field(24, ge=1, description="identities in the embedded sample dataset")
    views: int = Field(6, ge=1, description="images per identity")
    size: int = Field(64, ge=16, le=1024)
    seed: int = 0
    held_out_fraction: float = Field(0.25, ge=0.0, lt=1.0)


class EmbedSettings(Strict):
    """CLIP embeddings, kNN index, near-duplicates, identity groups and cross-reference pairs."""

    executor: str = Field("ray", pattern="^(ray|local)$", description="ray, or local (serial)")
    local_below: int | None = Field(None, ge=0, description="fewer images to do than this run "
                                    "in-process; null (auto): in-process unless Ray adds workers (more "
                                    "than one actor, or a cluster address): one actor on a local Ray runs "
                                    "the same model and helper thread as this process, after Ray's start-up")
    batch_size: int = Field(64, ge=1, description="images per model call")
    actors: int = Field(1, ge=1, description="model actors, 1 CPU each; keep below the "
                        "cluster's CPUs so read tasks get one (2 on 2 CPUs stalls)")
    torch_threads: int = Field(1, ge=1, description="intra-op threads per model actor")
    batch_retries: int = Field(1, ge=0, description="retries of a failed model call before each "
                               "of its inputs is tried alone (failures are quarantined)")
    shard_rows: int = Field(8192, ge=1, description="rows per committed embeddings shard")
    export_rows: int = Field(100_000, ge=1, description="rows per clip-retrieval export file")
    index_memory: str = Field("4G", description="autofaiss max_index_memory_usage")
    index_exact_below: int = Field(20_000, ge=0, description="fewer vectors than this get an exact "
                                   "(Flat) index, faster to build and to query at this size than autofaiss's "
                                   "pick (HNSW); 0 = always autofaiss's pick")
    near_duplicate_threshold: float | None = Field(None, gt=0.0, le=1.0, description="cosine; null = the "
                                                   "profile's (0.97 by default)")
    group_threshold: float | None = Field(None, gt=-1.0, le=1.0, description="cosine of two identity vectors "
                                          "for an edge; null = the profile's")
    identity_vectors: bool = Field(True, description="also embed each image with the profile's dino role "
                                   "(one more forward pass per image): identity groups cluster those; off: CLIP's")
    group_neighbors: int = Field(5, ge=1, description="k of the mutual-kNN graph")
    group_augment: int = Field(4, ge=1, description="each identity vector averaged with its nearest "
                               "(group_augment - 1) before the graph (database-side augmentation); 1 = none")
    group_min_size: int = Field(2, ge=2, description="smaller proposed groups stay ungrouped")
    pairs_per_subject: int = Field(30, ge=1, description="cap of (reference, target) pairs")
    seed: int = Field(0, description="seed of the deterministic pair sampling")


class CaptionSettings(Strict):
    """VLM captions + CLIP attributes composed into training captions (tasks/caption.py)."""

    executor: str = Field("ray", pattern="^(ray|local)$", description="ray, or local (serial)")
    local_below: int = Field(64, ge=0, description="fewer images to do than this run "
                             "in-process: Ray actor start-up would cost more than it saves")
    batch_size: int = Field(32, ge=1, description="images per model call (bigger: faster)")
    actors: int | None = Field(None, ge=1, description="model actors; None = one per GPU on "
                               "cuda profiles, else one per CPU")
    gpus_per_actor: float = Field(1.0, gt=0.0, le=8.0, description="on cuda profiles only")
    batch_retries: int = Field(1, ge=0, description="retries of a failed batch before each "
                               "of its rows is tried alone (failures are quarantined)")
    shard_rows: int = Field(4096, ge=1, description="rows per committed captions shard")
    # Everything below changes the captions, so it is part of the caption config hash.
    max_new_tokens: int = Field(30, ge=1, le=512)
    num_beams: int = Field(1, ge=1, description="1 = greedy: deterministic and cheapest")
    prompt: str | None = Field(None, description="task prompt: '<MORE_DETAILED_CAPTION>' "
                               "(Florence-2), '<image>caption en' (PaliGemma), or a BLIP prefix")
    attributes: str = Field("attributes.yaml", description="vocabulary; relative to configs/")
    template: str = Field("a photo of {object} {scene}. {raw}", description="model/compose.py")
    object_phrase: str = Field("{color} {texture} {material} {shape} {class}",
                               description="adjectives then class noun; fills {object}")
    object_token: str = Field("<obj>", min_length=1,
                              description="placeholder of the object in `object_caption`")


class TrainSettings(Strict):
    """Distributed training (tasks/train.py). `model` holds `TamerModelConfig` fields."""

    steps: int = Field(1000, ge=1, description="optimizer steps (each over all workers)")
    batch_size: int = Field(8, ge=1, description="rows per worker per micro-batch")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-4, gt=0.0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(1e-2, ge=0.0)
    # Fresh adapter weights get large, noisy gradients; ramping the LR avoids an early blow-up.
    warmup_steps: int = Field(100, ge=0, description="linear LR warm-up, then cosine decay")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final LR / peak LR")
    clip_norm: float | None = Field(1.0, gt=0.0, description="gradient norm clip; None = off")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA of trainable "
                                    "weights (e.g. 0.999), exported when set; None = off")
    mixed_precision: str = Field("no", pattern="^(no|bf16|fp16)$", description="autocast "
                                 "dtype on GPU (fp16 adds a GradScaler); ignored on CPU")
    seed: int = Field(0, description="model init, noise, dropout and batch policy")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int | None = Field(3, ge=1, description="newest kept; None = all")
    log_every: int = Field(10, ge=1, description="steps between log lines and metric rows")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    # Fractional: Ray Data's read and preprocess tasks need CPUs left over (see DESIGN.md).
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL; else gloo on CPU")
    max_failures: int = Field(2, ge=-1, description="worker restarts from the last "
                              "checkpoint; -1 = unlimited")
    heartbeat_s: float = Field(30.0, gt=0.0, description="registry heartbeat of a running run; "
                               "silent for 3 beats = interrupted (its process died)")
    data_cpus: float = Field(0.25, gt=0.0, description="CPUs per preprocessing task")
    model: dict[str, Any] = Field(default_factory=dict, description="TamerModelConfig fields")

    @field_validator("model")
    @classmethod
    def _model_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return TamerModelConfig.model_validate(value).model_dump(exclude_unset=True)


class RetrainSettings(Strict):
    """When new data is worth a training run: either threshold suffices."""

    min_new_images: int = Field(100, ge=1, description="images added since the trained version")
    min_fraction: float = Field(0.05, gt=0.0, description="... or this fraction of the dataset")
    debounce_s: int = Field(600, ge=0,
                            description="requests inside this window are deferred to its end: one retrain per burst")


EVAL_METHODS = tuple(METHOD_SETTINGS)  # every registered method, the default of eval.methods
METHOD_ALIASES = {m.alias: name for name, m in METHOD_SETTINGS.items() if m.alias}


def methods_help() -> str:
    return ", ".join(f"{name} ({m.alias})" if m.alias else name for name, m in METHOD_SETTINGS.items())


class _EvalProtocol(Strict):
    """The DreamBench-style evaluation (tasks/evaluate.py); None limits mean "all"."""

    data: str | None = Field(None, description="DreamBench-layout or synth folder; None = the "
                             "dataset's held-out subjects")
    pipeline: str | None = Field(None, description="TamerPipeline directory used when no "
                                 "training run is given or completed")
    methods: list[str] = Field(list(EVAL_METHODS), min_length=1, description=f"of {methods_help()}")
    subjects: int | None = Field(None, ge=1, description="first N subjects by name")
    prompts: int | None = Field(None, ge=1, description="first N prompts per subject (of 25)")
    seeds: int = Field(4, ge=1, description="images per prompt, one seed each (literature: 4)")
    seed: int = Field(0, description="the first seed")
    steps: int = Field(50, ge=1, description="sampling steps, every method")
    guidance_scale: float | None = Field(None, ge=1.0, description="text CFG, every method; null = the "
                                         "profile's (7.5 for tiny and sd15, 2.0 for synth)")
    object_guidance_scale: float | None = Field(None, ge=1.0, description="object CFG (ours); null = the "
                                                "profile's (3.0 for tiny and sd15, 2.0 for synth)")
    scheduler: str | None = Field(None, pattern="^(ddim|default)$", description="ddim (deterministic, "
                                  "the literature's baselines) or default (the base's own saved scheduler); "
                                  "null = the profile's (ddim for tiny and sd15, default for synth)")
    bootstrap: int = Field(1000, ge=10, description="resamples of subjects for 95% intervals")

    @field_validator("methods", mode="before")
    @classmethod
    def _known_methods(cls, value: Any) -> list[str]:
        names = value.split(",") if isinstance(value, str) else list(value)
        names = [METHOD_ALIASES.get(name.strip(), name.strip()) for name in names]
        unknown = sorted(set(names) - set(EVAL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {methods_help()}")
        return list(dict.fromkeys(names))

    def method_settings(self, name: str) -> MethodSettings:
        """The resolved settings of method `name` (its section over the model's defaults)."""
        return METHOD_SETTINGS[name].model_validate(getattr(self, name))


def _section(value: dict[str, Any], info) -> dict[str, Any]:
    return METHOD_SETTINGS[info.field_name].model_validate(value).model_dump(exclude_unset=True)


# One `eval.<method>` section per registered method, generated: adding a method adds its section.
# Config stays a leaf: the registry it reads is the methods' settings models (tamer/model_config.py
# says why), not their classes in tasks/methods, which check on import that both agree.
# Sections keep only the keys set, so a recipe's changed default does not change old configs' hash.
EvalSettings = create_model(
    "EvalSettings", __base__=_EvalProtocol, __module__=__name__,
    __validators__={"_sections": field_validator(*METHOD_SETTINGS)(_section)},
    **{name: (dict[str, Any], Field(default_factory=dict, description=f"{m.__name__} fields"))
       for name, m in METHOD_SETTINGS.items()})


class TamerConfig(Strict):
    root: str = Field(DEFAULT_ROOT, description="dataset root URI (local path, s3://, ...)")
    profile: str = Field("synth", description="model profile in configs/profiles/ or a profile YAML")
    ingest: IngestSettings = IngestSettings()
    ray: RaySettings = RaySettings()
    synth: SynthSettings = SynthSettings()
    caption: CaptionSettings = CaptionSettings()
    embed: EmbedSettings = EmbedSettings()
    train: TrainSettings = TrainSettings()
    retrain: RetrainSettings = RetrainSettings()
    eval: EvalSettings = EvalSettings()

    @field_validator("root")
    @classmethod
    def _folder_or_uri(cls, value: str) -> str:
        if "://" not in value.removeprefix("file://") and \
                Path(value.removeprefix("file://")).expanduser().is_file():
            raise ValueError(f"{value} is a file; the dataset root is a folder or a URI")
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        try:
            profile_path(value)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return value


class ConfigError(ValueError):
    """A configuration that failed validation; the message names the fields."""


def load_config(path: str | Path | None = None, **overrides: Any) -> TamerConfig:
    """Resolve the configuration; `overrides` are dotted keys ("ingest.shard_rows": 10)."""
    data = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
    if os.environ.get("TAMER_ROOT"):
        data["root"] = os.environ["TAMER_ROOT"]
    if os.environ.get("TAMER_PROFILE"):
        data["profile"] = os.environ["TAMER_PROFILE"]
    if os.environ.get("RAY_ADDRESS"):
        data.setdefault("ray", {})["address"] = os.environ["RAY_ADDRESS"]
    for dotted, value in overrides.items():
        if value is not None:
            _set_dotted(data, dotted, value)
    try:
        return TamerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def profile_path(name_or_path: str) -> Path:
    """`configs/profiles/<name>.yaml`, or a .yaml path; FileNotFoundError names the known ones."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {name_or_path!r} (known: {known}, or a .yaml path)")
    return path


def config_hash(model: BaseModel | dict[str, Any]) -> str:
    """A stable hash of a (sub)config, or of a mapping of JSON values built from several: what
    decides whether derived work is still valid."""
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    canonical = json.dumps(data, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
    return loaded


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def _describe(exc: ValidationError) -> str:
    """One line per invalid field; a single error stays on one line."""
    problems = [f"{'.'.join(str(part) for part in error['loc'])}: "
                f"{error['msg'].removeprefix('Value error, ')} (got {error.get('input')!r})"
                for error in exc.errors()]
    if len(problems) == 1:
        return f"invalid configuration: {problems[0]}"
    return "\n  ".join(["invalid configuration:", *problems])
