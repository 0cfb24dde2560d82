"""The Prometheus exposition of the live gauges."""

from __future__ import annotations

from shared_ollama.service.observability.metrics import LiveState, Metrics


def _state(**fields: object) -> LiveState:
    base: dict[str, object] = {
        "queue_depth": 0,
        "slots_total": 4,
        "slots_in_use": 0,
        "in_flight": {},
        "engine_up": True,
        "engine_restarts": 0,
        "loaded_models": ["smollm2:135m", "ollama:1b"],
        "image_bytes_saved": 0,
    }
    return LiveState(**{**base, **fields})  # type: ignore[arg-type]


def test_each_loaded_models_load_time_is_a_gauge_in_seconds() -> None:
    state = _state(model_load_seconds={"smollm2:135m": 0.25})
    text = Metrics(lambda: state).exposition().decode()
    assert 'shared_ollama_model_load_seconds{model="smollm2:135m"} 0.25' in text
    assert 'shared_ollama_model_load_seconds{model="ollama:1b"}' not in text, "an engine that did not say: no sample"


def test_no_load_times_without_models_that_report_them() -> None:
    text = Metrics(lambda: _state()).exposition().decode()
    assert "# TYPE shared_ollama_model_load_seconds gauge" in text
    assert "shared_ollama_model_load_seconds{" not in text
