"""Checking a model profile without loading its weights, so a run fails on a bad id before any
data work starts: `check_profile` (dry run, never downloads; `tamer models check`) and
`preflight` (raises `ModelLoadError`; fetches at most each role's config file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from pydantic import BaseModel, ValidationError

from model.profiles import (ROLES, TINY_SCHEME, ModelLoadError, Profile, import_class, is_local, load_profile,
                            load_role, resolve)


class RoleCheck(BaseModel):
    """One line of a dry-run check; `warning` marks ok-but-attention (e.g. would download)."""

    role: str
    id: str | None
    ok: bool
    reason: str
    warning: bool = False


def check_profile(name_or_path: str) -> list[RoleCheck]:
    """Dry-run a profile without downloading; for tiny:// roles also build and load them."""
    try:
        profile = load_profile(name_or_path)
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
        return [RoleCheck(role="profile", id=name_or_path, ok=False, reason=str(exc))]
    checks = []
    for role in ROLES:
        check = _check_role(profile, role, local_only=True)
        ref = profile.roles.get(role)
        if check.ok and ref is not None and ref.id.startswith(TINY_SCHEME):
            try:
                load_role(profile, role, device="cpu")
                check = check.model_copy(update={"reason": "built and loaded"})
            except ModelLoadError as exc:
                check = check.model_copy(update={"ok": False, "reason": exc.reason})
        checks.append(check)
    return checks


def preflight(profile: Profile, roles: list[str]) -> None:
    """Raise ModelLoadError for the first role whose checkpoint cannot be loaded.

    Fetches at most each role's small config file (never weights), and only from the hub when
    HF_HUB_OFFLINE is unset, so a typo'd id fails in seconds instead of mid-pipeline.
    """
    for role in roles:
        if role not in ROLES:
            raise ModelLoadError(role, "", f"unknown role (known: {list(ROLES)})")
        check = _check_role(profile, role, local_only=False)
        if not check.ok:
            raise ModelLoadError(role, check.id or "", check.reason)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _check_role(profile: Profile, role: str, *, local_only: bool) -> RoleCheck:
    """Check one role without loading weights: classes import, config found, config type fits."""
    ref, spec = profile.roles.get(role), ROLES[role]
    if ref is None:
        fallback = {"segmentation": "saliency fallback", "oracle": "no oracle columns in evaluation"}.get(
            role, "one text encoder (SD 1.x/2.x base)")
        return RoleCheck(role=role, id=None, ok=True, reason=f"not set: {fallback}")

    def result(ok: bool, reason: str, warning: bool = False) -> RoleCheck:
        return RoleCheck(role=role, id=ref.id, ok=ok, reason=reason, warning=warning)

    try:
        cls = import_class(ref.class_name or spec.model)
        if spec.processor:
            import_class(spec.processor)
        path, subfolder = resolve(profile, role)
    except Exception as exc:  # import errors and failed tiny builds alike
        return result(False, f"{type(exc).__name__}: {exc}")
    filename = f"{subfolder}/{spec.config_file}" if subfolder else spec.config_file
    if is_local(path):
        folder = Path(path).expanduser() / (subfolder or "")
        if not folder.is_dir():
            return result(False, f"local directory {folder} does not exist")
        if not (folder / spec.config_file).is_file():
            return result(False, f"no {spec.config_file} in {folder}")
        if spec.weights and not any(folder.glob("*.safetensors")):
            return result(False, f"no .safetensors weights in {folder}")
        config_path, note = folder / spec.config_file, "local directory"
    elif local_only:
        cached = try_to_load_from_cache(path, filename, revision=ref.revision)
        if not isinstance(cached, str):
            return result(True, "not in local cache, would download", warning=True)
        config_path, note = Path(cached), "in local hub cache"
    else:
        try:
            config_path = Path(hf_hub_download(path, filename, revision=ref.revision,
                                               local_files_only=_hub_offline()))
        except Exception as exc:  # offline miss, 404, gated repo, network: all mean "cannot load"
            return result(False, f"{type(exc).__name__}: {exc}")
        note = "config found"
    mismatch = _config_mismatch(cls, config_path) if spec.weights else None
    return result(False, mismatch) if mismatch else result(True, note)


def _config_mismatch(cls: type, config_path: Path) -> str | None:
    """Catch an id of the wrong architecture (e.g. BLIP-2 under a BLIP class) before loading."""
    expected = getattr(getattr(cls, "config_class", None), "model_type", "")
    if not expected:  # Auto classes and diffusers models accept whatever their config names
        return None
    found = json.loads(config_path.read_text()).get("model_type", "")
    # A sub-model loads from its parent's config: CLIPTextModel ("clip_text_model") from "clip".
    if found == expected or expected.startswith(f"{found}_"):
        return None
    return f"{cls.__name__} expects model_type {expected!r}, config has {found!r}"
