"""``shared-ollama tenants ...`` against a running gateway (scripted engine): every subcommand, the admin key from
the option or the environment, and errors as exit code 1 with the service's message."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from shared_ollama.cli import main
from tests.integration.conftest import ServedGateway, chat
from tests.support.processes import free_port

Start = Callable[..., ServedGateway]


def _status(gw: ServedGateway, key: str) -> int:
    return httpx.post(f"{gw.url}/api/chat", json=chat(), headers={"Authorization": f"Bearer {key}"}).status_code


def _made_key(out: str) -> str:
    keys = [line for line in out.splitlines() if line.startswith("so-")]
    assert len(keys) == 1, out
    return keys[0]


def test_the_cli_manages_tenants_and_keys(
    serve_gateway: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = serve_gateway(api_keys="ops:key-ops:admin,web:key-web")

    def run(*argv: str, key: str = "key-ops") -> tuple[int, str, str]:
        code = main(["tenants", "--url", gw.url, *argv, "--api-key", key])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("add", "app", "--limit", "max_inflight_text=2", "--cache", "exact", "--key")
    assert code == 0 and "created app" in out
    first = _made_key(out)
    assert _status(gw, first) == 200, "a key made by the CLI works at once"

    code, out, _ = run("ls")
    assert code == 0 and first not in out
    assert "auth on, shared no" in out
    app = next(line for line in out.splitlines() if line.startswith("app\t"))
    assert app.startswith("app\tuser\tapi\tkeys: ") and f"({first[:10]}…, api)" in app

    code, out, _ = run("limits", "app")
    assert code == 0 and "max_inflight_text\t2\t(tenant)" in out and "max_prompt_tokens\t4096\t(default)" in out
    code, out, _ = run("limits", "app", "max_inflight_text=default", "max_prompt_tokens=100")
    assert code == 0 and "max_inflight_text\t6\t(default)" in out and "max_prompt_tokens\t100\t(tenant)" in out

    code, out, _ = run("key", "add", "app")
    second = _made_key(out)
    second_id = out.split("(id ")[1].split(")")[0]
    assert _status(gw, second) == 200
    code, out, _ = run("key", "rm", "app", second_id)
    assert code == 0 and _status(gw, second) == 401 and _status(gw, first) == 200

    code, _, err = run("limits", "app", "max_inflight_text")
    assert code == 1 and "name=value" in err
    code, _, err = run("limits", "app", "max_inflight_text=0")
    assert code == 1 and err.startswith("error: 400:") and "limits.max_inflight_text" in err
    code, _, err = run("add", "web")
    assert code == 1 and err.startswith("error: 409:")
    code, _, err = run("ls", key="key-web")
    assert code == 1 and err.startswith("error: 403:")

    monkeypatch.setenv("SHARED_OLLAMA_ADMIN_KEY", "key-ops")
    assert main(["tenants", "rm", "app", "--url", gw.url]) == 0, "the admin key from the environment"
    assert "deleted app" in capsys.readouterr().out
    assert _status(gw, first) == 401
    assert main(["tenants", "rm", "app", "--url", gw.url]) == 1
    assert capsys.readouterr().err.startswith("error: 404:")


def test_the_cli_says_when_the_service_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenants", "ls", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"]) == 1
    assert "cannot reach the service" in capsys.readouterr().err
