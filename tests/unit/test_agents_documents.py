"""Agents' documents: chunking, and storage and KNN search in sqlite-vec, with a deterministic fake embedder (a
bag of words hashed into 16 dimensions, normalised). The real embedding model (through the gateway pipeline) is
proven end to end by the lead's e2e test of ``search_documents`` (tests/e2e); here the embedder is a fake so the
ranking is exact and the test needs no engine."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared_ollama.errors import BackendError, InvalidRequest
from shared_ollama.service.agents.chunking import chunk_text
from shared_ollama.service.agents.documents import Documents, open_vector_database

DIM = 16
PLANTED = "The secret launch code of project Zephyr is 7391."
FILLER = [
    "Tomatoes grow best in warm soil with plenty of sunlight and regular watering.",
    "The violin concerto was performed by a young soloist with an orchestra from Vienna.",
    "Glaciers carve valleys slowly over thousands of years as the ice moves downhill.",
    "A good sourdough needs a lively starter, flour, water, salt and patience overnight.",
    "The marathon route passes the old harbour, the cathedral and the city park.",
    "Electric trains draw power from overhead lines through a pantograph on the roof.",
    "Owls hunt at night, hearing mice beneath the snow before they ever see them.",
    "The chess club meets on Tuesdays to study endgames and classic openings.",
]


def bag_of_words(text: str, dim: int = DIM) -> list[float]:
    vector = [0.0] * dim
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class FakeEmbedder:
    """Records the batch sizes it was called with; ``dim`` sets the vectors' dimension."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.batches: list[int] = []

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        return [bag_of_words(text, self.dim) for text in texts]


def corpus() -> str:
    paragraphs = [" ".join(FILLER[i : i + 2]) for i in range(0, len(FILLER), 2)]
    paragraphs.insert(2, f"Some notes follow. {PLANTED} Keep it safe.")
    return "\n\n".join(paragraphs)


@pytest.fixture
async def docs(tmp_path: Path) -> AsyncIterator[Documents]:
    store = Documents(tmp_path / "data" / "agents_vectors.sqlite3", chunk_chars=160, overlap=30)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


# --- chunking


def random_text(rng: random.Random) -> str:
    words = ["alpha", "be", "gamma", "delta.", "epsilon!", "zeta?", "eta", "theta,", "x" * rng.randint(1, 400)]
    paragraphs = []
    for _ in range(rng.randint(1, 8)):
        paragraphs.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 120))))
    return ("\n\n" if rng.random() < 0.7 else "\n \n").join(paragraphs)


@pytest.mark.parametrize(("chunk_chars", "overlap"), [(800, 100), (120, 30), (50, 0), (20, 19), (1, 0)])
def test_chunks_are_never_empty_never_over_the_limit_and_keep_every_word(chunk_chars: int, overlap: int) -> None:
    rng = random.Random(chunk_chars * 1000 + overlap)
    for _ in range(40):
        text = random_text(rng)
        chunks = chunk_text(text, chunk_chars=chunk_chars, overlap=overlap)
        assert chunks, text
        assert all(chunk.strip() and chunk == chunk.strip() for chunk in chunks)
        assert all(len(chunk) <= chunk_chars for chunk in chunks)
        joined = " ".join(chunks)
        assert all(word in joined for word in text.split() if len(word) <= chunk_chars)


def test_consecutive_chunks_overlap_by_whole_words() -> None:
    text = " ".join(f"word{i:03d}" for i in range(300))  # one paragraph, no sentence ends: cut between words
    chunks = chunk_text(text, chunk_chars=100, overlap=30)
    assert len(chunks) > 3
    for previous, chunk in itertools.pairwise(chunks):
        first_words = chunk.split()[:2]
        assert first_words and all(word in previous.split() for word in first_words)  # starts inside the previous
        shared = [w for w in chunk.split() if w in previous.split()]
        assert 0 < len(" ".join(shared)) <= 30
    assert chunk_text(text, chunk_chars=100, overlap=0)[1].split()[0] not in chunks[0].split()


def test_a_paragraph_that_fits_stays_whole_and_sentences_are_not_cut() -> None:
    short = "A short paragraph that fits."
    sentences = [f"Sentence number {i} ends here." for i in range(12)]
    text = f"{short}\n\n{' '.join(sentences)}"
    chunks = chunk_text(text, chunk_chars=100, overlap=0)
    assert chunks[0].startswith(short)
    for sentence in sentences:
        assert any(sentence in chunk for chunk in chunks), sentence  # each sentence whole in some chunk


def test_a_word_longer_than_a_chunk_is_sliced() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(250))
    chunks = chunk_text(f"before {word} after", chunk_chars=100, overlap=10)
    assert all(len(c) <= 100 for c in chunks)
    assert word in "".join(c.replace("before", "").replace("after", "").replace(" ", "") for c in chunks)


def test_blank_text_has_no_chunks_and_bad_sizes_are_refused() -> None:
    assert chunk_text("  \n\n \t ") == []
    with pytest.raises(ValueError):
        chunk_text("text", chunk_chars=10, overlap=10)
    with pytest.raises(ValueError):
        chunk_text("text", chunk_chars=0, overlap=0)


# --- storage and search


async def test_the_planted_sentence_is_the_top_hit(docs: Documents) -> None:
    embed = FakeEmbedder()
    added = await docs.add("alpha", "helper", corpus(), title="Notes", embed=embed)
    assert added["document_id"].startswith("doc_") and added["title"] == "Notes"
    assert added["chars"] == len(corpus()) and added["chunks"] == sum(embed.batches) > 3
    hits = await docs.search("alpha", "helper", bag_of_words("What is the secret launch code of project Zephyr?"))
    assert len(hits) == 4
    assert PLANTED in hits[0].text
    assert hits[0].document_id == added["document_id"] and hits[0].title == "Notes"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    exact = await docs.search("alpha", "helper", bag_of_words(hits[1].text), k=1)
    assert exact[0].text == hits[1].text and exact[0].score == pytest.approx(1.0, abs=1e-5)  # 1 - cosine distance


async def test_vectors_live_in_a_vec0_table_with_cosine_distance(docs: Documents) -> None:
    await docs.add("alpha", "helper", corpus(), title=None, embed=FakeEmbedder())
    conn = open_vector_database(docs.path, ())
    try:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'vec_chunks_16'").fetchone()[0]
        assert "USING vec0" in sql and "distance_metric=cosine" in sql and "PARTITION KEY" in sql.upper()
        chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM vec_chunks_16").fetchone()[0] == chunks
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_embedding_goes_in_batches_of_at_most_32(docs: Documents) -> None:
    embed = FakeEmbedder()
    text = "\n\n".join(f"Paragraph {i} speaks of item {i} and nothing else at all here." for i in range(200))
    added = await docs.add("alpha", "helper", text, title="Many", embed=embed)
    assert added["chunks"] > 64
    assert embed.batches == [32] * (added["chunks"] // 32) + ([added["chunks"] % 32] if added["chunks"] % 32 else [])


async def test_tenants_and_agents_see_only_their_own_documents(docs: Documents) -> None:
    embed = FakeEmbedder()
    query = bag_of_words("secret launch code Zephyr")
    mine = await docs.add("alpha", "helper", corpus(), title="Mine", embed=embed)
    assert await docs.search("beta", "helper", query) == []
    assert await docs.search("alpha", "other", query) == []
    theirs = await docs.add("beta", "helper", PLANTED, title="Theirs", embed=embed)
    await docs.add("alpha", "other", PLANTED, title="Other agent", embed=embed)
    assert {h.document_id for h in await docs.search("alpha", "helper", query, k=50)} == {mine["document_id"]}
    assert {h.document_id for h in await docs.search("beta", "helper", query, k=50)} == {theirs["document_id"]}
    assert await docs.delete("beta", "helper", mine["document_id"]) is False  # not theirs to delete
    assert await docs.count("alpha", "helper") == 1 and await docs.count("beta", "nobody") == 0
    assert [d["title"] for d in await docs.list("beta", "helper")] == ["Theirs"]


async def test_list_delete_and_delete_agent(docs: Documents) -> None:
    embed = FakeEmbedder()
    first = await docs.add("alpha", "helper", corpus(), title=None, embed=embed)
    second = await docs.add("alpha", "helper", PLANTED, title="Planted", embed=embed)
    await docs.add("alpha", "other", PLANTED, title="Kept", embed=embed)
    listed = await docs.list("alpha", "helper")
    assert [d["document_id"] for d in listed] == [first["document_id"], second["document_id"]]
    assert listed[0]["title"] == corpus().splitlines()[0][:80]  # no title: the first line
    assert set(listed[1]) == {"document_id", "title", "chunks", "chars", "created_at"}
    assert await docs.delete("alpha", "helper", second["document_id"]) is True
    assert await docs.delete("alpha", "helper", second["document_id"]) is False
    hits = await docs.search("alpha", "helper", bag_of_words(PLANTED), k=50)
    assert {h.document_id for h in hits} == {first["document_id"]}
    assert await docs.delete_agent("alpha", "helper") == 1
    assert await docs.search("alpha", "helper", bag_of_words(PLANTED)) == []
    assert await docs.list("alpha", "helper") == []
    assert await docs.count("alpha", "other") == 1  # another agent's documents stay
    conn = open_vector_database(docs.path, ())
    try:  # no orphans: the passages and vectors went with their documents
        assert conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM vec_chunks_16").fetchone()[0] == 1
    finally:
        conn.close()


async def test_another_dimension_for_the_same_agent_is_refused(docs: Documents) -> None:
    await docs.add("alpha", "helper", corpus(), title="Sixteen", embed=FakeEmbedder(16))
    with pytest.raises(InvalidRequest, match="embedding model changed") as info:
        await docs.add("alpha", "helper", PLANTED, title="Eight", embed=FakeEmbedder(8))
    assert "8" in info.value.message and "16" in info.value.message and info.value.status == 400
    assert await docs.count("alpha", "helper") == 1
    with pytest.raises(InvalidRequest, match="embedding model changed"):
        await docs.search("alpha", "helper", bag_of_words(PLANTED, 8))
    eight = await docs.add("alpha", "other", PLANTED, title="Eight", embed=FakeEmbedder(8))  # another agent: fine
    assert (await docs.search("alpha", "other", bag_of_words(PLANTED, 8)))[0].document_id == eight["document_id"]
    await docs.delete_agent("alpha", "helper")
    await docs.add("alpha", "helper", PLANTED, title="Now eight", embed=FakeEmbedder(8))  # nothing left to clash


@pytest.mark.parametrize("text", ["", "   \n\n\t", "x" * 1001])
async def test_empty_or_over_long_text_is_refused_before_embedding(tmp_path: Path, text: str) -> None:
    store = Documents(tmp_path / "v.sqlite3", chunk_chars=100, overlap=10, max_document_chars=1000)
    await store.start()
    embed = FakeEmbedder()
    try:
        with pytest.raises(InvalidRequest) as info:
            await store.add("alpha", "helper", text, title=None, embed=embed)
        assert info.value.param == "text"
        assert embed.batches == [] and await store.count("alpha", "helper") == 0
        with pytest.raises(InvalidRequest) as bad_title:
            await store.add("alpha", "helper", "fine", title=" ", embed=embed)
        assert bad_title.value.param == "title"
    finally:
        await store.close()


@pytest.mark.parametrize(
    "answer",
    [
        [],  # too few vectors
        [[0.0] * DIM],  # a zero vector
        [[float("nan")] * DIM],
        [["a"] * DIM],
        [[]],
    ],
)
async def test_a_bad_embedding_answer_is_a_backend_error_and_stores_nothing(docs: Documents, answer: list) -> None:
    async def embed(texts: list[str]) -> list[list[float]]:
        return answer

    with pytest.raises(BackendError):
        await docs.add("alpha", "helper", PLANTED, title=None, embed=embed)
    assert await docs.count("alpha", "helper") == 0


async def test_search_refuses_a_bad_k(docs: Documents) -> None:
    for k in (0, 101):
        with pytest.raises(InvalidRequest) as info:
            await docs.search("alpha", "helper", bag_of_words(PLANTED), k=k)
        assert info.value.param == "k"


async def test_documents_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agents_vectors.sqlite3"
    first = Documents(path, chunk_chars=160, overlap=30)
    await first.start()
    added = await first.add("alpha", "helper", corpus(), title="Notes", embed=FakeEmbedder())
    await first.close()
    second = Documents(path, chunk_chars=160, overlap=30)
    await second.start()
    try:
        hits = await second.search("alpha", "helper", bag_of_words("secret launch code of project Zephyr"))
        assert hits[0].document_id == added["document_id"] and PLANTED in hits[0].text
    finally:
        await second.close()
