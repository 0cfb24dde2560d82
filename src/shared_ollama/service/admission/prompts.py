"""What a request asks of the engine, read from its native body: kind (text / vision) and prompt size.

The prompt limit is checked before admission. A cheap upper bound comes first: a token covers at least one
byte of text (byte-level BPE and SentencePiece with byte fallback both guarantee it), plus a margin per
message for the chat template's markers and a fixed allowance for what the template adds once (SmolLM2's
adds a default system prompt of about 30 tokens). Prompts under the limit by that bound (almost all of
them) cost nothing more.
A prompt far over the limit is refused next, still without touching the engine: more bytes of text than
``MAX_BYTES_PER_TOKEN`` per token of the limit, or more messages than the limit has tokens (each costs at least
one). Only what is left is counted exactly with the engine's tokenizer (the embedded engine's ``/api/tokenize``,
template included), and only with a model that is already loaded (``"load": false``: the check runs before
admission, so it must not load or evict a model outside the caps and slots), within ``count_budget`` seconds.
Otherwise (an engine without a tokenizer such as a real Ollama, a model not loaded, a tokenizer that failed or
took too long) a documented conservative estimate of one token per three bytes of text decides: a client's
prompt is never turned into an engine error here.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import orjson

from shared_ollama.backends.client import EngineApi
from shared_ollama.errors import InvalidRequest, ModelNotFound, PromptTooLarge, SharedOllamaError

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
TEMPLATE_MARGIN = 16
"""Tokens allowed per message for the chat template's markers in the upper bound."""
TEMPLATE_ALLOWANCE = 128
"""Tokens allowed once per prompt for the template's own text (a default system prompt) in the upper bound."""
BYTES_PER_TOKEN_ESTIMATE = 3
MAX_BYTES_PER_TOKEN = 16
"""A generous bound on the bytes one token covers on average over a prompt (English averages about 4): more
bytes than this per token of the limit are refused without counting."""


def request_kind(body: JsonDict) -> str:
    """``vision`` when the request carries images, else ``text``."""
    if body.get("images"):
        return "vision"
    messages = body.get("messages")
    if isinstance(messages, list) and any(isinstance(m, dict) and m.get("images") for m in messages):
        return "vision"
    return "text"


def _texts(body: JsonDict) -> tuple[list[str], int]:
    """The prompt's texts and its number of messages (a generate prompt counts as one)."""
    texts = [v for v in (body.get("system"), body.get("prompt"), body.get("suffix")) if isinstance(v, str)]
    messages = body.get("messages")
    count = 1
    if isinstance(messages, list):
        count = len(messages) + (1 if isinstance(body.get("system"), str) else 0)
        texts += [m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:  # the template renders the tools' schemas into the prompt
        texts.append(orjson.dumps(tools).decode())
    return texts, count


async def check_prompt_size(client: EngineApi, body: JsonDict, limit: int, *, count_budget: float) -> None:
    """Raise ``prompt_too_large`` when a chat or generate prompt is over ``limit`` tokens (``count_budget``:
    seconds the engine gets to count it before the estimate decides)."""
    texts, messages = _texts(body)
    size = sum(len(t.encode()) for t in texts)
    if size + TEMPLATE_MARGIN * messages + TEMPLATE_ALLOWANCE <= limit:
        return
    param = "messages" if "messages" in body else "prompt"
    if size > limit * MAX_BYTES_PER_TOKEN or messages > limit:
        raise PromptTooLarge(
            f"the prompt has {size} bytes of text in {messages} messages, far more than a limit of {limit} tokens "
            "allows (refused without counting): shorten it or split the work",
            param=param,
        )
    count = await _count(client, body, count_budget)
    how = "counted with the model's tokenizer"
    if count is None:
        count = math.ceil(size / BYTES_PER_TOKEN_ESTIMATE) + 4 * messages
        how = f"estimated at one token per {BYTES_PER_TOKEN_ESTIMATE} bytes"
    if count > limit:
        raise PromptTooLarge(
            f"the prompt is {count} tokens ({how}); the limit is {limit}: shorten it or split the work", param=param
        )


async def _count(client: EngineApi, body: JsonDict, budget: float) -> int | None:
    """The engine's exact count with a model it already holds, or None for the estimate: no tokenizer, the
    model not loaded (the engine answers 409 rather than load it), a failure or no answer within ``budget`` seconds.
    An unknown model and a request the tokenizer calls malformed are the client's errors and are raised."""
    model = str(body.get("model", ""))
    try:
        async with asyncio.timeout(budget):
            return await client.count_tokens(model, {**_tokenize_body(body), "load": False})
    except (ModelNotFound, InvalidRequest):
        raise
    except (SharedOllamaError, TimeoutError) as exc:
        log.debug("prompt of %s not counted by the engine (%s): estimated", model, exc)
        return None


def _tokenize_body(body: JsonDict) -> JsonDict:
    if isinstance(body.get("messages"), list):
        out: JsonDict = {"messages": body["messages"]}
        if isinstance(body.get("system"), str):
            out["system"] = body["system"]
        if isinstance(body.get("tools"), list) and body["tools"]:
            out["tools"] = body["tools"]
        return out
    return {"prompt": "".join(t for t in _texts(body)[0])}
