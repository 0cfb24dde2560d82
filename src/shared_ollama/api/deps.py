"""How adapters reach the composition root's objects."""

from __future__ import annotations

from fastapi import Request

from shared_ollama.api.errors import request_id_of
from shared_ollama.service.context import RequestContext
from shared_ollama.service.gateway import Gateway


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def context_of(request: Request, surface: str) -> RequestContext:
    return RequestContext(request_id=request_id_of(request), surface=surface)
