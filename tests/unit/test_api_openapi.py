"""The request-body schemas routes declare for Swagger: built when the OpenAPI document is, not at import."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from shared_ollama.api.openapi import body


class Inner(BaseModel):
    text: str


class Counted(BaseModel):
    inner: Inner
    built: ClassVar[int] = 0

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        cls.built += 1
        return super().model_json_schema(*args, **kwargs)


def test_the_schema_is_built_when_first_read_then_kept() -> None:
    Counted.built = 0
    extra = body(Counted)
    assert Counted.built == 0, "declaring a route must not build its schema (start-up time)"
    assert extra, "FastAPI tests the declaration's truth before merging it"
    schema = extra["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["inner"]["properties"]["text"]["type"] == "string", "references are inlined"
    assert "$defs" not in schema
    assert dict(extra.items()) == extra.copy() == {"requestBody": extra["requestBody"]}
    assert Counted.built == 1
