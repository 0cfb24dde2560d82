"""OpenAI's Responses API (``/v1/responses``): the request's wire models and the fields refused by name.

The conversion to a native chat is in ``responses_convert.py``; the response object and its stream events in
``responses_stream.py``. Every number is bounded (``bounds.py``); every field sent that nothing honours, at any
depth, is a 400 that names it.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.bounds import MaxTokens, Probability
from shared_ollama.protocol.convert import refuse_unsupported
from shared_ollama.protocol.openai import _Wire

JsonDict = dict[str, Any]

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_USER_ID = 256


def new_id(prefix: str) -> str:
    """An id as OpenAI shapes them: ``resp_...``, ``msg_...``, ``fc_...``, ``call_...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


# ---------------------------------------------------------------- wire models


class InputText(_Wire):
    type: Literal["input_text"]
    text: str


class InputImage(_Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"


class OutputText(_Wire):
    """Text of an assistant message replayed as input (an earlier response's output)."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None
    parsed: Any = Field(default=None, exclude=True)
    """The SDK's own parse of ``text`` (``responses.parse``), sent back with the item: ``text`` is what counts."""


Part = Annotated[InputText | InputImage | OutputText, Field(discriminator="type")]


class MessageItem(_Wire):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[Part]
    """A bare string is read as one text part (``output_text`` in an assistant message, else ``input_text``)."""
    id: str | None = None
    status: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_as_part(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("content"), str):
            kind = "output_text" if value.get("role") == "assistant" else "input_text"
            return {**value, "content": [{"type": kind, "text": value["content"]}]}
        return value


class FunctionCallItem(_Wire):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None
    parsed_arguments: Any = Field(default=None, exclude=True)
    """The SDK's own parse of ``arguments`` (``responses.parse``/``stream``), sent back with the call it got:
    ``arguments`` is what counts."""


class FunctionCallOutputItem(_Wire):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]
    id: str | None = None
    status: str | None = None


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]


class FunctionTool(_Wire):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JsonDict | None = None
    strict: bool | None = None


class ToolChoiceFunction(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTool(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1)


class ToolChoiceAllowed(_Wire):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[AllowedTool] = Field(min_length=1)


class TextFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: JsonDict | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Wire):
    format: TextFormat | None = None


class ResponsesRequest(_Wire):
    model: str = Field(min_length=1)
    input: list[InputItem] = Field(min_length=1)
    """A bare string is read as one user message."""
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | ToolChoiceAllowed | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: Probability | None = None
    max_output_tokens: MaxTokens | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, min_length=1)
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = Field(default=None, max_length=MAX_USER_ID)
    safety_identifier: str | None = Field(default=None, max_length=MAX_USER_ID)

    @field_validator("input", mode="before")
    @classmethod
    def _text_as_message(cls, value: Any) -> Any:
        return [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata has at most {MAX_METADATA_PAIRS} pairs")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY or len(item) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY} characters, values {MAX_METADATA_VALUE}"
                )
        return value

    @property
    def stored(self) -> bool:
        """``store`` defaults to true, as OpenAI's does."""
        return self.store is not False

    @property
    def end_user(self) -> str | None:
        """Who the request is for inside its tenant (``safety_identifier``, else ``user``)."""
        return self.safety_identifier or self.user or None


def refuse_unsupported_fields(req: ResponsesRequest) -> None:
    """A 400 naming the first field sent that nothing here honours, at any depth (``text.verbosity``,
    ``tools[0].defer_loading``, ``input[2].phase``, ...); unset or empty values ask for nothing and pass."""
    refuse_unsupported(req)
    _refuse_nested(req, "")


def _refuse_nested(model: BaseModel, path: str) -> None:
    for name in type(model).model_fields:
        _refuse_value(getattr(model, name), f"{path}.{name}" if path else name)


def _refuse_value(value: object, path: str) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_value(item, f"{path}[{i}]")
    elif isinstance(value, BaseModel):
        for name, extra in (value.model_extra or {}).items():
            if extra is None or extra == [] or extra == {} or extra is False:
                continue
            raise InvalidRequest(f"'{path}.{name}' is not supported by this service", param=f"{path}.{name}")
        _refuse_nested(value, path)
