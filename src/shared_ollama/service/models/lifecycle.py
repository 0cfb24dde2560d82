"""Start-up of the model lifecycle: where the models config is, the hardware profile, and preloading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shared_ollama.errors import SharedOllamaError
from shared_ollama.service.models.ops import ModelOps
from shared_ollama.service.models.profiles import (
    DEFAULT_MODELS_FILE,
    Selection,
    detect_hardware,
    load_models_config,
    select_profile,
)
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]


def models_config_path(settings: Settings) -> Path | None:
    """The models config in force: the setting, else ``config/models.yaml`` when it exists."""
    if settings.models_config is not None:
        return settings.models_config
    return DEFAULT_MODELS_FILE if DEFAULT_MODELS_FILE.is_file() else None


async def choose_profile(
    settings: Settings, tags: Callable[[], Awaitable[JsonDict]], *, can_pull: bool
) -> Selection | None:
    """Detect the hardware and pick a profile; None when there is no models config. A bad config fails here.
    ``tags`` asks the engine for its installed models (a failure means: choose by hardware alone)."""
    path = models_config_path(settings)
    if path is None:
        return None
    config = load_models_config(path)
    hardware = await asyncio.to_thread(detect_hardware)
    try:
        listed = await tags()
        available: set[str] | None = {str(m.get("name")) for m in listed.get("models", []) if isinstance(m, dict)}
    except SharedOllamaError:
        available = None  # engine not answering yet: choose by hardware alone
    selection = select_profile(config, hardware, forced=settings.profile, available_models=available, can_pull=can_pull)
    log.info("model profile %s: %s", selection.profile.name, selection.reason)
    return selection


async def preload(models: ModelOps, selection: Selection) -> None:
    """Load the profile's ``preload`` models, one after another (a failure is logged, not fatal)."""
    for model in selection.profile.models:
        if not model.preload:
            continue
        try:
            await models.load(model.name)
            log.info("preloaded %s", model.name)
        except SharedOllamaError as exc:
            log.warning("preloading %s failed: %s", model.name, exc.message)
