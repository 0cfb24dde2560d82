"""Typed shapes of what the service sends back: plain dicts as parsed from JSON, described as ``TypedDict``.

Every key is optional (``total=False``): the service may leave a field out (a stream's last chunk carries the
counts, the others do not), and newer services may add fields, which stay in the dict.
"""

from __future__ import annotations

from typing import Any, TypedDict

JsonObject = dict[str, Any]
"""A JSON object whose shape the service documents elsewhere (``/api/docs``)."""


class ToolCallFunction(TypedDict, total=False):
    name: str
    arguments: Any


class ToolCall(TypedDict, total=False):
    id: str
    type: str
    function: ToolCallFunction


class Message(TypedDict, total=False):
    """A chat message as the native API writes it."""

    role: str
    content: str
    thinking: str
    images: list[str]
    tool_calls: list[ToolCall]


class _Counts(TypedDict, total=False):
    model: str
    created_at: str
    done: bool
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class ChatResponse(_Counts, total=False):
    """``/api/v1/chat`` (non-streamed), and each chunk of its stream (``message.content`` a piece of the answer;
    the last chunk has ``done: true`` and the counts)."""

    message: Message


ChatChunk = ChatResponse


class ImageCompressionReport(TypedDict, total=False):
    """What the service did to one image of a vision request."""

    original_bytes: int
    sent_bytes: int
    original_size: list[int]
    sent_size: list[int]
    original_format: str
    sent_format: str
    action: str
    cached: bool


class VisionResponse(ChatResponse, total=False):
    """``/api/v1/vlm``: a chat response plus a report per image."""

    image_compression: list[ImageCompressionReport]


class GenerateResponse(_Counts, total=False):
    """``/api/v1/generate`` (non-streamed), and each chunk of its stream."""

    response: str
    thinking: str
    context: list[int]


GenerateChunk = GenerateResponse


class EmbeddingsResponse(TypedDict, total=False):
    """``/api/v1/embeddings``: one vector per input (``embedding`` too when the input was one string)."""

    model: str
    embeddings: list[list[float]]
    embedding: list[float]
    prompt_eval_count: int
    total_duration: int


class CompletionMessage(TypedDict, total=False):
    role: str
    content: str | None
    tool_calls: list[ToolCall]


class CompletionChoice(TypedDict, total=False):
    index: int
    message: CompletionMessage
    finish_reason: str | None
    logprobs: Any


class Usage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(TypedDict, total=False):
    """``/api/v1/chat/completions`` (OpenAI's chat completion object)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str


class ChunkDelta(TypedDict, total=False):
    role: str
    content: str | None
    tool_calls: list[Any]


class ChunkChoice(TypedDict, total=False):
    index: int
    delta: ChunkDelta
    finish_reason: str | None


class ChatCompletionChunk(TypedDict, total=False):
    """One event of a streamed ``/api/v1/chat/completions`` (OpenAI's ``chat.completion.chunk``)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None


class BatchResult(TypedDict, total=False):
    """One item of a batch: ``ok`` with the chat ``response``, or the item's error (``code``, ``status``, ...)."""

    index: int
    ok: bool
    response: ChatResponse
    error: str
    code: str
    status: int
    retry_after: float | None


class BatchResponse(TypedDict, total=False):
    """``/api/v1/batch/chat``: one result per request, in order, and totals."""

    results: list[BatchResult]
    total: int
    succeeded: int
    failed: int
    wall_seconds: float
    kind: str


class ModelDetails(TypedDict, total=False):
    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class ModelInfo(TypedDict, total=False):
    """One installed (``models.list``) or loaded (``models.ps``) model."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int


class ModelList(TypedDict, total=False):
    models: list[ModelInfo]


class PullProgress(TypedDict, total=False):
    """One progress line of a pull (``status``; bytes ``completed`` of ``total`` while a file downloads)."""

    status: str
    digest: str
    total: int
    completed: int


class AgentEvent(TypedDict, total=False):
    """One event of a streamed agent run: ``type`` is ``step_started``, ``message_delta``, ``tool_call``,
    ``tool_result`` or ``done`` (the last, with the run's summary)."""

    type: str
    step: int
    content: str
    id: str
    name: str
    arguments: Any
    error: Any
    run_id: str
    output: str
    steps: list[JsonObject]
    usage: JsonObject
    stopped: str
    session: str
    agent: str


class AgentRun(TypedDict, total=False):
    """A finished agent run (non-streamed ``agents.run``)."""

    agent: str
    run_id: str
    output: str
    steps: list[JsonObject]
    usage: JsonObject
    stopped: str
    session: str
    error: JsonObject


class Health(TypedDict, total=False):
    """``/api/v1/health``: ``status`` is ``healthy`` or ``degraded`` (with a ``reason``)."""

    status: str
    ollama_status: str
    engine: JsonObject
    queue: JsonObject
    service_version: str
    uptime_seconds: float
    default_model: str
    reason: str
