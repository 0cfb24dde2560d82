"""Prefix reuse under sharing (issue 17, target 2): long conversations from several tenants interleaved over the
engine's slots, through the gateway, in one run.

    .venv/bin/python -m bench.prefix           # about 3 minutes: 8 conversations x 6 turns, ~2,000 tokens at turn 6
    .venv/bin/python -m bench.prefix --quick   # about a minute: 8 conversations x 6 turns, ~350 tokens

A gateway (auth off, ``X-Shared-Ollama-Cache: off``) with its own embedded engine, smollm2:135m, 4 slots. Eight
conversations from four tenants (two each); every turn adds ~300 tokens of text no other conversation has, the
assistant answers 16 tokens. Turns go round-robin over the conversations, 4 requests at once, so each conversation
finds its slot taken by another one between its turns. The last turn goes one request at a time (see
``converse``), each followed at once by the same prompt "cold": the same messages under a first line of their own,
so nothing before them was ever seen (the two figures of a pair are taken moments apart on a shared machine).

Printed per conversation: the last turn's time to first token against the cold one (target <= 0.35), and the engine's
own account of the last turn: the prompt's tokens (``prompt_eval_count``) against those it evaluated (the rest it
reused: ``prompt_eval_cached_count``), and the ratio of the engine's own prompt times (``prompt_eval_duration``).
Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tests.support.processes import free_port, spawn, stop, wait_http_ok

from bench.soak import embedded_gateway

MODEL = "smollm2:135m"
SLOTS = 4
TENANTS = ("web", "batch", "agent", "notebook")
CONVERSATIONS = 8
AT_ONCE = 4
NUM_PREDICT = 16
TARGET = 0.35
_NOTES = (
    "river stone lamp harbor violet engine garden copper window thunder maple orbit candle silver meadow "
    "falcon lantern quartz pepper velvet canyon ember glacier willow compass marble saffron tundra "
    "beacon cobalt prairie harpoon juniper nectar obsidian pylon quiver rampart sonnet trellis umber "
    "vortex wicker yarrow zenith anchor bramble cinder dune estuary fjord gravel hollow inlet jasper "
    "kiln lagoon mesa nettle oasis pebble quarry reef"
)
WORDS = _NOTES.split()
Row = tuple[str, str, str, str]


@dataclass
class Answer:
    ttft: float
    prompt_tokens: int
    cached_tokens: int
    prompt_seconds: float
    """The engine's own time evaluating the prompt (``prompt_eval_duration``)."""
    text: str


@dataclass
class Conversation:
    index: int
    tenant: str
    rng: random.Random
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: list[dict[str, str]] = field(default_factory=list)
    """The messages of the turn sent last."""
    last: Answer | None = None
    cold: Answer | None = None

    @classmethod
    def new(cls, index: int) -> Conversation:
        tenant = TENANTS[index % len(TENANTS)]
        first = {"role": "system", "content": f"Conversation {index} of tenant {tenant}. Answer in one sentence."}
        return cls(index, tenant, random.Random(index), [first])

    def ask(self, turn: int, words: int) -> list[dict[str, str]]:
        text = " ".join(self.rng.choice(WORDS) for _ in range(words))
        self.messages.append({"role": "user", "content": f"Turn {turn}. Summarise these notes: {text}."})
        self.prompt = list(self.messages)
        return self.prompt

    def cold_messages(self) -> list[dict[str, str]]:
        """The last turn's prompt under a first line nothing has seen (the same length, give or take a token)."""
        unique = {"role": "system", "content": f"Cold check {secrets.token_hex(4)}. Answer in one sentence."}
        return [unique, *self.prompt[1:]]


async def chat(
    session: aiohttp.ClientSession, url: str, tenant: str, messages: list[dict[str, str]], predict: int = NUM_PREDICT
) -> Answer:
    """One streamed ``/api/chat`` through the gateway: time to the first text, the final line's counts."""
    body = {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "options": {"num_predict": predict, "temperature": 0, "seed": 1},
    }
    headers = {"Content-Type": "application/json", "X-Shared-Ollama-Project": tenant, "X-Shared-Ollama-Cache": "off"}
    started = time.perf_counter()
    ttft = 0.0
    parts: list[str] = []
    async with session.post(url + "/api/chat", data=orjson.dumps(body), headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        async for line in resp.content:
            if not line.strip():
                continue
            chunk: dict[str, Any] = orjson.loads(line)
            if chunk.get("error"):
                raise RuntimeError(str(chunk["error"]))
            text = (chunk.get("message") or {}).get("content") or ""
            if text and not ttft:
                ttft = time.perf_counter() - started
            parts.append(text)
            if chunk.get("done"):
                prompt = int(chunk.get("prompt_eval_count") or 0)
                cached = int(chunk.get("prompt_eval_cached_count") or 0)
                seconds = int(chunk.get("prompt_eval_duration") or 0) / 1e9
                return Answer(ttft or time.perf_counter() - started, prompt, cached, seconds, "".join(parts))
    raise RuntimeError("stream ended without its final line")


async def converse(url: str, turns: int, words: int) -> list[Conversation]:
    conversations = [Conversation.new(i) for i in range(CONVERSATIONS)]
    gate = asyncio.Semaphore(AT_ONCE)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await chat(session, url, "warm-up", [{"role": "user", "content": "Hello."}])  # loads the model

        async def turn(conv: Conversation, number: int, predict: int = NUM_PREDICT) -> None:
            async with gate:
                conv.last = await chat(session, url, conv.tenant, conv.ask(number, words), predict)
            conv.messages.append({"role": "assistant", "content": conv.last.text})

        async def cold(conv: Conversation) -> None:
            async with gate:
                conv.cold = await chat(session, url, conv.tenant, conv.cold_messages(), 1)

        for number in range(1, turns):
            started = time.perf_counter()
            await asyncio.gather(*(turn(conv, number) for conv in conversations))
            tokens = sum(c.last.prompt_tokens for c in conversations if c.last) // CONVERSATIONS
            print(f"  turn {number}: {time.perf_counter() - started:5.1f} s, ~{tokens} prompt tokens per conversation")
        # The last turn one request at a time, each followed at once by the same prompt cold (alone too): several
        # at once, llama.cpp shares each batch (n_batch tokens, filled slot by slot) among the prompts, so a request's
        # time to first token would depend on what it is batched with and its place in line, not on its own prompt.
        # Its slot was still taken by another conversation since its previous turn; one token is enough to time.
        started = time.perf_counter()
        for conv in conversations:
            await turn(conv, turns, 1)
            await cold(conv)
        print(f"  turn {turns} and cold, one at a time: {time.perf_counter() - started:5.1f} s")
    return conversations


def rows_for(conversations: list[Conversation]) -> list[Row]:
    rows: list[Row] = []
    ratios: list[float] = []
    for conv in conversations:
        last, cold = conv.last, conv.cold
        if last is None or cold is None:
            continue
        ratio = last.ttft / cold.ttft if cold.ttft else float("nan")
        ratios.append(ratio)
        engine = last.prompt_seconds / cold.prompt_seconds if cold.prompt_seconds else float("nan")
        met = "met" if ratio <= TARGET else "missed"
        verdict = f"ratio {ratio:.2f} (<= {TARGET}) {met}; engine's prompt eval {engine:.2f}"
        name = f"conv {conv.index} ({conv.tenant}): last-turn TTFT vs cold"
        rows.append((name, f"{cold.ttft * 1000:.0f} ms", f"{last.ttft * 1000:.0f} ms", verdict))
    for conv in conversations:
        last, cold = conv.last, conv.cold
        if last is None or cold is None:
            continue
        evaluated = last.prompt_tokens - last.cached_tokens
        cold_evaluated = cold.prompt_tokens - cold.cached_tokens
        rows.append(
            (
                f"conv {conv.index}: last-turn prompt tokens, evaluated",
                f"{last.prompt_tokens} total",
                f"{evaluated} evaluated",
                f"{last.cached_tokens} reused (cold: {cold_evaluated} of {cold.prompt_tokens} evaluated)",
            )
        )
    met = sum(1 for ratio in ratios if ratio <= TARGET)
    worst = max(ratios, default=float("nan"))
    rows.append(("conversations meeting the TTFT target", "", f"{met} of {len(ratios)}", f"worst ratio {worst:.2f}"))
    return rows


def print_rows(title: str, rows: list[Row]) -> None:
    print(title)
    print(f"{'measure':<48} {'cold/total':>12} {'ours':>14}  target")
    for name, ref, ours, target in rows:
        print(f"{name:<48} {ref:>12} {ours:>14}  {target}")


def run(quick: bool = False) -> list[Row]:
    turns, words = (6, 25) if quick else (6, 220)
    with tempfile.TemporaryDirectory(prefix="prefix-") as tmp:
        data = Path(tmp)
        env = embedded_gateway(data, slots=SLOTS, cache=True)
        port = free_port()
        proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env, data / "gateway.log")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/api/v1/health", proc)
            print(f"prefix: {CONVERSATIONS} conversations, {len(TENANTS)} tenants, {SLOTS} slots, {turns} turns")
            conversations = asyncio.run(asyncio.wait_for(converse(url, turns, words), timeout=900))
        finally:
            stop(proc)
    rows = rows_for(conversations)
    print_rows(f"prefix reuse: turn {turns} against the same prompt cold, each alone", rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="turns of ~40 tokens, ~350 at turn 6 (about a minute)")
    quick = parser.parse_args().quick
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the gateway
    run(quick)


if __name__ == "__main__":
    main()
