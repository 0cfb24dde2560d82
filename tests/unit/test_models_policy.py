"""The limits in force: an explicit setting wins, then the active profile's ``limits``, then the default."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from shared_ollama.service.models.policy import ModelPolicy, limits_in_force
from shared_ollama.service.models.profiles import Profile, ProfileLimits, ProfileModel
from shared_ollama.settings import Settings


def selection(**limits: Any) -> Any:
    model = ProfileModel(name="m:1b", role="text", expected_memory_gb=1.0)
    return SimpleNamespace(profile=Profile(name="p", description="", models=[model], limits=ProfileLimits(**limits)))


def test_the_profiles_limits_apply_when_no_setting_is_given() -> None:
    limits = limits_in_force(
        Settings(), selection(num_parallel=2, max_loaded_models=1, idle_unload_seconds=60), engine_parallel=None
    )
    assert (limits.slots, limits.max_loaded_models, limits.idle_unload_seconds) == (2, 1, 60.0)
    assert set(limits.source.values()) == {"profile"}
    assert ModelPolicy(None, limits).idle_timeout("any") == 60.0


def test_an_explicit_setting_wins_over_the_profile() -> None:
    settings = Settings(engine_slots=3, engine_max_loaded_models=5, idle_unload_seconds=10)
    limits = limits_in_force(
        settings, selection(num_parallel=2, max_loaded_models=1, idle_unload_seconds=60), engine_parallel=None
    )
    assert (limits.slots, limits.max_loaded_models, limits.idle_unload_seconds) == (3, 5, 10.0)
    assert set(limits.source.values()) == {"setting"}


def test_without_a_profile_or_its_limits_the_defaults_apply() -> None:
    for chosen in (None, selection()):
        limits = limits_in_force(Settings(), chosen, engine_parallel=None)
        defaults = Settings()
        assert (limits.slots, limits.max_loaded_models, limits.idle_unload_seconds) == (
            defaults.slots,
            defaults.scheduling_capacity,
            defaults.idle_unload_seconds,
        )
        assert set(limits.source.values()) == {"default"}


def test_slots_never_exceed_the_parallel_slots_of_an_engine_we_started() -> None:
    limits = limits_in_force(Settings(), selection(num_parallel=8), engine_parallel=4)
    assert limits.slots == 4
