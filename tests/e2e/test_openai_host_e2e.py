"""``OpenAIHostClient`` against llama.cpp's own OpenAI-compatible server (xllamacpp) with the offline models: native
bodies in, native answers out."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from shared_ollama.backends.openai_host import OpenAIHostClient
from shared_ollama.errors import BackendError, InvalidRequest

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        yield http


def client_for(hosts: tuple[dict[str, str], str], model: str, http: aiohttp.ClientSession) -> OpenAIHostClient:
    addresses, key = hosts
    return OpenAIHostClient(addresses[model] + "/v1", key, http)


def chat_body(**fields: object) -> dict[str, object]:
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "options": {"num_predict": 6, "temperature": 0, "seed": 1, "top_k": 1, "num_ctx": 4096},
        "keep_alive": "5m",
        **fields,
    }


async def test_a_native_chat_gets_a_native_answer_with_counts(
    llama_hosts: tuple[dict[str, str], str], session: aiohttp.ClientSession
) -> None:
    answer = await client_for(llama_hosts, CHAT_MODEL, session).chat(chat_body(stream=False))
    native = orjson.loads(answer.body)
    assert native["model"] == CHAT_MODEL and native["done"] is True
    assert native["message"]["role"] == "assistant" and native["message"]["content"].strip()
    assert native["done_reason"] == "length"  # six tokens, then llama.cpp's max_tokens stopped it
    assert native["eval_count"] == 6 and native["prompt_eval_count"] > 0
    assert native["total_duration"] > 0 and native["eval_duration"] > 0
    assert answer.dropped == ("options.num_ctx", "keep_alive")


async def test_a_streamed_native_chat_gets_native_lines_and_the_same_text(
    llama_hosts: tuple[dict[str, str], str], session: aiohttp.ClientSession
) -> None:
    client = client_for(llama_hosts, CHAT_MODEL, session)
    whole = orjson.loads((await client.chat(chat_body())).body)
    async with client.stream_chat(chat_body()) as stream:
        lines = [orjson.loads(line) async for line in stream.lines]
    assert stream.dropped == ("options.num_ctx", "keep_alive")
    *parts, done = lines
    assert len(parts) >= 2 and all(line["done"] is False for line in parts)
    assert "".join(line["message"]["content"] for line in parts) == whole["message"]["content"]
    assert done["done"] is True and done["done_reason"] == "length"
    assert done["eval_count"] == 6 and done["prompt_eval_count"] == whole["prompt_eval_count"]


async def test_generate_as_chat_and_as_raw_completion(
    llama_hosts: tuple[dict[str, str], str], session: aiohttp.ClientSession
) -> None:
    client = client_for(llama_hosts, CHAT_MODEL, session)
    options = {"num_predict": 4, "temperature": 0, "seed": 1}
    templated = orjson.loads((await client.generate({"model": CHAT_MODEL, "prompt": "Hi", "options": options})).body)
    assert templated["response"].strip() and templated["eval_count"] == 4
    raw = {"model": CHAT_MODEL, "prompt": "Once upon a time", "raw": True, "options": options}
    async with client.stream_generate(raw) as stream:
        lines = [orjson.loads(line) async for line in stream.lines]
    assert "".join(line["response"] for line in lines).strip()
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 4
    # the template turns "Hi" into a chat prompt of many more tokens than the raw prompt's own
    assert templated["prompt_eval_count"] > lines[-1]["prompt_eval_count"] > 0


async def test_embeddings_are_native_unit_vectors_cut_to_dimensions(
    llama_hosts: tuple[dict[str, str], str], session: aiohttp.ClientSession
) -> None:
    client = client_for(llama_hosts, EMBED_MODEL, session)
    body = {"model": EMBED_MODEL, "input": ["the cat sat", "a cat was sitting", "stock prices fell"]}
    native = orjson.loads((await client.embed(body)).body)
    vectors = native["embeddings"]
    assert [len(v) for v in vectors] == [384, 384, 384] and native["prompt_eval_count"] > 0
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    cut = orjson.loads((await client.embed({**body, "dimensions": 64})).body)["embeddings"]
    assert [len(v) for v in cut] == [64, 64, 64]


async def test_upstream_errors_keep_their_message_and_the_key_stays_out_of_them(
    llama_hosts: tuple[dict[str, str], str], session: aiohttp.ClientSession
) -> None:
    addresses, _ = llama_hosts
    wrong_key = OpenAIHostClient(addresses[CHAT_MODEL], "not-the-key", session)
    with pytest.raises(BackendError, match="Invalid API Key") as info:
        await wrong_key.chat(chat_body())
    assert "not-the-key" not in str(info.value) and "not-the-key" not in repr(wrong_key)
    client = client_for(llama_hosts, CHAT_MODEL, session)
    too_long = [{"role": "user", "content": "word " * 800}]  # the fixture's slots hold 512 tokens each
    with pytest.raises(InvalidRequest, match="context"):
        await client.chat({"model": CHAT_MODEL, "messages": too_long})
    with pytest.raises(BackendError, match="embeddings"):  # a generation server asked for embeddings: 501, kept
        await client.embed({"model": CHAT_MODEL, "input": "x"})
    assert await client.models()
