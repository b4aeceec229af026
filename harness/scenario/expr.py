"""The ``assert`` step's expressions: Python expression syntax cut down to literals, names,
comparisons, boolean operators, arithmetic on numbers, subscripts and the functions
``len``, ``min``, ``max``, ``all``, ``any``. ``compile_expression`` parses and checks an
expression against that whitelist (at collection); ``Expression.evaluate`` walks the tree
over a namespace of saved values and transcript aggregates. Nothing is ever given to
``eval``."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

MAX_LENGTH = 1000
FUNCTIONS: dict[str, Callable[..., Any]] = {"len": len, "min": min, "max": max, "all": all,
                                            "any": any}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos}
_ALLOWED = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Compare, ast.BoolOp,
            ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Subscript, ast.Call, ast.List,
            ast.Tuple, *_COMPARE, *_ARITHMETIC, *_UNARY)


class ExpressionError(ValueError):
    """An expression outside the whitelist, or one that cannot be evaluated."""


@dataclass(frozen=True)
class Expression:
    source: str
    tree: ast.Expression

    @property
    def names(self) -> tuple[str, ...]:
        """The names the expression reads (not the functions it calls), in order."""
        called = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        seen: dict[str, None] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and id(node) not in called:
                seen[node.id] = None
        return tuple(seen)

    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """The expression's value over ``namespace``; raises ExpressionError."""
        try:
            return _eval(self.tree.body, namespace)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(f"{self.source!r} is nested too deeply") from None
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError,
                OverflowError) as exc:
            raise ExpressionError(f"{self.source!r}: {type(exc).__name__}: {exc}") from None


def compile_expression(source: str) -> Expression:
    """Parse ``source`` and check every node against the whitelist; raises ExpressionError
    saying what is not allowed."""
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("not an expression this evaluator takes") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{type(node).__name__} is not allowed (only literals, names, "
                                  "comparisons, and/or/not, arithmetic, subscripts and "
                                  f"{', '.join(FUNCTIONS)})")
        if isinstance(node, ast.Call) and not (
                isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                and not node.keywords):
            raise ExpressionError(f"only {', '.join(FUNCTIONS)} may be called, with "
                                  "positional arguments")
        if isinstance(node, ast.Constant) and not isinstance(
                node.value, int | float | str | bool | type(None)):
            raise ExpressionError(f"the constant {node.value!r} is not allowed")
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            raise ExpressionError("slices are not allowed; index one element")
    return Expression(source, tree)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"arithmetic takes numbers, not {type(value).__name__} "
                              f"{value!r}")
    return value


def _eval(node: ast.expr, ns: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in ns:
            raise ExpressionError(f"unknown name {node.id!r} (known: {', '.join(sorted(ns))})")
        return ns[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, ns) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        value: Any = isinstance(node.op, ast.And)
        for operand in node.values:
            value = _eval(operand, ns)
            if bool(value) != isinstance(node.op, ast.And):
                break
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, ns)
        if not isinstance(node.op, ast.Not):
            _number(operand)
        return _UNARY[type(node.op)](operand)
    if isinstance(node, ast.BinOp):
        left, right = _number(_eval(node.left, ns)), _number(_eval(node.right, ns))
        return _ARITHMETIC[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, ns)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, ns)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        container, index = _eval(node.value, ns), _eval(node.slice, ns)
        if not isinstance(container, list | tuple | dict | str):
            raise ExpressionError(f"{type(container).__name__} cannot be indexed")
        return container[index]
    if isinstance(node, ast.Call):
        function = FUNCTIONS[cast(ast.Name, node.func).id]  # compile_expression checked it
        return function(*(_eval(a, ns) for a in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # pragma: no cover
