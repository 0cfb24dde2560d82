"""Helpers of the wire-model tests: a minimal chat body and the one field a body is refused for."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

JsonDict = dict[str, Any]


def chat(**fields: Any) -> JsonDict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def refused_field(model: type[Any], body: JsonDict) -> str:
    """The dotted location of the one error ``body`` gets."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return ".".join(str(p) for p in errors[0]["loc"])
