"""Resolve canonical quantities to the DBC signals that carry them on one platform's bus."""

from __future__ import annotations

from dataclasses import dataclass

from avops.features.expr import Col, Expr, Lit


class UnavailableFeature(LookupError):
    """The platform's bus does not carry a quantity this feature needs."""


@dataclass(frozen=True)
class Platform:
    """quantity -> (CAN message, expression over that message's decoded signal columns)."""

    dbc: str
    quantities: dict[str, tuple[str, Expr]]

    @classmethod
    def from_signal_map(cls, dbc: str, signal_map: dict) -> Platform:
        """Invert ``config/can_signals.yaml``: physical = quantity * scale, so quantity = physical / scale."""
        mapping = signal_map.get(dbc)
        if mapping is None:
            raise KeyError(f"config/can_signals.yaml has no entry for {dbc}; add its message/signal map to compute features")
        out: dict[str, tuple[str, Expr]] = {}
        for message, spec in mapping.items():
            magnitude: dict[str, Expr] = {}
            negative: dict[str, Expr] = {}
            for signal, s in spec["signals"].items():
                s = {"quantity": s} if isinstance(s, str) else s
                col: Expr = Col(signal)
                scale = float(s.get("scale", 1.0))
                if s.get("transform") == "negative_flag":
                    negative[s["quantity"]] = col
                    continue
                magnitude[s["quantity"]] = col if scale == 1.0 else col / scale
            for quantity, expr in magnitude.items():
                if quantity in negative:  # |x| and a sign flag -> x
                    expr = expr * (Lit(1.0) - negative[quantity] * 2.0)
                out.setdefault(quantity, (message, expr))
        return cls(dbc, out)

    def resolve(self, expr: Expr, what: str, clock: str | None = None) -> tuple[str, Expr]:
        """The message whose rows ``expr`` is evaluated on, and ``expr`` over signal columns.

        Without ``clock`` every quantity must come from one message. With it, the rows are the
        clock quantity's message, and a quantity of another message is that message's latest
        sample at or before the row (an as-of join), named ``<message>.<signal>``.
        """
        missing = sorted(n for n in expr.names() | ({clock} if clock else set()) if n not in self.quantities)
        if missing:
            raise UnavailableFeature(f"{what}: {self.dbc} carries no {', '.join(missing)}")
        messages = {self.quantities[n][0] for n in expr.names()}
        if clock is None:
            if len(messages) != 1:
                raise ValueError(f"{what}: its quantities come from several CAN messages ({', '.join(sorted(messages))}); "
                                 "name a clock quantity to join them as of its rows, or split the feature")
            return messages.pop(), expr.substitute(lambda n: self.quantities[n][1])
        primary = self.quantities[clock][0]

        def column(n: str) -> Expr:
            message, e = self.quantities[n]
            return e if message == primary else e.substitute(lambda sig: Col(f"{message}.{sig}"))
        return primary, expr.substitute(column)


@dataclass(frozen=True)
class ResolvedFeature:
    """A feature bound to one platform: the CAN message it reads, its value and filter over that message's signals."""

    name: str
    agg: str
    window_s: float
    message: str
    value: Expr
    where: Expr | None
    asof_tolerance_s: float = 0.0

    def columns(self) -> set[str]:
        return self.value.names() | (self.where.names() if self.where is not None else set())

    def joins(self) -> dict[str, list[str]]:
        """Joined message -> its signals this feature reads (columns named ``<message>.<signal>``)."""
        out: dict[str, list[str]] = {}
        for c in sorted(self.columns()):
            if "." in c:
                message, signal = c.split(".", 1)
                out.setdefault(message, []).append(signal)
        return out


def resolve_features(platform: Platform, features: list) -> tuple[list[ResolvedFeature], dict[str, str]]:
    """The features this platform can compute, and why each other one is unavailable."""
    resolved, unavailable = [], {}
    for f in features:
        try:
            message, value = platform.resolve(f.expr, f.name, f.clock)
            where = None
            if f.where is not None:
                where_message, where = platform.resolve(f.where, f.name, f.clock)
                if where_message != message:
                    raise ValueError(f"{f.name}: its filter reads {where_message}, its value {message}; both must read one message")
        except UnavailableFeature as e:
            unavailable[f.name] = str(e)
            continue
        resolved.append(ResolvedFeature(f.name, f.agg, f.window_s, message, value, where, f.asof_tolerance_s))
    return resolved, unavailable
