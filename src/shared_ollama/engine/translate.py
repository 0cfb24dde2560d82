"""Pure conversions of Ollama requests to llama.cpp's OpenAI-shaped requests (``answers.py`` converts back).

Beyond the messages, options and format: ``think`` becomes llama.cpp's reasoning controls (the chat template's
``enable_thinking`` and ``reasoning_effort``), ``logprobs``/``top_logprobs`` its log probabilities, and a generate
``suffix`` a fill-in-the-middle prompt built from the model's FIM tokens; ``raw`` prompts skip the chat template.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared_ollama.engine.capabilities import capabilities
from shared_ollama.engine.store import ModelEntry

JsonDict = dict[str, Any]

# Ollama option -> llama.cpp request field.
_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "num_keep": "n_keep",
}
_INT_OPTIONS = frozenset(
    {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx", "num_batch", "num_thread"}
)
_FLOAT_OPTIONS = frozenset(
    {
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat_tau",
        "mirostat_eta",
    }
)


THINK_LEVELS = ("low", "medium", "high", "max")
"""``think`` as a string: how hard to think (Ollama's levels; llama.cpp's ``reasoning_effort``)."""
MAX_TOP_LOGPROBS = 20


class TranslationError(ValueError):
    """The request cannot be expressed for llama.cpp (a 400 for the client)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_options(options: Any) -> JsonDict:
    """``options`` as a dict whose known keys have Ollama's types (floats are accepted for integers)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS and not _is_number(value):
            raise TranslationError(f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and not _is_number(value):
            raise TranslationError(f'option "{key}" must be of type float32')
        if key == "stop" and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise TranslationError('option "stop" must be of an array of strings')
    return options


def _check_images(images: Any) -> None:
    if images is not None and not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
        raise TranslationError("images must be a list of base64 strings")


def _refuse_unsupported_generate(body: JsonDict) -> None:
    """Ollama fields this engine cannot honour: refused by name, never silently dropped (``suffix`` depends on
    the model: ``generate_request``)."""
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise TranslationError("raw mode does not support template, system, or context")
    if body.get("raw") and (body.get("suffix") or body.get("images")):
        raise TranslationError("raw mode does not support suffix or images on this engine")
    if body.get("suffix") and body.get("system"):
        raise TranslationError("system is not used with suffix: a fill-in-the-middle prompt has no system prompt")
    if body.get("template"):
        raise TranslationError(
            "template: this engine cannot apply a per-request template; create a model with a TEMPLATE instead"
        )
    if body.get("context"):
        raise TranslationError(
            "context is not supported by this engine; send the conversation as messages to /api/chat"
        )


def _check_think_and_logprobs(body: JsonDict) -> None:
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise TranslationError(
            f'invalid think value: {think!r} (must be "high", "medium", "low", "max", true, or false)'
        )
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise TranslationError("logprobs must be a boolean")
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise TranslationError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    if top and not body.get("logprobs"):
        raise TranslationError("top_logprobs needs logprobs: true")


def check_request(kind: str, body: JsonDict) -> None:
    """Reject shapes a chat or generate request cannot have (400s), before anything is loaded or run."""
    check_options(body.get("options"))
    _check_think_and_logprobs(body)
    fmt = body.get("format")
    if fmt is not None and not isinstance(fmt, str | dict):
        raise TranslationError('format must be "json" or a JSON schema object')
    if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
        raise TranslationError("stream must be a boolean")
    if kind == "generate":
        for key in ("prompt", "system", "suffix", "template"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise TranslationError(f"{key} must be a string")
        if body.get("raw") is not None and not isinstance(body["raw"], bool):
            raise TranslationError("raw must be a boolean")
        _check_images(body.get("images"))
        _refuse_unsupported_generate(body)
        return
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise TranslationError("messages must be a list")
    for message in messages or []:
        if not isinstance(message, dict):
            raise TranslationError("each message must be an object")
        if message.get("content") is not None and not isinstance(message["content"], str):
            raise TranslationError("message content must be a string")
        _check_images(message.get("images"))
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls)
        ):
            raise TranslationError("tool_calls must be a list of {function: {name, arguments}} objects")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise TranslationError("tools must be a list of objects")


def merged_options(entry: ModelEntry, options: JsonDict | None) -> JsonDict:
    """The model's own parameters (from its manifest) overridden by the request's options."""
    merged = dict(entry.parameters)
    merged.update(options or {})
    return merged


def sampling(options: JsonDict, fmt: str | JsonDict | None) -> JsonDict:
    out: JsonDict = {}
    for src, dst in _OPTION_MAP.items():
        value = options.get(src)
        if value is not None:
            out[dst] = int(value) if src in _INT_OPTIONS and _is_number(value) else value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    num_predict = options.get("num_predict")
    if _is_number(num_predict) and num_predict >= 0:
        out["max_tokens"] = int(num_predict)
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    elif fmt not in (None, ""):
        raise TranslationError('format must be "json" or a JSON schema object')
    return out


_IMAGE_TYPES = (("iVBORw0KGgo", "png"), ("/9j/", "jpeg"), ("R0lGOD", "gif"), ("UklGR", "webp"), ("Qk", "bmp"))
"""Base64 prefixes of the image formats' magic bytes (llama.cpp decodes the bytes; the type is informative)."""


def _data_url(image: str) -> str:
    """An Ollama image (bare base64) as the data URL llama.cpp's chat handler expects in an ``image_url`` part."""
    kind = next((k for prefix, k in _IMAGE_TYPES if image.startswith(prefix)), "jpeg")
    return f"data:image/{kind};base64,{image}"


def _message(msg: JsonDict, entry: ModelEntry) -> JsonDict:
    role = str(msg.get("role", ""))
    if role not in ("system", "user", "assistant", "tool"):
        raise TranslationError(f"invalid message role {role!r}")
    if msg.get("images") and entry.projector is None:
        raise TranslationError(f"model '{entry.name}' does not support images (it has no vision capability)")
    out: JsonDict = {"role": role, "content": msg.get("content") or ""}
    if role == "assistant" and isinstance(msg.get("thinking"), str) and msg["thinking"]:
        out["reasoning_content"] = msg["thinking"]  # earlier reasoning, for templates that keep it
    if msg.get("images"):
        parts: list[JsonDict] = [{"type": "text", "text": out["content"]}]
        parts += [{"type": "image_url", "image_url": {"url": _data_url(img)}} for img in msg["images"]]
        out["content"] = parts
    if msg.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": call.get("function", {}).get("name", ""),
                    "arguments": orjson.dumps(call.get("function", {}).get("arguments", {})).decode(),
                },
            }
            for i, call in enumerate(msg["tool_calls"])
        ]
    if role == "tool" and msg.get("tool_name"):
        out["name"] = msg["tool_name"]
    return out


def _name(req: JsonDict, entry: ModelEntry) -> str:
    return str(req.get("model") or entry.name)


def thinking_fields(req: JsonDict, entry: ModelEntry) -> JsonDict:
    """llama.cpp's reasoning controls for ``think``: a model without the ``thinking`` capability cannot be asked
    to think (Ollama's 400); ``false`` turns a thinking model's reasoning off; unset leaves the template's default."""
    think = req.get("think")
    thinks = "thinking" in capabilities(entry)
    if think is None or (think is False and not thinks):
        return {}
    if not thinks:
        raise TranslationError(f'"{_name(req, entry)}" does not support thinking')
    if think is False:
        return {"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "none"}
    fields: JsonDict = {"chat_template_kwargs": {"enable_thinking": True}}
    if isinstance(think, str):
        fields["reasoning_effort"] = think
    return fields


def logprob_fields(req: JsonDict, chat: bool) -> JsonDict:
    """llama.cpp's log probability fields: at least one alternative is asked for (for zero it sends none at all,
    not even the chosen token's); ``answers.ollama_logprobs`` keeps as many as the request wanted."""
    if not req.get("logprobs"):
        return {}
    top = max(1, int(req.get("top_logprobs") or 0))
    return {"logprobs": True, "top_logprobs": top} if chat else {"logprobs": top}


def top_logprobs(req: JsonDict) -> int | None:
    """How many alternatives per token the answer carries; None when it carries no log probabilities."""
    return int(req.get("top_logprobs") or 0) if req.get("logprobs") else None


def chat_request(req: JsonDict, entry: ModelEntry) -> JsonDict:
    messages = [_message(m, entry) for m in req.get("messages") or []]
    history = [_message(m, entry) for m in entry.messages]
    if entry.system and not any(m["role"] == "system" for m in messages):
        history.insert(0, {"role": "system", "content": entry.system})
    out = sampling(merged_options(entry, req.get("options")), req.get("format"))
    out.update(thinking_fields(req, entry))
    out.update(logprob_fields(req, chat=True))
    out["messages"] = history + messages
    if req.get("tools"):
        out["tools"] = req["tools"]
    return out


def infill_prompt(prompt: str, suffix: str, entry: ModelEntry) -> list[int | str]:
    """The fill-in-the-middle prompt llama.cpp completes (prefix-suffix-middle order, its default): the model's
    prefix token, the prompt, its suffix token, the suffix, its middle token; BOS first when the model wants one.
    A mixed list of token ids and texts, which llama.cpp tokenizes in place."""
    pre, suf, mid = entry.fim_tokens
    out: list[int | str] = [pre, prompt, suf, suffix, mid]
    bos = entry.model_info.get("tokenizer.ggml.bos_token_id")
    if entry.model_info.get("tokenizer.ggml.add_bos_token") and isinstance(bos, int):
        out.insert(0, bos)
    return out


def generate_request(req: JsonDict, entry: ModelEntry) -> tuple[str, JsonDict]:
    """(llama.cpp method, request): raw and fill-in-the-middle prompts go to completions, others through the chat
    template."""
    out = sampling(merged_options(entry, req.get("options")), req.get("format"))
    if req.get("images") and entry.projector is None:
        raise TranslationError(f"model '{entry.name}' does not support images (it has no vision capability)")
    thinking = thinking_fields(req, entry)  # checked first: a model that cannot think is told so, as Ollama does
    if (req.get("suffix") or req.get("raw")) and req.get("think") not in (None, False):
        # Both bypass the chat template, which is where the model's reasoning is switched on and split off.
        raise TranslationError("think cannot be combined with raw or suffix (they bypass the chat template)")
    if req.get("suffix"):
        if "insert" not in capabilities(entry):
            raise TranslationError(f'"{_name(req, entry)}" does not support insert (suffix)')
        if req.get("images"):
            raise TranslationError("suffix (fill-in-the-middle) with images is not supported")
        out.update(logprob_fields(req, chat=False))
        out["prompt"] = infill_prompt(req.get("prompt") or "", req["suffix"], entry)
        return "handle_completions", out
    if req.get("raw"):
        out.update(logprob_fields(req, chat=False))
        out["prompt"] = req.get("prompt") or ""
        return "handle_completions", out
    out.update(thinking)
    out.update(logprob_fields(req, chat=True))
    messages: list[JsonDict] = []
    system = req.get("system") or entry.system
    if system:
        messages.append({"role": "system", "content": system})
    messages += [_message(m, entry) for m in entry.messages]  # the model's MESSAGE history, as Ollama does
    user: JsonDict = {"role": "user", "content": req.get("prompt") or "", "images": req.get("images")}
    messages.append(_message(user, entry))
    out["messages"] = messages
    return "handle_chat_completions", out
