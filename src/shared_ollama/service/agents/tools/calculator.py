"""The ``calculator`` tool: arithmetic read from Python's AST (no ``eval``), a short list of functions, every
size bounded so that no expression can take long or use much memory."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from shared_ollama.service.agents.tooling import ToolOutcome, ToolSpec

MAX_LENGTH = 500
"""Longest expression read, in characters."""
MAX_NODES = 200
"""Most syntax-tree nodes an expression may have."""
MAX_EXPONENT = 1000
"""Largest absolute exponent of ``**``."""
MAX_MAGNITUDE = 1e300
"""Largest absolute value of any intermediate result."""
MAX_ROUND_DIGITS = 15

Number = int | float

SPEC = ToolSpec(
    name="calculator",
    description=(
        "Evaluate an arithmetic expression exactly and return the number. Use it for any calculation. "
        "Supports numbers, + - * / // % ** (power), parentheses and the functions sqrt, abs, round, min, max, "
        "floor, ceil, log (natural, or log(x, base)), exp, sin, cos, tan (radians) and the constants pi and e."
    ),
    parameters={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The expression, e.g. (2 + 3) * 4 or round(100 / 7, 2)",
                # The arithmetic alphabet: with it, the engine's grammar keeps a small model from writing braces or
                # quotes into the expression (the length is checked when the tool runs).
                "pattern": "^[0-9a-z(-][0-9a-z. +*/%(),-]*$",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
)


class CalculationError(Exception):
    """The expression is refused or cannot be computed; the message says why, for the model."""


def _round(value: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(value)
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise CalculationError(f"round's digits must be a whole number between -{MAX_ROUND_DIGITS} and 15")
    return round(value, digits)


def _log(value: Number, base: Number | None = None) -> float:
    return math.log(value) if base is None else math.log(value, base)


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 2, 20),
    "max": (max, 2, 20),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "log": (_log, 1, 2),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}
"""name -> (function, fewest arguments, most arguments)."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _checked(value: object) -> Number:
    if isinstance(value, complex):
        raise CalculationError("the result is not a real number")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CalculationError("the result is not a number")
    if isinstance(value, float) and math.isnan(value):
        raise CalculationError("the result is not a number (NaN)")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculationError(f"the result is too large (over {MAX_MAGNITUDE:g})")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculationError(f"exponent {exponent:g} is too large (at most {MAX_EXPONENT})")
    if base != 0 and abs(base) != 1 and exponent > 0 and exponent * math.log10(abs(base)) > 300:
        raise CalculationError(f"the result is too large (over {MAX_MAGNITUDE:g})")
    return _checked(operator.pow(base, exponent))


def _describe(node: ast.AST) -> str:
    names = {
        ast.Lambda: "lambda",
        ast.Subscript: "subscripts",
        ast.Attribute: "attribute access",
        ast.ListComp: "comprehensions",
        ast.SetComp: "comprehensions",
        ast.DictComp: "comprehensions",
        ast.GeneratorExp: "comprehensions",
        ast.Compare: "comparisons",
        ast.BoolOp: "'and'/'or'",
        ast.IfExp: "'if' expressions",
        ast.UnaryOp: "'~' and 'not'",
    }
    return names.get(type(node), type(node).__name__)


class _Evaluator:
    def evaluate(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.evaluate(node.body)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CalculationError(f"{value!r} is not a number")
            return _checked(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.evaluate(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            hint = " (it is a function: call it with parentheses)" if node.id in FUNCTIONS else ""
            raise CalculationError(f"unknown name '{node.id}'{hint}; only pi and e are defined")
        if isinstance(node, ast.Call):
            return self._call(node)
        raise CalculationError(f"{_describe(node)} not allowed: only arithmetic")

    def _binary(self, node: ast.BinOp) -> Number:
        if isinstance(node.op, ast.BitXor):
            raise CalculationError("'^' is not a power here: use ** (e.g. 2 ** 10)")
        left, right = self.evaluate(node.left), self.evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        function = BINARY.get(type(node.op))
        if function is None:
            raise CalculationError(f"operator {type(node.op).__name__} not allowed: use + - * / // % **")
        return _checked(function(left, right))

    def _call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name):
            raise CalculationError("only the listed functions can be called, by name")
        name = node.func.id
        if name not in FUNCTIONS:
            raise CalculationError(f"unknown function '{name}'; available: {', '.join(FUNCTIONS)}")
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise CalculationError(f"{name} takes plain arguments only")
        function, fewest, most = FUNCTIONS[name]
        if not fewest <= len(node.args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise CalculationError(f"{name} takes {wanted} argument(s), not {len(node.args)}")
        return _checked(function(*(self.evaluate(arg) for arg in node.args)))


def evaluate(expression: str) -> Number:
    """The value of ``expression``, or ``CalculationError`` saying why not."""
    text = expression.strip()
    if not text:
        raise CalculationError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"the expression is too long ({len(text)} characters, at most {MAX_LENGTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalculationError(f"not an arithmetic expression ({getattr(exc, 'msg', exc)})") from exc
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise CalculationError(f"the expression is too complex ({count} parts, at most {MAX_NODES})")
    try:
        return _Evaluator().evaluate(tree)
    except ZeroDivisionError as exc:
        raise CalculationError("division by zero") from exc
    except OverflowError as exc:
        raise CalculationError(f"the result is too large (over {MAX_MAGNITUDE:g})") from exc
    except (ValueError, TypeError) as exc:
        raise CalculationError(f"cannot compute: {exc}") from exc


def format_number(value: Number) -> str:
    """Integers in full, floats with up to 12 significant digits (``5.0`` prints as ``5``)."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".12g")


def calculate(arguments: dict[str, Any]) -> ToolOutcome:
    expression = str(arguments["expression"])
    try:
        return ToolOutcome(format_number(evaluate(expression)))
    except CalculationError as exc:
        return ToolOutcome(f"calculator: {exc}", error=True)
