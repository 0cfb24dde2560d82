"""What a request asks of the engine, read from its native body: kind (text / vision) and prompt size.

The prompt limit is checked before admission. A cheap upper bound comes first: a token covers at least one
byte of text (byte-level BPE and SentencePiece with byte fallback both guarantee it), plus a margin per
message for the chat template's markers and a fixed allowance for what the template adds once (SmolLM2's
adds a default system prompt of about 30 tokens). Prompts under the limit by that bound (almost all of
them) cost nothing more.
Only larger ones are counted exactly with the engine's tokenizer (the embedded engine's ``/api/tokenize``,
template included); an engine without one (a real Ollama) gets a documented conservative estimate of one
token per three bytes of text.
"""

from __future__ import annotations

import math
from typing import Any

from shared_ollama.backends.client import EngineClient
from shared_ollama.errors import PromptTooLarge

JsonDict = dict[str, Any]
TEMPLATE_MARGIN = 16
"""Tokens allowed per message for the chat template's markers in the upper bound."""
TEMPLATE_ALLOWANCE = 128
"""Tokens allowed once per prompt for the template's own text (a default system prompt) in the upper bound."""
BYTES_PER_TOKEN_ESTIMATE = 3


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
    return texts, count


async def check_prompt_size(client: EngineClient, body: JsonDict, limit: int) -> None:
    """Raise ``prompt_too_large`` when a chat or generate prompt is over ``limit`` tokens."""
    texts, messages = _texts(body)
    size = sum(len(t.encode()) for t in texts)
    if size + TEMPLATE_MARGIN * messages + TEMPLATE_ALLOWANCE <= limit:
        return
    count = await client.count_tokens(str(body.get("model", "")), _tokenize_body(body))
    how = "counted with the model's tokenizer"
    if count is None:
        count = math.ceil(size / BYTES_PER_TOKEN_ESTIMATE) + 4 * messages
        how = f"estimated at one token per {BYTES_PER_TOKEN_ESTIMATE} bytes"
    if count > limit:
        raise PromptTooLarge(
            f"the prompt is {count} tokens ({how}); the limit is {limit}: shorten it or split the work",
            param="messages" if "messages" in body else "prompt",
        )


def _tokenize_body(body: JsonDict) -> JsonDict:
    if isinstance(body.get("messages"), list):
        out: JsonDict = {"messages": body["messages"]}
        if isinstance(body.get("system"), str):
            out["system"] = body["system"]
        return out
    return {"prompt": "".join(t for t in _texts(body)[0])}
