"""An agent as an OpenAI model: ``model: "agent:<name>"`` on ``/v1/chat/completions``.

The loop runs server-side (``service/agents``); the answer is the run's final message, non-streamed as a
``chat.completion`` or streamed as SSE deltas (grammar-mode decisions and tool calls send nothing; the final
answer's text streams). The run is stored like any other (``session`` in the ``X-Shared-Ollama-Agent-Session``
header; send it back in the same header to continue the conversation). Fields an agent run cannot honour (its
tools, sampling and output bound are the agent's own) are refused with a 400 naming them.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from shared_ollama.api.agents import agents_of, last_event, started
from shared_ollama.api.deps import context_of, name_user
from shared_ollama.api.http import json_response, sse_response, validate
from shared_ollama.errors import InvalidRequest, error_for_code
from shared_ollama.protocol import convert
from shared_ollama.protocol.openai import ChatCompletionRequest
from shared_ollama.service.agents.definition import SESSION_ID, RunRequest
from shared_ollama.web import until_disconnect

JsonDict = dict[str, Any]

PREFIX = "agent:"
SESSION_HEADER = "X-Shared-Ollama-Agent-Session"
_ALLOWED = frozenset({"model", "messages", "stream", "stream_options", "user", "safety_identifier"})


def is_agent(model: str) -> bool:
    return model.startswith(PREFIX)


def _run_request(req: ChatCompletionRequest, session: str | None) -> RunRequest:
    refused = sorted(set(req.model_dump(exclude_unset=True)) - _ALLOWED)
    if refused:
        raise InvalidRequest(
            f"{', '.join(refused)} cannot be set for an agent model (the agent's definition sets them)",
            param=refused[0],
        )
    messages = []
    for message in convert.chat_request_to_native(req)["messages"]:
        role = message.get("role")
        if role not in ("user", "assistant", "system") or message.get("images") or message.get("tool_calls"):
            raise InvalidRequest("an agent model takes text messages from system, user and assistant", param="messages")
        messages.append({"role": role, "content": str(message.get("content") or "")})
    if session is not None and not re.fullmatch(SESSION_ID, session):
        raise InvalidRequest(f"the {SESSION_HEADER} header must match {SESSION_ID}", param=SESSION_HEADER)
    return validate(RunRequest, {"messages": messages, "stream": req.stream, "session": session})


def _succeeded(result: JsonDict) -> JsonDict:
    """The run's result; a run that stopped on an error raises it (an OpenAI error, not a quiet short answer)."""
    error = result.get("error")
    if result.get("stopped") == "error" and isinstance(error, dict):
        raise error_for_code(str(error.get("code")), str(error.get("message")))
    return result


def _final(model: str, done: JsonDict) -> JsonDict:
    usage = done.get("usage") or {}
    return {
        "model": model,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop" if done.get("stopped") == "done" else "length",
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "eval_count": int(usage.get("completion_tokens") or 0),
    }


async def agent_chat_completion(request: Request, req: ChatCompletionRequest) -> Response:
    name = req.model[len(PREFIX) :]
    ctx = context_of(request)
    name_user(ctx, req.user or req.safety_identifier, "user" if req.user else "safety_identifier")
    run = _run_request(req, request.headers.get(SESSION_HEADER) or None)
    agents = agents_of(request)
    prepared = await agents.prepare(ctx, name, run)
    ctx.headers[SESSION_HEADER] = prepared.session
    created = int(time.time())
    if not req.stream:
        done = await until_disconnect(request, last_event(prepared.events()))
        result = _succeeded(await agents.finish(ctx, name, prepared, done))
        native = _final(req.model, result)
        native["message"]["content"] = result.get("output") or ""
        return json_response(convert.chat_response_from_native(native, request_id=ctx.request_id, created=created))
    begun = await started(request, prepared)

    async def lines() -> AsyncIterator[bytes]:
        async for event in begun.all():
            if event.get("type") == "message_delta":
                chunk = {"model": req.model, "message": {"role": "assistant", "content": event["content"]}}
                yield orjson.dumps({**chunk, "done": False})
            elif event.get("type") == "done":
                result = _succeeded(await agents.finish(ctx, name, prepared, event))
                yield orjson.dumps(_final(req.model, result))

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    first = [True]

    def to_chunks(native: JsonDict) -> list[JsonDict]:
        chunks = convert.chat_chunk_from_native(
            native, request_id=ctx.request_id, created=created, first=first[0], include_usage=include_usage
        )
        first[0] = False
        return chunks

    return sse_response(request, AsyncExitStack(), lines(), to_chunks)
