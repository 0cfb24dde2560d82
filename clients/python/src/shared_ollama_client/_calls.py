"""Each method's request, built once for both clients: path, body (fields left unset are not sent) and how its
answer is read. Field names are the service API's (``/api/v1``, the native Ollama names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from shared_ollama_client._wire import Call, JsonObject

Messages = Sequence[Mapping[str, Any]]
Options = Mapping[str, Any]
Format = str | Mapping[str, Any]


def _body(fields: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> JsonObject:
    body = {key: value for key, value in fields.items() if value is not None}
    if extra:
        body.update(extra)
    return body


def _name(name: str) -> str:
    """A model or agent name in a path (``{name:path}`` routes take slashes as they are)."""
    return quote(name, safe="/:@")


def _done(chunk: JsonObject) -> bool:
    return chunk.get("done") is True


def _agent_done(event: JsonObject) -> bool:
    return event.get("type") == "done"


def _pulled(progress: JsonObject) -> bool:
    return progress.get("status") == "success"


def _messages(messages: Messages) -> list[JsonObject]:
    return [dict(message) for message in messages]


def chat(
    model: str,
    messages: Messages | None,
    *,
    poml: str | None,
    context: Mapping[str, Any] | None,
    options: Options | None,
    stream: bool,
    format: Format | None,
    tools: Sequence[Mapping[str, Any]] | None,
    keep_alive: str | float | None,
    think: bool | str | None,
    cache: str | None,
    extra: Mapping[str, Any] | None,
) -> Call:
    """The chat of ``messages``, or of a POML template (``poml``, rendered by the service with the variables of
    ``context``): exactly one of the two."""
    if (messages is None) == (poml is None):
        raise ValueError("chat takes either messages or poml (a POML template rendered to messages), not both")
    if context is not None and poml is None:
        raise ValueError("context is the variables of a poml template: pass it with poml")
    fields = {
        "model": model,
        "messages": _messages(messages) if messages is not None else None,
        "poml": poml,
        "context": dict(context) if context is not None else None,
        "options": dict(options) if options is not None else None,
        "stream": stream,
        "format": format,
        "tools": [dict(tool) for tool in tools] if tools is not None else None,
        "keep_alive": keep_alive,
        "think": think,
        "cache": cache,
    }
    return Call("POST", "/api/v1/chat", _body(fields, extra), stream=stream, complete=_done)


def generate(
    model: str,
    prompt: str,
    *,
    system: str | None,
    options: Options | None,
    stream: bool,
    format: Format | None,
    keep_alive: str | float | None,
    think: bool | str | None,
    raw: bool | None,
    suffix: str | None,
    images: list[str] | None,
    cache: str | None,
    extra: Mapping[str, Any] | None,
) -> Call:
    fields = {
        "model": model,
        "prompt": prompt,
        "system": system,
        "options": dict(options) if options is not None else None,
        "stream": stream,
        "format": format,
        "keep_alive": keep_alive,
        "think": think,
        "raw": raw,
        "suffix": suffix,
        "images": images,
        "cache": cache,
    }
    return Call("POST", "/api/v1/generate", _body(fields, extra), stream=stream, complete=_done)


def chat_completions(
    model: str,
    messages: Messages,
    *,
    stream: bool,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: str | Sequence[str] | None,
    seed: int | None,
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any] | None,
    response_format: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> Call:
    fields = {
        "model": model,
        "messages": _messages(messages),
        "stream": stream,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "stop": stop if isinstance(stop, str) or stop is None else list(stop),
        "seed": seed,
        "tools": [dict(tool) for tool in tools] if tools is not None else None,
        "tool_choice": tool_choice if isinstance(tool_choice, str) or tool_choice is None else dict(tool_choice),
        "response_format": dict(response_format) if response_format is not None else None,
    }
    return Call("POST", "/api/v1/chat/completions", _body(fields, extra), stream=stream, sse=stream)


def vlm(
    model: str,
    messages: Messages,
    images: list[str],
    *,
    image_compression: Mapping[str, Any] | None,
    options: Options | None,
    stream: bool,
    format: Format | None,
    keep_alive: str | float | None,
    extra: Mapping[str, Any] | None,
) -> Call:
    fields = {
        "model": model,
        "messages": _messages(messages),
        "images": images or None,
        "image_compression": dict(image_compression) if image_compression is not None else None,
        "options": dict(options) if options is not None else None,
        "stream": stream,
        "format": format,
        "keep_alive": keep_alive,
    }
    return Call("POST", "/api/v1/vlm", _body(fields, extra), stream=stream, complete=_done)


def embeddings(
    model: str, input: str | Sequence[str], *, truncate: bool | None, keep_alive: str | float | None
) -> Call:
    texts = input if isinstance(input, str) else list(input)
    fields = {"model": model, "input": texts, "truncate": truncate, "keep_alive": keep_alive}
    return Call("POST", "/api/v1/embeddings", _body(fields))


def batch_chat(requests: Sequence[Mapping[str, Any]], *, concurrency: int | None) -> Call:
    fields = {"requests": [dict(request) for request in requests], "concurrency": concurrency}
    return Call("POST", "/api/v1/batch/chat", _body(fields))


def health() -> Call:
    return Call("GET", "/api/v1/health", retry=False, accept=frozenset({503}))


def queue_stats() -> Call:
    return Call("GET", "/api/v1/queue/stats")


# ---------------------------------------------------------------- models


def models_list() -> Call:
    return Call("GET", "/api/v1/models")


def models_ps() -> Call:
    return Call("GET", "/api/v1/models/ps")


def models_show(name: str) -> Call:
    return Call("GET", f"/api/v1/models/{_name(name)}/show")


def models_create(name: str, modelfile: str) -> Call:
    return Call("POST", "/api/v1/models/create", {"name": name, "modelfile": modelfile}, resend=False)


def models_copy(source: str, destination: str) -> Call:
    return Call("POST", f"/api/v1/models/{_name(source)}/copy", {"destination": destination}, resend=False)


def models_delete(name: str) -> Call:
    return Call("DELETE", f"/api/v1/models/{_name(name)}", resend=False)


def models_pull(name: str, *, insecure: bool) -> Call:
    body: JsonObject = {"name": name, "stream": True}
    if insecure:
        body["insecure"] = True
    return Call("POST", "/api/v1/models/pull", body, stream=True, complete=_pulled)


# ---------------------------------------------------------------- agents


def agents_list() -> Call:
    return Call("GET", "/api/v1/agents")


def agents_create(name: str, model: str, fields: Mapping[str, Any]) -> Call:
    return Call("POST", "/api/v1/agents/create", _body({"name": name, "model": model, **fields}), resend=False)


def agents_get(name: str) -> Call:
    return Call("GET", f"/api/v1/agents/{_name(name)}")


def agents_delete(name: str) -> Call:
    return Call("DELETE", f"/api/v1/agents/{_name(name)}", resend=False)


def agents_run(
    name: str,
    input: str | None,
    *,
    messages: Messages | None,
    stream: bool,
    max_steps: int | None,
    session: str | None,
) -> Call:
    fields = {
        "input": input,
        "messages": _messages(messages) if messages is not None else None,
        "stream": stream,
        "max_steps": max_steps,
        "session": session,
    }
    # a run calls tools (http_get, MCP servers) that may act on the world: never sent twice for one answer lost
    return Call(
        "POST",
        f"/api/v1/agents/{_name(name)}/run",
        _body(fields),
        stream=stream,
        complete=_agent_done,
        resend=False,
    )
