"""Tool calling for models without a tool template: what a ``grammar``-mode step sends and how its answer reads.

A decision step asks for one JSON object, ``{"name": <a tool's name or "answer">, "arguments": {...}}``, through
the native ``format`` (a JSON schema the engine's grammar enforces, so even a 135M model writes a valid call). The
pseudo-tool ``answer`` means "the results are enough": the final answer is then a step of its own, in free text,
with the results of the run's tool calls given as facts in the system message (small models copy a fact from the
system message far more reliably than they read a tool-result turn). The conversation itself stays in native
form (assistant ``tool_calls``, ``tool`` messages): the rendering below is only what the model is shown.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared_ollama.service.agents.tooling import ToolSpec

JsonDict = dict[str, Any]

ANSWER = "answer"
"""The pseudo-tool a decision names when the model is ready to answer."""


def decision_schema(tools: list[ToolSpec], *, may_answer: bool) -> JsonDict:
    """The ``format`` of a decision: one of the tools with its arguments, or (``may_answer``) ``answer``."""

    def one(name: str, parameters: JsonDict) -> JsonDict:
        return {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": [name]}, "arguments": parameters},
            "required": ["name", "arguments"],
        }

    options = [one(t.name, t.schema() or {"type": "object", "properties": {}}) for t in tools]
    if may_answer:
        options.append(one(ANSWER, {"type": "object", "properties": {}}))
    return options[0] if len(options) == 1 else {"anyOf": options}


def _facts(conversation: list[JsonDict]) -> list[str]:
    """The tool calls since the last user turn, each with its result: ``name(arguments) = result``."""
    start = max((i for i, m in enumerate(conversation) if m.get("role") == "user"), default=-1) + 1
    calls: list[tuple[str, str]] = []
    results: list[str] = []
    for message in conversation[start:]:
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            calls.append((str(fn.get("name")), orjson.dumps(fn.get("arguments") or {}).decode()))
        if message.get("role") == "tool":
            results.append(str(message.get("content") or ""))
    return [f"- {name}({args}) = {result}" for (name, args), result in zip(calls, results, strict=False)]


def _turns(conversation: list[JsonDict]) -> list[JsonDict]:
    """The text turns (user, assistant answers); tool calls and results are shown as facts instead."""
    out = []
    for message in conversation:
        if message.get("role") in ("user", "assistant") and not message.get("tool_calls"):
            out.append({"role": message["role"], "content": str(message.get("content") or "")})
    return out


def _system(system: str | None, conversation: list[JsonDict], *parts: str) -> JsonDict:
    """One system message: the agent's, the run's own system turns, then ``parts``."""
    own = [str(m.get("content") or "") for m in conversation if m.get("role") == "system"]
    text = "\n\n".join(p for p in (system or "", *own, *parts) if p)
    return {"role": "system", "content": text}


def decision_messages(system: str | None, tools: list[ToolSpec], conversation: list[JsonDict]) -> list[JsonDict]:
    """What a decision step shows the model: the tools, how to call one, the results so far, the turns."""
    listed = orjson.dumps(
        [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools]
    ).decode()
    how = (
        f"You can call these tools: {listed}\n"
        'To call a tool, reply with a JSON object {"name": <the tool\'s name>, "arguments": {...}}. '
        f'When the results below are enough to answer, reply {{"name": "{ANSWER}", "arguments": {{}}}}.'
    )
    facts = _facts(conversation)
    known = "Results of the tools called so far:\n" + "\n".join(facts) if facts else ""
    return [_system(system, conversation, how, known), *_turns(conversation)]


def answer_messages(system: str | None, conversation: list[JsonDict]) -> list[JsonDict]:
    """What the final (free text) step shows the model: the facts the tools gave, then the turns."""
    facts = _facts(conversation)
    known = "Facts from tools:\n" + "\n".join(facts) + "\nAnswer using these facts." if facts else ""
    return [_system(system, conversation, known), *_turns(conversation)]


def read_decision(content: str, tools: list[ToolSpec]) -> tuple[str, JsonDict] | None:
    """``(name, arguments)`` from a decision's JSON; None when it is not one (cut short, say): the run answers."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("arguments", {}), dict):
        return None
    name = value.get("name")
    if not isinstance(name, str) or name == ANSWER or name not in {t.name for t in tools}:
        return None
    return str(name), dict(value.get("arguments") or {})
