"""Hardware detection and model profiles: which models this machine should serve, and why.

``config/models.yaml`` lists profiles (``tiny-cpu``, ``laptop``, ``workstation`` ...), each with the hardware it
suits (``when``), its models, limits and aliases (``default-text`` -> a model name). The first profile whose
conditions match the detected hardware wins; ``SHARED_OLLAMA_PROFILE`` forces one. RAM is counted in GiB (and
called GB, as RAM sizes are sold): a "32 GB" laptop reads 32.0. When the engine cannot pull models (the embedded
engine, offline) and none of the matched profile's text models is installed, the default profile is used instead.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psutil
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.names import canonical_model

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_MODELS_FILE = Path("config/models.yaml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_NVIDIA_QUERY = ("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")


class Gpu(NamedTuple):
    name: str
    memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class Hardware:
    """One reading of the machine. On Apple Silicon the GPU shares the RAM (unified memory)."""

    total_ram_bytes: int
    available_ram_bytes: int
    cpu_cores: int
    platform: str
    apple_silicon: bool = False
    gpus: tuple[Gpu, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", tuple(Gpu(*gpu) for gpu in self.gpus))

    @property
    def total_ram_gb(self) -> float:
        return self.total_ram_bytes / GIB

    @property
    def has_gpu(self) -> bool:
        """An NVIDIA GPU, or Apple Silicon's integrated one (which Ollama uses through Metal)."""
        return self.apple_silicon or bool(self.gpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_ram_gb": _gb(self.total_ram_bytes),
            "available_ram_gb": _gb(self.available_ram_bytes),
            "cpu_cores": self.cpu_cores,
            "platform": self.platform,
            "apple_silicon": self.apple_silicon,
            "gpus": [{"name": g.name, "memory_gb": _gb(g.memory_bytes)} for g in self.gpus],
        }


def _gb(value: int | None) -> float | None:
    return None if value is None else round(value / GIB, 1)


def _nvidia_gpus(timeout: float) -> tuple[Gpu, ...]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ()
    try:
        done = subprocess.run([binary, *_NVIDIA_QUERY], capture_output=True, text=True, timeout=timeout, check=True)
        rows = [line.rpartition(",") for line in done.stdout.splitlines() if "," in line]
        return tuple(
            Gpu(name.strip(), int(float(mib)) * 1024**2 if mib.strip().replace(".", "", 1).isdigit() else None)
            for name, _, mib in rows
            if name.strip()
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.info("nvidia-smi failed (%s): no GPU reported", exc)
        return ()


def detect_hardware(*, nvidia_smi_timeout: float = 2.0) -> Hardware:
    """Read RAM, cores and GPUs. Never raises: a failed probe reports nothing (it may run ``nvidia-smi``, so
    call it at start-up or in a thread, not on the event loop)."""
    try:
        total, available = map(int, psutil.virtual_memory()[:2])  # (total, available, ...)
    except Exception:  # psutil failing is not worth failing start-up for
        total = available = 0
    cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    machine = platform.machine().lower() or "unknown"
    apple = sys.platform == "darwin" and machine == "arm64"  # unified memory: the GPU's memory is the RAM
    gpus = () if apple else _nvidia_gpus(nvidia_smi_timeout)
    return Hardware(total, available, int(cores), f"{sys.platform}-{machine}", apple, gpus)


class ModelRole(StrEnum):
    TEXT = "text"
    VISION = "vision"
    EMBEDDING = "embedding"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """Hardware a profile suits: ``min_ram_gb <= RAM < max_ram_gb`` (GiB), and a GPU if ``requires_gpu``."""

    min_ram_gb: float | None = Field(default=None, ge=0)
    max_ram_gb: float | None = Field(default=None, gt=0)
    requires_gpu: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> When:
        if self.min_ram_gb is not None and self.max_ram_gb is not None and self.min_ram_gb >= self.max_ram_gb:
            raise ValueError(f"min_ram_gb ({self.min_ram_gb}) must be below max_ram_gb ({self.max_ram_gb})")
        return self

    def matches(self, hardware: Hardware) -> bool:
        ram = hardware.total_ram_gb
        return (
            (self.min_ram_gb is None or ram >= self.min_ram_gb)
            and (self.max_ram_gb is None or ram < self.max_ram_gb)
            and (not self.requires_gpu or hardware.has_gpu)
        )

    def explain(self, hardware: Hardware) -> str:
        bounds = [f">= {self.min_ram_gb:g} GB"] if self.min_ram_gb is not None else []
        bounds += [f"< {self.max_ram_gb:g} GB"] if self.max_ram_gb is not None else []
        text = f"{hardware.total_ram_gb:.1f} GB RAM" + (f" {' and '.join(bounds)}" if bounds else "")
        return text + (" with a GPU" if self.requires_gpu else "")


class ProfileModel(_Strict):
    name: str = Field(min_length=1)
    role: ModelRole
    expected_memory_gb: float = Field(ge=0)
    preload: bool = False


class ProfileLimits(_Strict):
    max_loaded_models: int | None = Field(default=None, ge=1)
    num_parallel: int | None = Field(default=None, ge=1)
    idle_unload_seconds: float | None = Field(default=None, gt=0)


class Profile(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    description: str = ""
    when: When = Field(default_factory=When)
    models: list[ProfileModel] = Field(min_length=1)
    limits: ProfileLimits = Field(default_factory=ProfileLimits)
    aliases: dict[str, str | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        names = [model.name for model in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"profile '{self.name}' lists a model twice")
        for alias, target in self.aliases.items():
            if target is not None and target not in names:
                raise ValueError(f"profile '{self.name}': alias '{alias}' names '{target}', not one of its models")
        return self

    def text_models(self) -> list[ProfileModel]:  # the models that make the profile usable
        return [m for m in self.models if m.role is ModelRole.TEXT] or list(self.models)


class PinnedOptions(_Strict):
    """Load-time options fixed for a model: requests cannot change them (a change would reload the model)."""

    num_ctx: int | None = Field(default=None, ge=256)
    num_batch: int | None = Field(default=None, ge=1)
    num_gpu: int | None = Field(default=None, ge=-1)
    main_gpu: int | None = Field(default=None, ge=0)
    num_thread: int | None = Field(default=None, ge=1)
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    low_vram: bool | None = None
    numa: bool | None = None


class ModelSettings(_Strict):
    idle_timeout: float | None = Field(default=None, gt=0)
    """Seconds unused before the model is unloaded (unset: the global ``idle_unload_seconds``)."""
    pinned_options: PinnedOptions = Field(default_factory=PinnedOptions)
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Output cap for a generation that sets none (unset: the service's ``default_max_output_tokens``)."""


class ModelsConfig(_Strict):
    default_profile: str
    profiles: list[Profile] = Field(min_length=1)
    model_settings: dict[str, ModelSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelsConfig:
        names = [profile.name for profile in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError("two profiles have the same name")
        if self.default_profile not in names:
            raise ValueError(f"default_profile '{self.default_profile}' is not a profile: {', '.join(names)}")
        return self

    def profile(self, name: str) -> Profile:
        if found := next((p for p in self.profiles if p.name == name), None):
            return found
        known = ", ".join(sorted(p.name for p in self.profiles))
        raise ValueError(f"unknown model profile '{name}': known profiles are {known}")


def load_models_config(path: Path) -> ModelsConfig:
    """The models config; a missing, malformed or invalid file is a ``ValueError`` naming it."""
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
        return ModelsConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"invalid models file {path}: {exc}") from exc


def model_settings(config: ModelsConfig, model: str) -> tuple[float | None, dict[str, Any]]:
    """A model's idle timeout (None: the global one) and pinned load-time options (unset ones omitted)."""
    wanted = canonical_model(model)
    for name, entry in config.model_settings.items():
        if canonical_model(name) == wanted:
            return entry.idle_timeout, entry.pinned_options.model_dump(exclude_none=True)
    return None, {}


def model_output_cap(config: ModelsConfig, model: str) -> int | None:
    """The model's default output cap from the models config (None: not set)."""
    wanted = canonical_model(model)
    for name, entry in config.model_settings.items():
        if canonical_model(name) == wanted:
            return entry.max_output_tokens
    return None


Source = Literal["forced", "hardware", "fallback", "default"]
"""How the profile was chosen: forced, matched the hardware, fell back (models missing), nothing matched."""


@dataclass(frozen=True, slots=True)
class Selection:
    profile: Profile
    reason: str
    hardware: Hardware
    source: Source
    config: ModelsConfig = field(repr=False)
    available_models: frozenset[str] | None = field(default=None, repr=False)
    """Installed models (canonical names), when the caller knew them."""

    def resolve(self, alias_or_name: str) -> str:
        """An alias of the active profile to its model; any other name passes through unchanged."""
        if not any(alias_or_name in p.aliases for p in self.config.profiles):
            return alias_or_name
        target = self.profile.aliases.get(alias_or_name)  # an alias of another profile only: None here too
        if target is None:
            raise InvalidRequest(
                f"the active model profile '{self.profile.name}' has no '{alias_or_name}' model: "
                "name a model explicitly, or choose another profile (SHARED_OLLAMA_PROFILE)",
                param="model",
            )
        return target

    def installed(self, model: str) -> bool | None:
        return None if self.available_models is None else canonical_model(model) in self.available_models

    def as_dict(self) -> dict[str, Any]:
        """The body of ``GET /api/v1/system/model-profile``."""
        models = []
        for model in self.profile.models:
            idle, pinned = model_settings(self.config, model.name)
            entry = {"installed": self.installed(model.name), "idle_timeout_seconds": idle, "pinned_options": pinned}
            models.append(model.model_dump(mode="json") | entry)
        total = round(sum(m.expected_memory_gb for m in self.profile.models), 1)
        ram = round(self.hardware.total_ram_gb, 1)
        return {
            "profile": {"name": self.profile.name, "description": self.profile.description},
            "source": self.source,
            "reason": self.reason,
            "hardware": self.hardware.as_dict(),
            "models": models,
            "memory": {
                "expected_total_gb": total,
                "expected_preload_gb": round(sum(m.expected_memory_gb for m in self.profile.models if m.preload), 1),
                "ram_gb": ram,
                "fits_in_ram": total <= ram,
            },
            "limits": self.profile.limits.model_dump(exclude_none=True),
            "aliases": dict(self.profile.aliases),
        }


def select_profile(
    config: ModelsConfig,
    hardware: Hardware,
    *,
    forced: str | None = None,
    available_models: set[str] | None = None,
    can_pull: bool = False,
) -> Selection:
    """Choose the profile for this hardware.

    ``forced`` (``SHARED_OLLAMA_PROFILE``) wins; an unknown name is a ``ValueError`` listing the known ones.
    Otherwise the first profile whose ``when`` matches, else ``default_profile``. ``available_models`` are the
    installed models: unless the engine ``can_pull`` (Ollama), a matched profile none of whose text models is
    installed falls back to ``default_profile``, and the reason says so.
    """
    installed = None if available_models is None else frozenset(canonical_model(m) for m in available_models)

    def missing(profile: Profile) -> list[str]:
        models = [m.name for m in profile.text_models()]
        return [] if installed is None or any(canonical_model(m) in installed for m in models) else models

    def chosen(profile: Profile, reason: str, source: Source) -> Selection:
        return Selection(profile, reason, hardware, source, config, installed)

    default = config.profile(config.default_profile)
    if forced is not None and forced.strip():
        profile = config.profile(forced.strip())
        reason = "forced by SHARED_OLLAMA_PROFILE"
        if missing(profile):
            reason += f" (its text models are not installed: {', '.join(missing(profile))})"
        return chosen(profile, reason, "forced")
    matched = next((p for p in config.profiles if p.when.matches(hardware)), None)
    if matched is None:
        reason = f"no profile matches {hardware.total_ram_gb:.1f} GB RAM: using the default profile {default.name}"
        return chosen(default, reason, "default")
    reason = f"{matched.when.explain(hardware)}: {matched.name}"
    absent = missing(matched)
    if absent and not can_pull and matched is not default:
        reason = (
            f"{reason}, but the {matched.name} profile's text models ({', '.join(absent)}) are not installed "
            f"and the engine cannot pull them: falling back to {default.name}"
        )
        if missing(default):
            reason += " (whose text models are not installed either)"
        return chosen(default, reason, "fallback")
    return chosen(matched, reason, "hardware")
