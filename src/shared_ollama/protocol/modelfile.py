"""Ollama Modelfiles: parse the text into Ollama's structured ``/api/create`` body, and write it back.

Instructions (case-insensitive): ``FROM``, ``PARAMETER``, ``TEMPLATE``, ``SYSTEM``, ``ADAPTER``, ``LICENSE``,
``MESSAGE``. A line starting with ``#`` is a comment. A value is bare (the rest of the line, trimmed), quoted
(``"..."``, where ``\\"`` and ``\\\\`` are escapes, may span lines) or triple-quoted (``\"\"\"...\"\"\"``, verbatim,
may span lines). ``PARAMETER`` values are typed by the parameter; repeated ``stop`` lines make a list, as
repeated ``LICENSE`` lines do. Errors name the line: ``Modelfile line 4: unknown parameter 'tempreature'``.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared_ollama.errors import InvalidRequest

JsonDict = dict[str, Any]
INT_PARAMETERS = frozenset(
    {
        "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx", "num_batch",
        "num_gpu", "main_gpu", "num_thread", "num_gqa",
    }
)  # fmt: skip
FLOAT_PARAMETERS = frozenset(
    {
        "temperature", "top_p", "min_p", "typical_p", "tfs_z", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "mirostat_tau", "mirostat_eta", "rope_frequency_base", "rope_frequency_scale",
    }
)  # fmt: skip
BOOL_PARAMETERS = frozenset(
    {"penalize_newline", "use_mmap", "use_mlock", "numa", "low_vram", "f16_kv", "logits_all", "vocab_only"}
)
LIST_PARAMETERS = frozenset({"stop"})
PARAMETERS = INT_PARAMETERS | FLOAT_PARAMETERS | BOOL_PARAMETERS | LIST_PARAMETERS
ROLES = ("system", "user", "assistant")
INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_TRIPLE = '"""'


class ModelfileError(InvalidRequest):
    """A Modelfile that cannot be used; the message names the line (a 400 for the client)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"Modelfile line {line}: {message}", param="modelfile")
        self.line = line
        self.detail = message


def coerce_parameter(name: str, value: Any) -> Any:
    """``value`` (Modelfile text or a JSON value) as parameter ``name``'s type; ValueError explains a refusal.

    Integers, floats and booleans become Python's; ``stop`` becomes a list of strings.
    """
    if name not in PARAMETERS:
        raise ValueError(f"unknown parameter '{name}'")
    if name in LIST_PARAMETERS:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(f"parameter '{name}' must be a string or a list of strings")
    if isinstance(value, str):
        text = value.strip()
        try:
            if name in INT_PARAMETERS:
                return int(text)
            if name in FLOAT_PARAMETERS:
                return float(text)
        except ValueError:
            raise ValueError(f"parameter '{name}' must be {_kind(name)}, got {value!r}") from None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"parameter '{name}' must be {_kind(name)}, got {value!r}")
    if name in BOOL_PARAMETERS and isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name in FLOAT_PARAMETERS:
            return float(value)
        if name in INT_PARAMETERS and float(value).is_integer():
            return int(value)
    raise ValueError(f"parameter '{name}' must be {_kind(name)}, got {value!r}")


def _kind(name: str) -> str:
    return "an integer" if name in INT_PARAMETERS else "a number" if name in FLOAT_PARAMETERS else "true or false"


@dataclass
class Modelfile:
    from_: str
    system: str | None = None
    template: str | None = None
    license: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapter_line: int = field(default=0, repr=False, compare=False)

    def to_create_request(
        self, name: str, *, files: dict[str, str] | None = None, adapters: dict[str, str] | None = None
    ) -> JsonDict:
        """Ollama's structured ``/api/create`` body (0.5.5+) for a model called ``name``.

        ``files`` and ``adapters`` (file name -> digest) are the blobs of a ``FROM`` file and of the ``ADAPTER``
        files, uploaded first: with ``files`` the body has no ``from``; ``ADAPTER`` lines need ``adapters``.
        """
        if self.adapters and adapters is None:
            raise ModelfileError(
                self.adapter_line, "ADAPTER needs its file uploaded to the server as a blob first (use ollama create)"
            )
        body: JsonDict = {"model": name, **({"files": dict(files)} if files is not None else {"from": self.from_})}
        if adapters:
            body["adapters"] = dict(adapters)
        if self.system is not None:
            body["system"] = self.system
        if self.template is not None:
            body["template"] = self.template
        if self.license:
            body["license"] = list(self.license)
        if self.parameters:
            body["parameters"] = {k: list(v) if isinstance(v, list) else v for k, v in self.parameters.items()}
        if self.messages:
            body["messages"] = [dict(m) for m in self.messages]
        return body

    def render(self) -> str:
        return render_modelfile(
            self.from_,
            system=self.system,
            template=self.template,
            parameters=self.parameters,
            messages=self.messages,
            license=self.license,
            adapters=self.adapters,
        )


class _Lines:
    """The Modelfile's lines with a cursor; values may continue onto the following lines."""

    def __init__(self, text: str) -> None:
        self.lines = text.replace("\r\n", "\n").split("\n")
        self.index = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> tuple[int, str]:
        if self.index >= len(self.lines):
            raise StopIteration
        self.index += 1
        return self.index, self.lines[self.index - 1]

    def value(self, rest: str, line: int, what: str) -> str:
        """The value starting at ``rest`` (bare, quoted or triple-quoted), consuming continuation lines."""
        rest = rest.lstrip() if rest.lstrip().startswith('"') else rest.strip()
        if rest.startswith(_TRIPLE):
            return self._triple(rest[3:], line)
        if rest.startswith('"'):
            return self._quoted(rest[1:], line)
        if not rest:
            raise ModelfileError(line, f"{what} needs a value")
        return rest

    def _after_close(self, trailing: str, line: int) -> None:
        if trailing.strip():
            raise ModelfileError(self.index, f"unexpected text after the closing quote: {trailing.strip()!r}")

    def _triple(self, text: str, line: int) -> str:
        parts: list[str] = []
        while (end := text.find(_TRIPLE)) < 0:
            parts.append(text)
            if self.index >= len(self.lines):
                raise ModelfileError(line, 'unterminated """ (no closing """ before the end of the Modelfile)')
            text = self.lines[self.index]
            self.index += 1
        parts.append(text[:end])
        self._after_close(text[end + 3 :], line)
        return "\n".join(parts)

    def _quoted(self, text: str, line: int) -> str:
        out: list[str] = []
        while True:
            i = 0
            while i < len(text):
                char = text[i]
                if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                    out.append(text[i + 1])
                    i += 2
                    continue
                if char == '"':
                    self._after_close(text[i + 1 :], line)
                    return "".join(out)
                out.append(char)
                i += 1
            if self.index >= len(self.lines):
                raise ModelfileError(line, 'unterminated " (no closing quote before the end of the Modelfile)')
            out.append("\n")
            text = self.lines[self.index]
            self.index += 1


def _split(text: str) -> tuple[str, str]:
    """(first word, the rest as is) of ``text`` after its leading whitespace."""
    text = text.lstrip()
    end = next((i for i, char in enumerate(text) if char.isspace()), len(text))
    return text[:end], text[end:]


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile ``text``; raises ModelfileError naming the offending line."""
    lines = _Lines(text)
    found: JsonDict = {"license": [], "adapters": [], "parameters": {}, "messages": []}
    adapter_line = 0
    for number, raw in lines:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, rest = _split(raw)
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            raise ModelfileError(number, f"unknown instruction '{word}'")
        if instruction == "PARAMETER":
            name, value_text = _split(rest)
            name = name.lower()
            if not name:
                raise ModelfileError(number, "PARAMETER needs a name and a value")
            if name not in PARAMETERS:
                raise ModelfileError(number, f"unknown parameter '{name}'")
            value = lines.value(value_text, number, f"PARAMETER {name}")
            try:
                typed = coerce_parameter(name, value)
            except ValueError as exc:
                raise ModelfileError(number, str(exc)) from None
            if name in LIST_PARAMETERS:
                found["parameters"].setdefault(name, []).extend(typed)
            else:
                found["parameters"][name] = typed
        elif instruction == "MESSAGE":
            role, content_text = _split(rest)
            if role.lower() not in ROLES:
                raise ModelfileError(number, f"MESSAGE role must be one of system, user, assistant; got '{role}'")
            content = lines.value(content_text, number, "MESSAGE")
            found["messages"].append({"role": role.lower(), "content": content})
        else:
            value = lines.value(rest, number, instruction)
            if instruction == "LICENSE":
                found["license"].append(value)
            elif instruction == "ADAPTER":
                found["adapters"].append(value)
                adapter_line = adapter_line or number
            else:  # FROM, SYSTEM, TEMPLATE: the last one wins, as in Ollama
                found["from_" if instruction == "FROM" else instruction.lower()] = value
    if "from_" not in found:
        raise ModelfileError(1, "no FROM instruction (a Modelfile needs FROM <model>)")
    return Modelfile(**found, adapter_line=adapter_line)


def is_file_reference(value: str) -> bool:
    """Whether a ``FROM`` value names a file rather than a model: a path (``/``, ``./``, ``../``, ``~``) or a
    ``.gguf`` file name. ``ADAPTER`` values always name files."""
    text = value.strip()
    return text.startswith(("/", "./", "../", "~")) or text.lower().endswith(".gguf")


def _quote(value: str) -> str:
    """``value`` as the Modelfile reads it back: bare when unambiguous, else triple-quoted or quoted."""
    if value and value == value.strip() and "\n" not in value and not value.startswith('"'):
        return value
    if _TRIPLE not in value and not value.endswith('"'):
        return f"{_TRIPLE}{value}{_TRIPLE}"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _quote(value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value))


def render_modelfile(
    from_: str,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    *,
    template: str | None = None,
    messages: list[dict[str, str]] | None = None,
    license: str | list[str] | None = None,
    adapters: list[str] | None = None,
    comment: str | None = None,
) -> str:
    """Modelfile text that ``parse_modelfile`` reads back to the same values (string values are written as is)."""
    lines = [f"# {line}".rstrip() for line in comment.split("\n")] if comment else []
    lines.append(f"FROM {_quote(from_)}")
    lines += [f"ADAPTER {_quote(a)}" for a in adapters or []]
    if template is not None:
        lines.append(f"TEMPLATE {_quote(template)}")
    if system is not None:
        lines.append(f"SYSTEM {_quote(system)}")
    for name, value in (parameters or {}).items():
        for item in value if isinstance(value, list | tuple) else [value]:
            lines.append(f"PARAMETER {name} {_parameter_text(item)}")
    for message in messages or []:
        lines.append(f"MESSAGE {message.get('role', '')} {_quote(str(message.get('content') or ''))}")
    lines += [f"LICENSE {_quote(text)}" for text in ([license] if isinstance(license, str) else license or [])]
    return "\n".join(lines) + "\n"
