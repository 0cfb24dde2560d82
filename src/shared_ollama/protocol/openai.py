"""OpenAI request models (chat completions, completions, embeddings); every number is bounded (``bounds.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared_ollama.protocol.bounds import Dimensions, MaxTokens, Seed

JsonDict = dict[str, Any]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ImageUrl(_Wire):
    url: str


class ContentPart(_Wire):
    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None


class FunctionCall(_Wire):
    name: str
    arguments: str | JsonDict = "{}"


class ToolCall(_Wire):
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonDict | None = None


class _Sampling(_Wire):
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: Seed | None = None
    stop: str | list[str] | None = None
    max_tokens: MaxTokens | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    """The end user (the gateway's per-user fairness inside the tenant; also ``safety_identifier``)."""
    safety_identifier: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: MaxTokens | None = None
    response_format: ResponseFormat | None = None
    tools: list[JsonDict] | None = None
    tool_choice: str | JsonDict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    suffix: str | None = None
    echo: bool | None = None

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("prompt must be a string or a list of exactly one string")
        return value


class EmbeddingRequest(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: object) -> object:
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("input must be a string or a list of strings (token arrays are not supported)")
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        return value
