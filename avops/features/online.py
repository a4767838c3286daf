"""Online feature computation: one vehicle's latest window, in-process, from the same definitions.

This is what an in-vehicle service or a streaming consumer runs: decoded CAN messages (or raw
frames and the DBC) arrive in time order, only the longest window is kept in memory, and a
feature vector can be asked for at any time. No DuckDB, no Parquet, no Dagster.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa

from avops.can.decode import VectorizedDecoder
from avops.can.frames import CanFrames
from avops.features.signals import ResolvedFeature


def aggregate(agg: str, values: np.ndarray) -> float:
    """NumPy twin of the offline SQL aggregates (NaN for an empty window, as the SQL's coalesce)."""
    n = values.size
    if agg == "count":
        return float(n)
    if n == 0 or (agg == "std" and n < 2):
        return float("nan")
    if agg in ("mean", "frac"):
        return float(np.mean(values))
    if agg == "std":
        return float(np.std(values, ddof=1))
    if agg == "min":
        return float(np.min(values))
    if agg == "max":
        return float(np.max(values))
    if agg == "p95":
        return float(np.quantile(values, 0.95))
    raise ValueError(f"unknown aggregation {agg!r}")


class OnlineFeatures:
    """Feature vector of one vehicle over its trailing windows, updated as messages arrive."""

    def __init__(self, features: list[ResolvedFeature], decoder: VectorizedDecoder | None = None) -> None:
        self.features = features
        self.decoder = decoder
        self.horizon_s = max((f.window_s + f.asof_tolerance_s for f in features), default=0.0)
        needed: dict[str, set[str]] = {}
        for f in features:
            needed.setdefault(f.message, set()).update(c for c in f.columns() if "." not in c)
            for joined, signals in f.joins().items():
                needed.setdefault(joined, set()).update(signals)
        self._signals = {m: sorted(s) for m, s in needed.items()}
        self._chunks: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in self._signals}
        self.latest = float("-inf")
        self._forgotten_until = float("-inf")  # rows at or before this were dropped

    @property
    def inputs(self) -> dict[str, list[str]]:
        """Message -> the decoded signals this feature set reads from it."""
        return dict(self._signals)

    def update(self, message: str, timestamp: np.ndarray, signals: Mapping[str, np.ndarray]) -> None:
        """Append decoded rows of one message (time ordered within the call)."""
        if message not in self._signals or len(timestamp) == 0:
            return
        chunk = {"timestamp": np.asarray(timestamp, np.float64)}
        for s in self._signals[message]:
            chunk[s] = np.asarray(signals[s], np.float64) if s in signals else np.full(len(timestamp), np.nan)
        self._chunks[message].append(chunk)
        self.latest = max(self.latest, float(chunk["timestamp"].max()))

    def update_tables(self, tables: Mapping[str, pa.Table]) -> None:
        """Decoded message tables (``timestamp`` plus signal columns), keyed by message name."""
        for message, table in tables.items():
            cols = {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names if c in self._signals.get(message, ())}
            if message in self._signals and table.num_rows:
                self.update(message, table["timestamp"].to_numpy(), cols)

    def update_frames(self, frames: CanFrames) -> None:
        """Raw CAN frames, decoded with this platform's DBC as the vehicle would."""
        if self.decoder is None:
            raise ValueError("OnlineFeatures was built without a decoder; pass VectorizedDecoder(load_dbc(...)) to feed raw frames")
        self.update_tables(self.decoder.decode(frames).tables)

    def _buffer(self, message: str) -> dict[str, np.ndarray]:
        """The message's retained rows in time order (compacted, and what no window can reach forgotten)."""
        chunks = self._chunks[message]
        if len(chunks) > 1 or (chunks and not chunks[0].get("_sorted")):
            merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0] if k != "_sorted"}
            keep = merged["timestamp"] > self.latest - self.horizon_s
            if not keep.all():
                self._forgotten_until = max(self._forgotten_until, self.latest - self.horizon_s)
            order = np.argsort(merged["timestamp"][keep], kind="stable")
            self._chunks[message] = chunks = [{**{k: v[keep][order] for k, v in merged.items()}, "_sorted": True}]
        return chunks[0] if chunks else {"timestamp": np.empty(0), **{s: np.empty(0) for s in self._signals[message]}}

    def _rows(self, f: ResolvedFeature, as_of: float) -> dict[str, np.ndarray]:
        """The feature's rows in its window, with joined messages' latest samples as of each row."""
        rows = self._buffer(f.message)
        ts = rows["timestamp"]
        in_window = (ts > as_of - f.window_s) & (ts <= as_of)
        cols = {k: v[in_window] for k, v in rows.items() if k != "_sorted"}
        for joined, signals in f.joins().items():
            other = self._buffer(joined)
            idx = np.searchsorted(other["timestamp"], cols["timestamp"], side="right") - 1
            safe = np.clip(idx, 0, None)
            valid = (idx >= 0) & (cols["timestamp"] - other["timestamp"][safe] <= f.asof_tolerance_s) if len(other["timestamp"]) \
                else np.zeros(len(idx), bool)
            for s in signals:
                vals = other[s][safe] if len(other["timestamp"]) else np.full(len(idx), np.nan)
                cols[f"{joined}.{s}"] = np.where(valid, vals, np.nan)
        return cols

    def compute(self, as_of: float | None = None) -> dict[str, float]:
        """Every feature over ``(as_of - window, as_of]``; ``as_of`` defaults to the newest sample seen."""
        as_of = self.latest if as_of is None else float(as_of)
        out: dict[str, float] = {}
        for f in self.features:
            cols = self._rows(f, as_of)
            if as_of - f.window_s - f.asof_tolerance_s < self._forgotten_until:
                raise ValueError(f"{f.name}: samples up to {self._forgotten_until} were already forgotten; an online computer "
                                 f"answers its latest windows (as_of >= {self._forgotten_until + f.window_s + f.asof_tolerance_s})")
            with np.errstate(invalid="ignore", divide="ignore"):
                v = np.broadcast_to(f.value.eval(cols), cols["timestamp"].shape)
                ok = np.isfinite(v)
                if f.where is not None:
                    ok &= np.broadcast_to(f.where.eval(cols), v.shape) == 1
            out[f.name] = aggregate(f.agg, v[ok])
        return out
