"""``POST /api/tokenize``: how many tokens a prompt or chat is for a model, with the model's own tokenizer.

Not part of Ollama's API (real Ollama answers 404): the gateway uses it, when the engine offers it, to refuse
over-long prompts before they run. The body names a model and either a ``prompt`` (counted as is) or chat
``messages`` (with optional ``system`` and ``tools``), counted as the model sees them: rendered through its
chat template, with the model's own system prompt and history as a chat request would have them. Images are
not counted (llama.cpp's tokenizer only sees text). The answer is ``{"model": name, "count": n}``.

With ``"load": false`` (what the gateway sends: it counts before admission) a model that is not loaded is not
loaded for the count: the answer is ``409 {"error": ..., "loaded": false}`` and the gateway estimates instead.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from shared_ollama.engine.handlers import ApiError, EngineApp, json_response, read_json
from shared_ollama.engine.store import ModelEntry
from shared_ollama.engine.translate import TranslationError, chat_request, check_request

JsonDict = dict[str, Any]


def _chat(body: JsonDict, entry: ModelEntry) -> JsonDict:
    """The llama.cpp ``/apply-template`` request for a chat-shaped body (TranslationError when malformed)."""
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise TranslationError("system must be a string")
    check_request("chat", {"messages": body["messages"], "tools": body.get("tools")})
    messages: list[JsonDict] = [{"role": "system", "content": system}] if system else []
    messages += [{k: v for k, v in m.items() if k != "images"} for m in body["messages"]]
    translated = chat_request({"messages": messages, "tools": body.get("tools")}, entry)
    chat: JsonDict = {"messages": translated["messages"]}
    if translated.get("tools"):
        chat["tools"] = translated["tools"]
    return chat


async def tokenize(app: EngineApp, request: Request) -> Response:
    body = await read_json(request)
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        raise ApiError(400, "give either prompt or messages")
    if prompt is not None and not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string")
    if messages is not None and not isinstance(messages, list):
        raise ApiError(400, "messages must be a list")
    entry = app.entry(body)
    chat: JsonDict | None = None
    if messages is not None:
        if "completion" not in entry.capabilities:
            raise ApiError(400, f'"{body["model"]}" does not support chat')
        try:
            chat = _chat(body, entry)
        except TranslationError as exc:
            raise ApiError(400, str(exc)) from exc
    if body.get("load") is False:
        with app.registry.held_if_loaded(entry.name) as held:
            if held is None:
                return json_response({"error": f"model '{body['model']}' is not loaded", "loaded": False}, 409)
            count = await held.count_tokens(prompt or "", chat)
        return json_response({"model": body["model"], "count": count})
    # A count is no reason to reload: reuse the loaded instance whatever its context size and keep_alive.
    loaded = next((m for m in app.registry.loaded() if m.entry.name == entry.name), None)
    num_ctx = loaded.num_ctx if loaded is not None else app.num_ctx(body)
    keep_alive = app.keep_alive(body)
    if loaded is not None and "keep_alive" not in body:
        keep_alive = loaded.keep_alive
    async with app.registry.use(entry, num_ctx, keep_alive) as (model, _):
        count = await model.count_tokens(prompt or "", chat)
    return json_response({"model": body["model"], "count": count})
