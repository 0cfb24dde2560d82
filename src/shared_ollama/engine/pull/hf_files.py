"""Which files of a Hugging Face GGUF repository make the model a name asks for.

- The quantisation is read from each GGUF's file name (``...-Q4_K_M.gguf``, ``model.q8_0.gguf``,
  ``Q4_K_M/...-00001-of-00002.gguf``). A tag asks for one (case-insensitive; missing: an error listing the ones
  there are). No tag (or ``latest``) asks for ``Q4_K_M``, else the closest there is in bits per weight (ties go
  to the larger), and the choice is said in a progress line.
- A split GGUF (``-00001-of-0000N.gguf``) is all of its parts, in order; it counts only when every part is there.
- A file whose name contains ``mmproj`` is a multimodal projector, never the model; with several, F16 is preferred,
  then BF16, Q8_0 and F32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_QUANT = "Q4_K_M"
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")
_QUANT = re.compile(r"^(?:I?Q\d+_[A-Z0-9_]+|TQ\d_\d|MXFP4(?:_MOE)?|BF16|F16|FP16|F32|FP32)$")
_BITS = {
    "F32": 32.0, "FP32": 32.0, "BF16": 16.0, "F16": 16.0, "FP16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56,
    "Q5_1": 6.0, "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5, "Q4_1": 5.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58,
    "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "MXFP4": 4.25, "MXFP4_MOE": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91,
    "IQ3_M": 3.66, "Q3_K_S": 3.44, "IQ3_S": 3.44, "IQ3_XS": 3.3, "IQ3_XXS": 3.06, "Q2_K": 2.63, "IQ2_M": 2.7,
    "IQ2_S": 2.5, "IQ2_XS": 2.31, "IQ2_XXS": 2.06, "TQ2_0": 2.06, "IQ1_M": 1.75, "TQ1_0": 1.69, "IQ1_S": 1.56,
}  # fmt: skip
"""Nominal bits per weight of llama.cpp's quantisation types: what "closest" measures."""
_PROJECTOR_PREFERENCE = ("F16", "BF16", "Q8_0", "F32")


class FileChoiceError(ValueError):
    """No usable GGUF in the repository, or not the quantisation asked for; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None
    """The LFS sha256 the hub states; None for a file kept in git (then ``blob_id`` is its git blob sha1)."""
    blob_id: str | None = None


@dataclass(frozen=True)
class Choice:
    quant: str
    parts: tuple[RemoteFile, ...]
    """The model's GGUF, or a split GGUF's parts in order."""
    projector: RemoteFile | None
    note: str
    """What was chosen and why, for a progress line."""


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def quant_of(path: str) -> str:
    """The quantisation in a GGUF's file name (upper case), or "" when it names none."""
    stem = _stem(path)
    split = _SPLIT.match(stem)
    if split:
        stem = split["stem"]
    tokens = [t.upper() for t in re.split(r"[-.]", stem)]
    return next((t for t in reversed(tokens) if _QUANT.match(t)), "")


def bits(quant: str) -> float | None:
    """Bits per weight of a quantisation; unknown variants of a known family count as their family."""
    if quant in _BITS:
        return _BITS[quant]
    family = re.match(r"^(I?Q)(\d+)_", quant)
    return float(family[2]) + 0.5 if family else None


def _is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def _is_projector(path: str) -> bool:
    return "mmproj" in path.rsplit("/", 1)[-1].lower()


def model_groups(files: list[RemoteFile]) -> dict[str, tuple[RemoteFile, ...]]:
    """Quantisation -> the model's file(s); a split counts when all its parts are listed; first file wins a tie."""
    groups: dict[str, tuple[RemoteFile, ...]] = {}
    splits: dict[tuple[str, int], dict[int, RemoteFile]] = {}
    for file in sorted(files, key=lambda f: f.path):
        if not _is_gguf(file.path) or _is_projector(file.path):
            continue
        split = _SPLIT.match(_stem(file.path))
        if split:
            prefix = file.path[: -len(".gguf")].rsplit("-", 3)[0]
            splits.setdefault((prefix, int(split["count"])), {})[int(split["index"])] = file
        else:
            groups.setdefault(quant_of(file.path), (file,))
    for (_, count), parts in sorted(splits.items()):
        if sorted(parts) == list(range(1, count + 1)):
            groups.setdefault(quant_of(parts[1].path), tuple(parts[i] for i in range(1, count + 1)))
    return groups


def projector_of(files: list[RemoteFile]) -> RemoteFile | None:
    projectors = sorted((f for f in files if _is_gguf(f.path) and _is_projector(f.path)), key=lambda f: f.path)
    for quant in _PROJECTOR_PREFERENCE:
        found = next((f for f in projectors if quant_of(f.path) == quant), None)
        if found is not None:
            return found
    return projectors[0] if projectors else None


def closest(available: list[str], wanted: str) -> str:
    target = bits(wanted) or 0.0

    def distance(quant: str) -> tuple[float, float, str]:
        have = bits(quant)
        return (abs(have - target), -have, quant) if have is not None else (float("inf"), 0.0, quant)

    return min(available, key=distance)


def choose(files: list[RemoteFile], wanted: str | None, repo: str) -> Choice:
    """The files to pull for ``wanted`` (a tag, or None for the default) from a repository's listing."""
    groups = model_groups(files)
    if not groups:
        raise FileChoiceError(f"model '{repo}' has no GGUF file the embedded engine can load (pull model manifest: "
                              "file does not exist)", 404)  # fmt: skip
    listed = ", ".join(sorted(q or "(unnamed)" for q in groups))
    projector = projector_of(files)
    if wanted is not None:
        quant = wanted.upper()
        if quant not in groups:
            raise FileChoiceError(f"quantization '{wanted}' not found in '{repo}' (it has: {listed})", 404)
        note = f"using {groups[quant][0].path} ({quant})"
    elif DEFAULT_QUANT in groups:
        quant, note = DEFAULT_QUANT, f"using {groups[DEFAULT_QUANT][0].path} ({DEFAULT_QUANT}, the default)"
    else:
        quant = closest(list(groups), DEFAULT_QUANT)
        note = f"using {groups[quant][0].path} ({quant or 'unnamed quantization'}: the closest to {DEFAULT_QUANT}, "
        note += f"which '{repo}' does not have; it has {listed})"
    parts = groups[quant]
    if len(parts) > 1:
        note += f"; a split GGUF in {len(parts)} parts"
    if projector is not None:
        note += f"; projector {projector.path}"
    return Choice(quant, parts, projector, note)
