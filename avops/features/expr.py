"""A small row expression language that renders to DuckDB SQL *and* evaluates with NumPy.

Why not two hand-written implementations: a feature must be defined once and computed the
same way offline (DuckDB over Parquet, for training) and online (one vehicle in-process, as
a BMS or an in-vehicle service would). Both computations are generated from one tree, so they
can only differ by float rounding, and the parity check measures exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

Number = int | float
NAN = "CAST('nan' AS DOUBLE)"


def _wrap(x: Expr | Number) -> Expr:
    return x if isinstance(x, Expr) else Lit(float(x))


class Expr:
    """A per-row expression over named columns (quantities before resolution, signals after)."""

    def sql(self) -> str:
        raise NotImplementedError

    def eval(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def names(self) -> set[str]:
        raise NotImplementedError

    def substitute(self, mapping: Callable[[str], Expr]) -> Expr:
        """The same tree with every column replaced by ``mapping(name)``."""
        raise NotImplementedError

    def __add__(self, o: Expr | Number) -> Expr:
        return Op("+", self, _wrap(o))

    def __sub__(self, o: Expr | Number) -> Expr:
        return Op("-", self, _wrap(o))

    def __mul__(self, o: Expr | Number) -> Expr:
        return Op("*", self, _wrap(o))

    def __truediv__(self, o: Expr | Number) -> Expr:
        return Op("/", self, _wrap(o))

    def __gt__(self, o: Expr | Number) -> Expr:  # type: ignore[override]
        return Op(">", self, _wrap(o))

    def __lt__(self, o: Expr | Number) -> Expr:  # type: ignore[override]
        return Op("<", self, _wrap(o))

    def __and__(self, o: Expr) -> Expr:
        return Op("AND", self, o)


@dataclass(frozen=True, eq=False)
class Col(Expr):
    name: str

    def sql(self) -> str:  # a missing value is NaN in both engines, never SQL's NULL
        return "coalesce(\"" + self.name.replace('"', '""') + "\", " + NAN + ")"

    def eval(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(cols[self.name], dtype=np.float64)

    def names(self) -> set[str]:
        return {self.name}

    def substitute(self, mapping: Callable[[str], Expr]) -> Expr:
        return mapping(self.name)

    def __repr__(self) -> str:
        return f"Col({self.name!r})"


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    value: float

    def sql(self) -> str:
        return f"CAST({self.value!r} AS DOUBLE)"

    def eval(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.float64(self.value)  # type: ignore[return-value]

    def names(self) -> set[str]:
        return set()

    def substitute(self, mapping: Callable[[str], Expr]) -> Expr:
        return self

    def __repr__(self) -> str:
        return f"Lit({self.value!r})"


_BINARY = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
    ">": lambda a, b: np.greater(a, b).astype(np.float64), "<": lambda a, b: np.less(a, b).astype(np.float64),
    "AND": lambda a, b: np.logical_and(a != 0, b != 0).astype(np.float64),
}


@dataclass(frozen=True, eq=False)
class Op(Expr):
    op: str
    left: Expr
    right: Expr

    def sql(self) -> str:
        a, b = self.left.sql(), self.right.sql()
        if self.op == "/":  # x/0 is NaN in both engines (DuckDB would say NULL, NumPy inf)
            return f"(CASE WHEN ({b}) = 0 THEN {NAN} ELSE ({a}) / ({b}) END)"
        if self.op in (">", "<"):
            body = f"CAST(({a}) {self.op} ({b}) AS DOUBLE)"
        elif self.op == "AND":
            body = f"CAST((({a}) <> 0 AND ({b}) <> 0) AS DOUBLE)"
        else:
            return f"({a} {self.op} {b})"
        return f"(CASE WHEN isnan({a}) OR isnan({b}) THEN {NAN} ELSE {body} END)"  # NaN propagates, as in arithmetic

    def eval(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        a, b = self.left.eval(cols), self.right.eval(cols)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.op == "/":
                return np.where(b == 0, np.nan, np.divide(a, np.where(b == 0, 1.0, b)))
            out = _BINARY[self.op](a, b)
        if self.op in (">", "<", "AND"):
            out = np.where(np.isnan(a) | np.isnan(b), np.nan, out)
        return out

    def names(self) -> set[str]:
        return self.left.names() | self.right.names()

    def substitute(self, mapping: Callable[[str], Expr]) -> Expr:
        return Op(self.op, self.left.substitute(mapping), self.right.substitute(mapping))

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


_FUNCS = {"abs": (np.abs, "abs"), "greatest": (np.maximum, "greatest"), "least": (np.minimum, "least")}


@dataclass(frozen=True, eq=False)
class Fn(Expr):
    fn: str
    args: tuple[Expr, ...]

    def sql(self) -> str:
        args = [a.sql() for a in self.args]
        call = f"{_FUNCS[self.fn][1]}({', '.join(args)})"
        if len(args) == 1:
            return call
        # DuckDB's greatest/least skip NaN one way or the other; NumPy's maximum/minimum propagate it
        return f"(CASE WHEN {' OR '.join(f'isnan({a})' for a in args)} THEN {NAN} ELSE {call} END)"

    def eval(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        f = _FUNCS[self.fn][0]
        vals = [a.eval(cols) for a in self.args]
        out = vals[0]
        if len(vals) == 1:
            return f(out)
        for v in vals[1:]:
            out = f(out, v)
        return out

    def names(self) -> set[str]:
        return set().union(*(a.names() for a in self.args))

    def substitute(self, mapping: Callable[[str], Expr]) -> Expr:
        return Fn(self.fn, tuple(a.substitute(mapping) for a in self.args))

    def __repr__(self) -> str:
        return f"{self.fn}({', '.join(map(repr, self.args))})"


def q(name: str) -> Col:
    """A canonical vehicle quantity (``config/can_signals.yaml``), resolved per platform later."""
    return Col(name)


def absolute(x: Expr) -> Expr:
    return Fn("abs", (x,))


def greatest(*xs: Expr) -> Expr:
    return Fn("greatest", tuple(xs))


def least(*xs: Expr) -> Expr:
    return Fn("least", tuple(xs))
