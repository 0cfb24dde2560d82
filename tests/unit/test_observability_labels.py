"""Bounded label values for a finished request's model and tenant."""

from __future__ import annotations

from typing import Any

from shared_ollama.service.observability.labels import OTHER, UNKNOWN, BoundedNames, RecordLabels
from shared_ollama.service.observability.records import RequestRecord


def rec(model: str = "m", tenant: str = "t", *, engine: bool = True, status: int = 200, **fields: Any) -> RequestRecord:
    return RequestRecord(
        ts=0.0,
        request_id="r",
        surface="ollama",
        route="/api/chat",
        tenant=tenant,
        model=model,
        status=status,
        engine=engine,
        **fields,
    )


def test_names_past_the_bound_fold_into_other_and_the_always_kept_stay() -> None:
    names = BoundedNames(2, always=["admin"])
    assert [names.label(n) for n in ("a", "b", "c", "a", "admin", "d")] == ["a", "b", OTHER, "a", "admin", OTHER]
    assert len(names) == 2


def test_a_model_is_labelled_once_the_engine_has_answered_for_it() -> None:
    labels = RecordLabels(max_models=2, max_tenants=10)
    assert labels.model(rec("m", engine=False, status=429)) == UNKNOWN, "refused before the engine: not known yet"
    assert labels.model(rec("m", status=404, code="model_not_found")) == UNKNOWN
    assert labels.model(rec("m")) == "m"
    assert labels.model(rec("m", engine=False, status=429)) == "m", "known now, whatever happens to the request"
    assert labels.model(rec("n")) == "n"
    assert labels.model(rec("o")) == OTHER
    assert labels.model(rec("")) == ""


def test_tenants_are_bounded_but_configured_ones_keep_their_label() -> None:
    labels = RecordLabels(max_models=2, max_tenants=3, tenants=["web", "default"])
    seen = [labels.tenant(rec(tenant=f"t{i}")) for i in range(10)]
    assert seen == ["t0", "t1", "t2"] + [OTHER] * 7
    assert labels.tenant(rec(tenant="web")) == "web"
    assert labels.tenant(rec(tenant="default")) == "default"
    assert labels.tenant(rec(tenant="")) == ""


def test_tenants_configured_later_keep_labels_of_their_own() -> None:
    labels = RecordLabels(max_models=1, max_tenants=1, tenants=["ops"])
    assert labels.tenant(rec(tenant="first")) == "first"
    assert labels.tenant(rec(tenant="app")) == OTHER, "past the bound"
    labels.keep_tenants(["ops", "app"])
    assert labels.tenant(rec(tenant="app")) == "app", "a tenant created through the admin API is labelled as itself"
    assert labels.tenant(rec(tenant="stranger")) == OTHER
