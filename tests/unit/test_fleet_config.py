"""The fleet's config: a good file, the documented example, the URL list, and every refusal naming entry and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared_ollama.service.fleet.config import (
    FleetConfigError,
    Host,
    load_fleet_config,
    masked_url,
    parse_engine_urls,
    parse_fleet_config,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
engines:
  - url: http://10.0.0.5:11434/
    kind: ollama
    slots: 4
    models: [qwen3:8b, all-minilm]
    weight: 2.5
    name: gpu-1
  - url: https://vllm.internal:8000
    kind: openai
    slots: 16
    api_key: sk-very-secret
  - url: http://10.0.0.6:11434
"""


def test_good_file_parses_every_field(tmp_path: Path) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text(GOOD)
    gpu, vllm, plain = load_fleet_config(path, default_slots=3)
    assert gpu == Host("gpu-1", "http://10.0.0.5:11434", "ollama", 4, ("qwen3:8b", "all-minilm:latest"), 2.5, None)
    assert (vllm.name, vllm.url, vllm.kind, vllm.slots, vllm.models, vllm.weight) == (
        "vllm.internal:8000",
        "https://vllm.internal:8000",
        "openai",
        16,
        None,
        1.0,
    )
    assert vllm.api_key == "sk-very-secret"
    assert vllm.auth_headers() == {"Authorization": "Bearer sk-very-secret"}
    assert (plain.name, plain.kind, plain.slots, plain.weight, plain.api_key) == (
        "10.0.0.6:11434",
        "ollama",
        3,
        1.0,
        None,
    )
    assert plain.auth_headers() == {}


def test_the_api_key_never_shows_in_a_repr(tmp_path: Path) -> None:
    hosts = parse_fleet_config({"engines": [{"url": "http://h:1", "api_key": "sk-hidden"}]}, default_slots=1)
    assert "sk-hidden" not in repr(hosts)
    assert "sk-hidden" not in str(hosts[0])


def test_the_documented_example_parses() -> None:
    hosts = load_fleet_config(ROOT / "config" / "engines.yaml.example", default_slots=4)
    assert [host.kind for host in hosts] == ["ollama", "ollama", "openai"]
    assert all(host.slots >= 1 for host in hosts)


def test_a_url_list_gives_ollama_hosts_with_the_default_slots() -> None:
    hosts = parse_engine_urls(" http://a:11434 ,http://b:11434/,, ", default_slots=2)
    assert hosts == (Host("a:11434", "http://a:11434", "ollama", 2), Host("b:11434", "http://b:11434", "ollama", 2))


def test_derived_names_stay_unique_and_ipv6_hosts_get_brackets() -> None:
    hosts = parse_engine_urls("http://h:80/a,http://h/b,http://[::1]:9000", default_slots=1)
    assert [host.name for host in hosts] == ["h:80", "h:80-2", "[::1]:9000"]


def test_an_explicit_name_wins_over_a_derived_one() -> None:
    raw = {"engines": [{"url": "http://h:80/a"}, {"url": "http://x:1", "name": "h:80"}]}
    assert [host.name for host in parse_fleet_config(raw, default_slots=1)] == ["h:80-2", "h:80"]


@pytest.mark.parametrize(
    ("raw", "where", "field"),
    [
        ({"engines": [{"url": "http://a:1"}, {"url": "http://b:1", "slots": 0}]}, "engines[1]", "slots"),
        ({"engines": [{"url": "http://a:1", "weight": 0}]}, "engines[0]", "weight"),
        ({"engines": [{"url": "http://a:1", "kind": "vllm"}]}, "engines[0]", "kind"),
        ({"engines": [{"url": "ftp://a:1"}]}, "engines[0]", "url"),
        ({"engines": [{"url": "http://a:1?x=1"}]}, "engines[0]", "url"),
        ({"engines": [{"url": "http://a:notaport"}]}, "engines[0]", "url"),
        ({"engines": [{"url": "http://a:1", "models": []}]}, "engines[0]", "models"),
        ({"engines": [{"url": "http://a:1", "models": [" x"]}]}, "engines[0]", "models"),
        ({"engines": [{"url": "http://a:1", "name": "bad name"}]}, "engines[0]", "name"),
        ({"engines": [{"url": "http://a:1", "api_key": ""}]}, "engines[0]", "api_key"),
        ({"engines": [{"url": "http://a:1", "api_key": "sk-a\nb"}]}, "engines[0]", "api_key"),
        ({"engines": [{"url": "http://a:1", "api_key": "sk a"}]}, "engines[0]", "api_key"),
        ({"engines": [{"url": "http://a:1", "colour": "red"}]}, "engines[0]", "colour"),
        ({"engines": [{"kind": "ollama"}]}, "engines[0]", "url"),
        ({"engines": [{"url": "http://a:1/v1", "kind": "openai"}]}, "engines[0]", "url"),
        ({"engines": [{"url": "http://u:p@a:1", "api_key": "k"}]}, "engines[0]", "api_key"),
        ({"engines": [{"url": "http://a:1"}, {"url": "http://A:1/"}]}, "engines[1]", "url"),
        ({"engines": [{"url": "http://a:80"}, {"url": "http://a"}]}, "engines[1]", "url"),
        ({"engines": [{"url": "http://a:1", "name": "n"}, {"url": "http://b:1", "name": "n"}]}, "engines[1]", "name"),
    ],
)
def test_a_bad_entry_names_its_index_and_field(raw: dict[str, Any], where: str, field: str) -> None:
    with pytest.raises(FleetConfigError) as caught:
        parse_fleet_config(raw, default_slots=1, source="engines.yaml")
    message = str(caught.value)
    assert "engines.yaml" in message
    assert f"{where}:" in message
    assert f"field '{field}'" in message


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ([], "top level"),
        ({}, "field 'engines'"),
        ({"engines": []}, "field 'engines'"),
        ({"engines": [{"url": "http://a:1"}], "extra": 1}, "field 'extra': unknown key"),
        ({"engines": ["http://a:1"]}, "engines[0]: must be a mapping"),
    ],
)
def test_a_bad_file_shape_is_refused(raw: Any, needle: str) -> None:
    with pytest.raises(FleetConfigError, match="invalid engines config") as caught:
        parse_fleet_config(raw, default_slots=1)
    assert needle in str(caught.value)


def test_a_refusal_never_shows_the_api_key_or_a_url_password() -> None:
    raw = {
        "engines": [
            {"url": "http://u:pw-secret@a:1"},
            {"url": "http://u:pw-secret@a:1/", "api_key": "sk-secret"},
        ]
    }
    with pytest.raises(FleetConfigError) as caught:
        parse_fleet_config(raw, default_slots=1)
    assert "engines[1]" in str(caught.value)
    assert "pw-secret" not in str(caught.value)
    assert "sk-secret" not in str(caught.value)
    bad_key = {"engines": [{"url": "http://a:1", "api_key": 12345678}]}
    with pytest.raises(FleetConfigError) as caught:
        parse_fleet_config(bad_key, default_slots=1)
    assert "12345678" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "No such file"), ("engines: [unclosed\n", "invalid engines config"), ("", "field 'engines'")],
)
def test_a_missing_malformed_or_empty_file_is_refused(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "engines.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FleetConfigError, match="invalid engines config") as caught:
        load_fleet_config(path, default_slots=1)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "no URL given"), (" , ", "no URL given"), ("http://a:1,nope", "engines[1]: field 'url'")],
)
def test_a_bad_url_list_is_refused(text: str, needle: str) -> None:
    with pytest.raises(FleetConfigError, match="SHARED_OLLAMA_ENGINE_URLS") as caught:
        parse_engine_urls(text, default_slots=1)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://user:secret@h:1/x", "http://user:***@h:1/x"),
        ("https://:secret@h", "https://:***@h"),
        ("http://user@h:1", "http://user@h:1"),
        ("http://h:1", "http://h:1"),
        ("http://[::1", "<invalid url>"),
    ],
)
def test_masked_url_hides_the_password(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_a_host_shows_its_url_masked() -> None:
    (host,) = parse_engine_urls("http://u:pw@h:1", default_slots=1)
    assert host.display_url == "http://u:***@h:1"


def test_a_yaml_error_names_the_line_but_never_quotes_it(tmp_path: Path) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text('engines:\n  - url: http://a:1\n    api_key: "sk-very-secret\n')
    with pytest.raises(FleetConfigError) as caught:
        load_fleet_config(path, default_slots=1)
    assert "not valid YAML at line" in str(caught.value)
    assert "sk-very-secret" not in str(caught.value)
