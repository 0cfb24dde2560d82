"""The search_documents tool over a fake search: compact passages, most similar first, k passed through."""

from __future__ import annotations

from shared_ollama.service.agents.tooling import Hit, ToolContext
from shared_ollama.service.agents.tools.documents_tool import SPEC, search_documents


class FakeSearch:
    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, query: str, k: int) -> list[Hit]:
        self.calls.append((query, k))
        return self.hits


HITS = [
    Hit("d1", "Handbook", "The office\n  opens at   9.", 0.41),
    Hit("d2", "Release notes", "Version 2 ships in May.", 0.873),
    Hit("d3", "", "untitled passage", 0.6),
]


async def test_passages_come_most_similar_first_with_titles_and_scores() -> None:
    search = FakeSearch(HITS)
    outcome = await search_documents({"query": " when do we ship? "}, ToolContext("t", "a", search=search))
    assert search.calls == [("when do we ship?", 4)]
    assert outcome.error is False
    assert outcome.content == (
        "[1] Release notes (score 0.87)\nVersion 2 ships in May.\n\n"
        "[2] d3 (score 0.60)\nuntitled passage\n\n"
        "[3] Handbook (score 0.41)\nThe office opens at 9."
    )


async def test_k_is_passed_and_bounds_the_passages() -> None:
    search = FakeSearch(HITS)
    outcome = await search_documents({"query": "ship", "k": 1}, ToolContext("t", "a", search=search))
    assert search.calls == [("ship", 1)]
    assert outcome.content == "[1] Release notes (score 0.87)\nVersion 2 ships in May."


async def test_no_match_and_no_documents_are_said_plainly() -> None:
    empty = await search_documents({"query": "x"}, ToolContext("t", "a", search=FakeSearch([])))
    assert (empty.error, empty.content) == (False, "No passage matches the query.")
    none = await search_documents({"query": "x"}, ToolContext("t", "a"))
    assert none.error is True
    assert "no documents" in none.content


def test_the_schema_bounds_k() -> None:
    k = SPEC.parameters["properties"]["k"]
    assert (k["minimum"], k["maximum"], SPEC.parameters["required"]) == (1, 10, ["query"])
