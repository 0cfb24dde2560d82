"""Routes whose endpoints parse bodies themselves (the fast path), and the body schemas they declare for Swagger."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


class _RequestBody(dict[str, Any]):
    """``openapi_extra`` declaring a model as the JSON request body, its schema built when first read (FastAPI
    reads it only to build the OpenAPI document): building every route's schema at import took about a tenth of
    the app's import time (bench/coldstart.py)."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__()
        self._model = model

    def _built(self) -> _RequestBody:
        if not super().__len__():
            schema = self._model.model_json_schema()
            defs = schema.pop("$defs", {})
            content = {"application/json": {"schema": _inline(schema, defs)}}
            super().__setitem__("requestBody", {"required": True, "content": content})
        return self

    def __len__(self) -> int:
        return super(_RequestBody, self._built()).__len__()

    def __iter__(self) -> Iterator[str]:
        return super(_RequestBody, self._built()).__iter__()

    def __getitem__(self, key: str) -> Any:
        return super(_RequestBody, self._built()).__getitem__(key)

    def __contains__(self, key: object) -> bool:
        return super(_RequestBody, self._built()).__contains__(key)

    def __eq__(self, other: object) -> bool:
        return super(_RequestBody, self._built()).__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: str, default: Any = None) -> Any:
        return super(_RequestBody, self._built()).get(key, default)

    def keys(self) -> dict_keys[str, Any]:
        return super(_RequestBody, self._built()).keys()

    def values(self) -> dict_values[str, Any]:
        return super(_RequestBody, self._built()).values()

    def items(self) -> dict_items[str, Any]:
        return super(_RequestBody, self._built()).items()

    def copy(self) -> dict[str, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return repr(self.copy())


def body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body (references inlined), built when read."""
    return _RequestBody(model)


class LeanRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` alone and returns a ``Response`` itself.

    Such endpoints read and validate their bodies themselves, so FastAPI's per-request dependency solving and
    response serialisation would be pure overhead: the endpoint becomes the handler. The route still appears
    in the OpenAPI document. Endpoints with other parameters (path or query) keep FastAPI's handling.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if list(inspect.signature(self.endpoint).parameters) == ["request"]:
            endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
            return endpoint
        return super().get_route_handler()
