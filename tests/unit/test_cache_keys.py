"""Cache keys: what changes an answer is in the key, what does not is left out; the context key for semantic hits."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from shared_ollama.service.cache.keys import cache_key, context_key
from shared_ollama.service.cache.response import CacheConfig
from tests.support.cache import chat

IMAGE_A = base64.b64encode(b"\x89PNG first image" * 50).decode()
IMAGE_B = base64.b64encode(b"\x89PNG other image" * 50).decode()


def key(request: dict, tenant: str = "web", scope: str = "tenant", digest: str | None = "sha256:aa") -> str:
    return cache_key(request, tenant=tenant, scope=scope, model_digest=digest)


def ctx_key(request: dict, tenant: str = "web", digest: str | None = "sha256:aa") -> str:
    return context_key(request, tenant=tenant, scope="tenant", model_digest=digest)


# --- keys


def test_key_is_stable_and_ignores_what_does_not_change_the_answer() -> None:
    base = key(chat("What is the capital of France?"))
    reordered = {
        "options": {"temperature": 0},
        "messages": [{"content": "What is the capital of France?", "role": "user"}],
    }
    reordered["model"] = "smollm2:135m"
    assert key(reordered) == base
    assert key(chat("What is the capital of France?", stream=True)) == base
    assert key(chat("What is the capital of France?", stream=False, keep_alive="5m")) == base
    assert key(chat("What is the capital of France?", cache="semantic")) == base
    runtime = chat("What is the capital of France?")
    runtime["options"] |= {"num_thread": 4, "num_gpu": 99, "use_mmap": False, "use_mlock": True, "num_batch": 64}
    assert key(runtime) == base
    no_images = chat("What is the capital of France?", images=[])
    no_images["messages"][0]["images"] = []
    assert key(no_images) == base
    as_float = chat("What is the capital of France?")
    as_float["options"]["temperature"] = 0.0
    assert key(as_float) == base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def test_key_changes_with_what_changes_the_answer() -> None:
    request = chat("What is the capital of France?")
    base = key(request)
    variants = [
        key(request, digest="sha256:bb"),  # the model re-created
        key(request, digest=None),
        key({**request, "model": "qwen3:0.6b"}),
        key({**request, "options": {"temperature": 0, "seed": 1}}),
        key({**request, "options": {"temperature": 0, "num_ctx": 4096}}),
        key({**request, "options": {"temperature": 0.5}}),
        key(chat("What is the capital of Spain?")),
        key({**request, "format": "json"}),
        key({**request, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        key({**request, "think": True}),
        key({**request, "template": "{{ .Prompt }}"}),
        key(request, tenant="ops"),
        key({"model": "smollm2:135m", "prompt": "What is the capital of France?", "options": {"temperature": 0}}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_generate_fields_are_in_the_key() -> None:
    request = {"model": "m", "prompt": "Once", "options": {"seed": 3}}
    keys = {
        key(request),
        key({**request, "system": "Be short."}),
        key({**request, "suffix": "end"}),
        key({**request, "raw": True}),
        key({**request, "images": [IMAGE_A]}),
        key({**request, "context": [1, 2, 3]}),
    }
    assert len(keys) == 6


def test_images_are_hashed_not_embedded() -> None:
    def with_image(image: str) -> dict:
        request = chat("What is in this picture?")
        request["messages"][0]["images"] = [image]
        return request

    assert key(with_image(IMAGE_A)) == key(with_image(IMAGE_A))
    assert key(with_image(IMAGE_A)) != key(with_image(IMAGE_B))
    assert key(with_image(IMAGE_A)) != key(chat("What is in this picture?"))
    from shared_ollama.service.cache.keys import _canonical

    canonical = _canonical(with_image(IMAGE_A), "web", "tenant", None, False)
    assert IMAGE_A.encode() not in canonical
    assert hashlib.sha256(IMAGE_A.encode()).hexdigest().encode() in canonical


def test_tenant_scope_and_shared_scope() -> None:
    request = chat("hi")
    assert key(request, tenant="a") != key(request, tenant="b")
    assert key(request, tenant="a", scope="shared") == key(request, tenant="b", scope="shared")
    assert key(request, tenant="a", scope="shared") != key(request, tenant="a")
    with pytest.raises(ValueError):
        key(request, scope="global")
    with pytest.raises(ValueError):
        CacheConfig(scope="global")


def test_context_key_leaves_out_only_the_last_user_message() -> None:
    one = chat("Hello", "Hi! How can I help?", "What is the capital of France?")
    two = chat("Hello", "Hi! How can I help?", "Which city is France's capital?")
    other_history = chat("Bonjour", "Salut !", "What is the capital of France?")
    assert key(one) != key(two)
    assert ctx_key(one) == ctx_key(two)
    assert ctx_key(one) != ctx_key(other_history)
    assert ctx_key(one) != key(one)
    assert ctx_key(one) != ctx_key(one, tenant="ops")
    prompt = {"model": "m", "prompt": "a", "options": {"seed": 1}}
    assert ctx_key(prompt) == ctx_key({**prompt, "prompt": "b"})
    assert ctx_key(prompt) != ctx_key({**prompt, "system": "s"})
