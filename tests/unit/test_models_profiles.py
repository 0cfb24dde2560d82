"""Hardware detection and model profiles: which profile a machine gets and why, aliases, the config file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.models import profiles
from shared_ollama.service.models.profiles import (
    GIB,
    Gpu,
    Hardware,
    ModelsConfig,
    detect_hardware,
    load_models_config,
    model_settings,
    select_profile,
)

CONFIG_FILE = Path(__file__).resolve().parents[2] / "config" / "models.yaml"
OFFLINE = {"smollm2:135m", "all-minilm:latest"}


@pytest.fixture(scope="module")
def config() -> ModelsConfig:
    return load_models_config(CONFIG_FILE)


def machine(ram_gb: float, *, gpus: list[tuple[str, int | None]] | None = None, apple: bool = False) -> Hardware:
    return Hardware(
        total_ram_bytes=int(ram_gb * GIB),
        available_ram_bytes=int(ram_gb * GIB * 0.75),
        cpu_cores=8,
        platform="darwin-arm64" if apple else "linux-x86_64",
        apple_silicon=apple,
        gpus=[Gpu(*gpu) for gpu in gpus or []],
    )


# ---------------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("ram_gb", "expected", "reason"),
    [
        (8, "tiny-cpu", "8.0 GB RAM < 12 GB: tiny-cpu"),
        (11.9, "tiny-cpu", "11.9 GB RAM < 12 GB: tiny-cpu"),
        (12, "laptop", "12.0 GB RAM >= 12 GB and < 33 GB: laptop"),
        (16, "laptop", "16.0 GB RAM >= 12 GB and < 33 GB: laptop"),
        (24, "laptop", "24.0 GB RAM >= 12 GB and < 33 GB: laptop"),
        (32, "laptop", "32.0 GB RAM >= 12 GB and < 33 GB: laptop"),
        (33, "workstation", "33.0 GB RAM >= 33 GB: workstation"),
        (64, "workstation", "64.0 GB RAM >= 33 GB: workstation"),
    ],
)
def test_the_profile_follows_the_ram(config: ModelsConfig, ram_gb: float, expected: str, reason: str) -> None:
    selection = select_profile(config, machine(ram_gb))
    assert selection.profile.name == expected
    assert selection.reason == reason
    assert selection.source == "hardware"


def test_a_big_gpu_server_and_apple_silicon_get_the_workstation_profile(config: ModelsConfig) -> None:
    server = machine(128, gpus=[("NVIDIA RTX 6000 Ada", 48 * GIB)])
    assert server.has_gpu
    assert select_profile(config, server).profile.name == "workstation"
    mac = machine(36, apple=True)
    assert mac.has_gpu  # the integrated GPU, through Metal
    selection = select_profile(config, mac)
    assert selection.profile.name == "workstation"
    assert selection.reason == "36.0 GB RAM >= 33 GB: workstation"


def test_requires_gpu_profiles_match_only_with_a_gpu(config: ModelsConfig) -> None:
    gpu_profile = config.profile("workstation").model_copy(update={"name": "gpu-server"})
    gpu_profile = gpu_profile.model_copy(update={"when": gpu_profile.when.model_copy(update={"requires_gpu": True})})
    with_gpu = config.model_copy(update={"profiles": [gpu_profile, *config.profiles]})
    server = select_profile(with_gpu, machine(128, gpus=[("NVIDIA H100", 80 * GIB)]))
    assert server.profile.name == "gpu-server"
    assert server.reason == "128.0 GB RAM >= 33 GB with a GPU: gpu-server"
    assert select_profile(with_gpu, machine(128)).profile.name == "workstation"
    assert select_profile(with_gpu, machine(64, apple=True)).profile.name == "gpu-server"


def test_a_forced_profile_wins_and_an_unknown_one_lists_the_known(config: ModelsConfig) -> None:
    selection = select_profile(config, machine(8), forced="workstation")
    assert (selection.profile.name, selection.source) == ("workstation", "forced")
    assert selection.reason == "forced by SHARED_OLLAMA_PROFILE"
    assert select_profile(config, machine(8), forced="  ").profile.name == "tiny-cpu"  # empty = not forced
    missing = select_profile(config, machine(64), forced="laptop", available_models=OFFLINE)
    assert missing.profile.name == "laptop"  # forced still wins, but says what is missing
    assert "not installed: qwen3:14b-q4_K_M" in missing.reason
    with pytest.raises(ValueError, match="unknown model profile 'huge'") as caught:
        select_profile(config, machine(8), forced="huge")
    assert "laptop, tiny-cpu, workstation" in str(caught.value)


def test_uninstalled_models_an_engine_cannot_pull_fall_back_to_tiny_cpu(config: ModelsConfig) -> None:
    selection = select_profile(config, machine(24), available_models=OFFLINE)
    assert (selection.profile.name, selection.source) == ("tiny-cpu", "fallback")
    assert selection.reason == (
        "24.0 GB RAM >= 12 GB and < 33 GB: laptop, but the laptop profile's text models (qwen3:14b-q4_K_M) are "
        "not installed and the engine cannot pull them: falling back to tiny-cpu"
    )
    big = select_profile(config, machine(64), available_models=set())
    assert big.profile.name == "tiny-cpu"
    assert big.reason.endswith("falling back to tiny-cpu (whose text models are not installed either)")


def test_installed_or_pullable_models_keep_the_matched_profile(config: ModelsConfig) -> None:
    installed = select_profile(config, machine(24), available_models={"qwen3:14b-q4_K_M", *OFFLINE})
    assert (installed.profile.name, installed.source) == ("laptop", "hardware")
    pullable = select_profile(config, machine(24), available_models=OFFLINE, can_pull=True)
    assert pullable.profile.name == "laptop"
    unknown = select_profile(config, machine(24))  # nothing known about installed models: no fallback
    assert unknown.profile.name == "laptop"
    tiny = select_profile(config, machine(8), available_models={"smollm2:135m:latest"})
    assert tiny.profile.name == "tiny-cpu"
    assert tiny.source == "hardware"


def test_no_matching_profile_uses_the_default(config: ModelsConfig) -> None:
    only_laptop = config.model_copy(update={"profiles": [config.profile("laptop")], "default_profile": "laptop"})
    selection = select_profile(only_laptop, machine(64))
    assert (selection.profile.name, selection.source) == ("laptop", "default")
    assert selection.reason == "no profile matches 64.0 GB RAM: using the default profile laptop"


# ---------------------------------------------------------------------------------------------- aliases


def test_aliases_resolve_through_the_active_profile(config: ModelsConfig) -> None:
    laptop = select_profile(config, machine(24))
    assert laptop.resolve("default-text") == "qwen3:14b-q4_K_M"
    assert laptop.resolve("default-vision") == "qwen3-vl:8b-instruct-q4_K_M"
    assert laptop.resolve("default-embedding") == "nomic-embed-text"
    assert laptop.resolve("llama3.2:1b") == "llama3.2:1b"  # not an alias: a model name, unchanged
    workstation = select_profile(config, machine(64))
    assert workstation.resolve("default-text") == "qwen3:30b"
    assert workstation.resolve("default-vision") == "qwen3-vl:32b"


def test_an_alias_to_null_is_an_invalid_request(config: ModelsConfig) -> None:
    tiny = select_profile(config, machine(8))
    assert tiny.resolve("default-text") == "smollm2:135m"
    assert tiny.resolve("default-embedding") == "all-minilm"
    with pytest.raises(InvalidRequest, match="'tiny-cpu' has no 'default-vision' model") as caught:
        tiny.resolve("default-vision")
    assert caught.value.param == "model"
    assert caught.value.status == 400


def test_an_alias_only_other_profiles_define_is_refused_too() -> None:
    raw = {
        "default_profile": "a",
        "profiles": [
            {"name": "a", "models": [{"name": "m1", "role": "text", "expected_memory_gb": 1}]},
            {
                "name": "b",
                "when": {"min_ram_gb": 1000},
                "models": [{"name": "m2", "role": "vision", "expected_memory_gb": 1}],
                "aliases": {"see": "m2"},
            },
        ],
    }
    selection = select_profile(ModelsConfig.model_validate(raw), machine(8))
    assert selection.profile.name == "a"
    with pytest.raises(InvalidRequest, match="'a' has no 'see' model"):
        selection.resolve("see")


# ---------------------------------------------------------------------------------------------- as_dict


def test_as_dict_reports_the_profile_the_hardware_and_the_memory(config: ModelsConfig) -> None:
    hardware = machine(36, apple=True)
    body = select_profile(config, hardware, available_models={"qwen3:30b", "nomic-embed-text:latest"}).as_dict()
    assert body["profile"]["name"] == "workstation"
    assert body["profile"]["description"].startswith("Workstations")
    assert body["source"] == "hardware"
    assert body["reason"] == "36.0 GB RAM >= 33 GB: workstation"
    assert body["hardware"] == {
        "total_ram_gb": 36.0,
        "available_ram_gb": 27.0,
        "cpu_cores": 8,
        "platform": "darwin-arm64",
        "apple_silicon": True,
        "gpus": [],
    }
    assert [m["name"] for m in body["models"]] == ["qwen3:30b", "qwen3-vl:32b", "nomic-embed-text"]
    assert body["models"][1] == {
        "name": "qwen3-vl:32b",
        "role": "vision",
        "expected_memory_gb": 22.0,
        "preload": False,
        "installed": False,
        "idle_timeout_seconds": 180.0,
        "pinned_options": {"num_ctx": 8192},
    }
    assert [m["installed"] for m in body["models"]] == [True, False, True]
    assert body["memory"] == {
        "expected_total_gb": 42.3,
        "expected_preload_gb": 20.3,
        "ram_gb": 36.0,
        "fits_in_ram": False,
    }
    assert body["limits"] == {"max_loaded_models": 3, "num_parallel": 4, "idle_unload_seconds": 300.0}
    assert body["aliases"]["default-vision"] == "qwen3-vl:32b"


def test_as_dict_without_installed_models_and_with_gpus(config: ModelsConfig) -> None:
    hardware = machine(24, gpus=[("NVIDIA GeForce RTX 4090", 24564 * 1024**2), ("Mystery GPU", None)])
    body = select_profile(config, hardware).as_dict()
    assert body["profile"]["name"] == "laptop"
    assert {m["installed"] for m in body["models"]} == {None}
    assert body["hardware"]["gpus"] == [
        {"name": "NVIDIA GeForce RTX 4090", "memory_gb": 24.0},
        {"name": "Mystery GPU", "memory_gb": None},
    ]
    assert body["memory"] == {
        "expected_total_gb": 14.3,
        "expected_preload_gb": 8.3,
        "ram_gb": 24.0,
        "fits_in_ram": True,
    }
    tiny = select_profile(config, machine(8)).as_dict()
    assert tiny["aliases"] == {
        "default-text": "smollm2:135m",
        "default-vision": None,
        "default-embedding": "all-minilm",
    }
    assert all(m["role"] != "vision" for m in tiny["models"])


# ---------------------------------------------------------------------------------------------- config file


def test_the_shipped_config_loads_and_validates(config: ModelsConfig) -> None:
    assert config.default_profile == "tiny-cpu"
    assert [p.name for p in config.profiles] == ["tiny-cpu", "laptop", "workstation"]
    for profile in config.profiles:
        assert profile.text_models(), profile.name
        assert set(profile.aliases) == {"default-text", "default-vision", "default-embedding"}
    assert config.profile("tiny-cpu").aliases["default-vision"] is None


def test_model_settings(config: ModelsConfig) -> None:
    assert model_settings(config, "qwen3-vl:32b") == (180.0, {"num_ctx": 8192})
    assert model_settings(config, "all-minilm:latest") == (1800.0, {"num_ctx": 512})  # name == name:latest
    assert model_settings(config, "qwen3-vl:8b-instruct-q4_K_M") == (None, {"num_ctx": 8192})
    assert model_settings(config, "unknown:7b") == (None, {})


VALID_PROFILE = "  - name: p\n    models: [{name: m, role: text, expected_memory_gb: 1}]\n"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("profiles: [\n", "while parsing"),
        ("", "default_profile"),
        ("- just\n- a list\n", "valid dictionary"),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}surprise: 1\n", "surprise"),
        (f"default_profile: q\nprofiles:\n{VALID_PROFILE}", "default_profile 'q' is not a profile"),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}{VALID_PROFILE}", "two profiles have the same name"),
        ("default_profile: p\nprofiles:\n  - name: p\n    models: []\n", "at least 1 item"),
        (
            "default_profile: p\nprofiles:\n  - name: p\n    models: [{name: m, role: audio, expected_memory_gb: 1}]\n",
            "role",
        ),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}    when: {{min_ram_gb: 40, max_ram_gb: 30}}\n", "below"),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}    when: {{gpu: true}}\n", "gpu"),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}    aliases: {{default-text: other}}\n", "not one of its"),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}    limits: {{num_parallel: 0}}\n", "num_parallel"),
        (
            f"default_profile: p\nprofiles:\n{VALID_PROFILE}model_settings:\n  m: {{pinned_options: {{num_cxt: 1}}}}\n",
            "num_cxt",
        ),
        (f"default_profile: p\nprofiles:\n{VALID_PROFILE}model_settings:\n  m: {{idle_timeout: -1}}\n", "idle_timeout"),
    ],
)
def test_a_bad_config_is_a_value_error_naming_the_file(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="invalid models file") as caught:
        load_models_config(path)
    assert str(path) in str(caught.value)
    assert complaint in str(caught.value)


def test_a_minimal_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(f"default_profile: p\nprofiles:\n{VALID_PROFILE}")
    loaded = load_models_config(path)
    assert loaded.profile("p").when.matches(machine(1))
    assert model_settings(loaded, "m") == (None, {})


def test_a_missing_config_is_a_value_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"invalid models file .*nowhere\.yaml"):
        load_models_config(tmp_path / "nowhere.yaml")


# ---------------------------------------------------------------------------------------------- detection


def test_detect_hardware_on_this_machine() -> None:
    hardware = detect_hardware()
    assert hardware.total_ram_bytes > GIB
    assert 0 < hardware.available_ram_bytes <= hardware.total_ram_bytes
    assert hardware.cpu_cores >= 1
    assert "-" in hardware.platform
    assert isinstance(hardware.gpus, tuple)
    assert hardware.apple_silicon == (hardware.platform == "darwin-arm64")


def test_a_failing_nvidia_smi_reports_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(profiles.platform, "machine", lambda: "x86_64")

    def run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise OSError("No such file or directory: '/usr/bin/nvidia-smi'")

    monkeypatch.setattr(profiles.subprocess, "run", run)
    assert detect_hardware().gpus == ()

    def timeout(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired("nvidia-smi", 2.0)

    monkeypatch.setattr(profiles.subprocess, "run", timeout)
    assert detect_hardware().gpus == ()

    def exits(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.CalledProcessError(9, "nvidia-smi", "", "NVIDIA-SMI has failed: no driver")

    monkeypatch.setattr(profiles.subprocess, "run", exits)
    assert detect_hardware().gpus == ()


def test_a_real_nvidia_smi_output_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(profiles.sys, "platform", "linux")
    seen: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        assert kwargs["timeout"] == 2.0
        output = "NVIDIA GeForce RTX 4090, 24564\nNVIDIA A100-SXM4-80GB, 81920\nWeird, Inc. GPU, [N/A]\n\n"
        return subprocess.CompletedProcess(command, 0, output, "")

    monkeypatch.setattr(profiles.subprocess, "run", run)
    hardware = detect_hardware()
    assert seen == [["/usr/bin/nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]]
    assert hardware.gpus == (
        Gpu("NVIDIA GeForce RTX 4090", 24564 * 1024**2),
        Gpu("NVIDIA A100-SXM4-80GB", 81920 * 1024**2),
        Gpu("Weird, Inc. GPU", None),
    )
    assert hardware.has_gpu


def test_apple_silicon_is_detected_without_probing_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.sys, "platform", "darwin")
    monkeypatch.setattr(profiles.platform, "machine", lambda: "arm64")

    def run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nvidia-smi must not run on Apple Silicon")

    monkeypatch.setattr(profiles.subprocess, "run", run)
    hardware = detect_hardware()
    assert hardware.apple_silicon
    assert hardware.platform == "darwin-arm64"
    assert hardware.has_gpu and hardware.gpus == ()


def test_detect_hardware_survives_psutil_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> object:
        raise RuntimeError("no /proc")

    monkeypatch.setattr(profiles.psutil, "virtual_memory", broken)
    monkeypatch.setattr(profiles.shutil, "which", lambda name: None)
    hardware = detect_hardware()
    assert hardware.total_ram_bytes == 0
    assert hardware.cpu_cores >= 1


def test_this_machine_with_only_the_offline_models_serves_tiny_cpu(config: ModelsConfig) -> None:
    """Whatever its RAM, an engine that cannot pull and holds only the offline models ends up on tiny-cpu."""
    selection = select_profile(config, detect_hardware(), available_models=OFFLINE)
    assert selection.profile.name == "tiny-cpu"
    assert selection.resolve("default-text") == "smollm2:135m"
    if selection.source == "fallback":
        assert "are not installed and the engine cannot pull them: falling back to tiny-cpu" in selection.reason
