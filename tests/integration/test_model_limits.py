"""The active profile's ``limits`` apply to the gateway (an explicit setting still wins), and say where they came
from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.conftest import ServedGateway

ROOT = Path(__file__).resolve().parents[2]
Start = Callable[..., ServedGateway]


async def test_the_profiles_limits_set_the_slots_and_the_models_kept_loaded(serve_gateway: Start) -> None:
    gw = serve_gateway(models_config=ROOT / "config" / "models.yaml", profile="tiny-cpu")
    async with httpx.AsyncClient(base_url=gw.url) as client:
        profile = (await client.get("/api/v1/system/model-profile")).json()
        queue = (await client.get("/api/v1/queue/stats")).json()
    limits = profile["limits_in_force"]
    assert (limits["engine_slots"], limits["max_loaded_models"], limits["idle_unload_seconds"]) == (2, 2, 300)
    assert limits["source"] == {"slots": "profile", "max_loaded_models": "profile", "idle_unload_seconds": "profile"}
    assert queue["engine_slots"]["total"] == 2
    assert profile["memory_manager"]["max_loaded_models"] == 2


async def test_an_explicit_setting_wins_over_the_profiles_limit(serve_gateway: Start) -> None:
    gw = serve_gateway(models_config=ROOT / "config" / "models.yaml", profile="tiny-cpu", engine_slots=3)
    async with httpx.AsyncClient(base_url=gw.url) as client:
        queue = (await client.get("/api/v1/queue/stats")).json()
    assert queue["engine_slots"]["total"] == 3
