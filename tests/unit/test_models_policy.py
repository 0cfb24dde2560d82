"""The limits in force: an explicit setting wins, then the active profile's ``limits``, then the default."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.models.policy import ModelPolicy, limits_in_force
from shared_ollama.service.models.profiles import (
    Hardware,
    ModelsConfig,
    Profile,
    ProfileLimits,
    ProfileModel,
    load_models_config,
    model_output_cap,
    model_settings,
    select_profile,
)
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


def test_each_models_settings_are_what_the_models_config_says() -> None:
    config = load_models_config(Path(__file__).resolve().parents[2] / "config" / "models.yaml")
    policy = ModelPolicy(SimpleNamespace(config=config), limits_in_force(Settings(), None, engine_parallel=None))  # type: ignore[arg-type]
    names = [*config.model_settings, *(f"{n}:latest" for n in config.model_settings if ":" not in n), "never:seen"]
    assert len(config.model_settings) >= 2
    for name in names:
        idle, pinned = model_settings(config, name)
        assert policy.idle_timeout(name) == (idle if idle is not None else Settings().idle_unload_seconds), name
        assert policy.pinned(name) == pinned, name
        assert policy.default_output(name) == model_output_cap(config, name), name


def test_pinned_options_are_the_callers_own_copy() -> None:
    config = load_models_config(Path(__file__).resolve().parents[2] / "config" / "models.yaml")
    policy = ModelPolicy(SimpleNamespace(config=config), limits_in_force(Settings(), None, engine_parallel=None))  # type: ignore[arg-type]
    name = next(n for n in config.model_settings if model_settings(config, n)[1])
    first = policy.pinned(name)
    first["num_ctx"] = -1
    assert policy.pinned(name) == model_settings(config, name)[1]


MEMORY = {"expected_memory_gb": 1}


def test_of_two_names_for_one_model_the_first_is_in_force_as_in_the_models_config_reading() -> None:
    config = ModelsConfig.model_validate(
        {
            "default_profile": "p",
            "profiles": [{"name": "p", "description": "", "models": [{"name": "m", "role": "text", **MEMORY}]}],
            "model_settings": {"m": {"idle_timeout": 5}, "m:latest": {"idle_timeout": 9}},
        }
    )
    policy = ModelPolicy(SimpleNamespace(config=config), limits_in_force(Settings(), None, engine_parallel=None))  # type: ignore[arg-type]
    assert policy.idle_timeout("m:latest") == model_settings(config, "m:latest")[0] == 5


def test_aliases_resolve_as_the_selected_profile_says_and_other_names_pass_through() -> None:
    config = load_models_config(Path(__file__).resolve().parents[2] / "config" / "models.yaml")
    machine = Hardware(total_ram_bytes=8 * 2**30, available_ram_bytes=6 * 2**30, cpu_cores=4, platform="linux-x86_64")
    aliases = {alias for profile in config.profiles for alias in profile.aliases}
    assert aliases
    for profile in config.profiles:
        chosen = select_profile(config, machine, forced=profile.name)
        policy = ModelPolicy(chosen, limits_in_force(Settings(), chosen, engine_parallel=None))
        for name in [*sorted(aliases), "smollm2:135m", "default-nothing"]:
            try:
                expected: object = chosen.resolve(name)
            except InvalidRequest as exc:
                expected = str(exc)
            try:
                got: object = policy.resolve_alias(name)
            except InvalidRequest as exc:
                got = str(exc)
            assert got == expected, (profile.name, name)
