"""How the engine shows its models: /api/ps and /api/show bodies."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from shared_ollama.engine.footprint import Footprint
from shared_ollama.engine.runtime import LoadedModel
from shared_ollama.engine.views import expiry_order, running, show
from tests.support.engine import entry


def test_ps_says_the_size_is_an_estimate() -> None:
    info = {
        "llama.block_count": 2,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.embedding_length": 64,
    }
    with ThreadPoolExecutor(max_workers=1) as executor:
        model = LoadedModel(entry(family="llama", size=1000, model_info=info), None, 512, 0, executor, slots=2)
        shown = running(model)
    assert shown["size"] == model.memory_estimate > 1000  # Ollama's field, as clients read it: weights + KV cache
    assert shown["size_estimated"] is True, "computed from metadata, not measured: /api/ps must say so"
    assert shown["size_vram"] == 0
    assert (shown["requests"], shown["generations"]) == (0, 0)


def _loaded(**fields: object) -> LoadedModel:
    return LoadedModel(entry(size=1000), None, 512, 0, None, **fields)  # type: ignore[arg-type]


def test_ps_reports_vram_only_for_a_model_on_a_gpu() -> None:
    assert running(_loaded())["size_vram"] == 0, "a CPU-only engine has nothing in VRAM"
    on_gpu = _loaded(on_gpu=True)
    assert running(on_gpu)["size_vram"] == on_gpu.memory_estimate > 0


def test_ps_reports_the_measured_footprint_as_measured() -> None:
    shown = running(_loaded(footprint=Footprint(ram=7000, vram=0)))
    assert (shown["size"], shown["size_estimated"], shown["size_vram"]) == (7000, False, 0)
    gpu = running(_loaded(on_gpu=True, footprint=Footprint(ram=2000, vram=5000)))
    assert (gpu["size"], gpu["size_estimated"], gpu["size_vram"]) == (7000, False, 5000)


def test_ps_expiry_is_now_plus_keep_alive_and_forever_is_ollamas_longest_duration() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    model = _loaded(keep_alive=300.0)
    model.last_used = time.monotonic()
    expires = datetime.fromisoformat(running(model, now)["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=299) < expires - now <= timedelta(seconds=300)
    forever = _loaded(keep_alive=None)
    assert running(forever, now)["expires_at"].startswith("2318-04-"), "now + 2**63 ns, as Ollama's keep_alive: -1"


def test_ps_lists_the_model_that_stays_longest_first() -> None:
    soon, later, forever = _loaded(keep_alive=10.0), _loaded(keep_alive=600.0), _loaded(keep_alive=None)
    assert sorted([soon, forever, later], key=expiry_order) == [forever, later, soon]


def test_show_reports_the_capabilities_the_model_has() -> None:
    assert show(entry())["capabilities"] == ["completion"]
    thinker = entry(template="{{ '<think>' }}{{ '</think>' }}", fim_tokens=[1, 2, 3], projector="sha256:11")
    assert show(thinker)["capabilities"] == ["completion", "vision", "thinking", "insert"]


def test_ps_reports_what_the_current_load_took_in_nanoseconds() -> None:
    model = LoadedModel(entry(size=1000), None, 512, 1_250_000_000, None)  # type: ignore[arg-type]
    assert running(model)["load_duration"] == 1_250_000_000
