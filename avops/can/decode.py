"""Vectorized DBC decoding: whole arrays of frames per message id, no per-frame Python.

cantools decodes ~0.4M frames/s (a Python call per frame); a fleet day is
billions of frames. Here frames are grouped by message with one stable sort,
each message's payloads are read as 64-bit words, and every signal is a
shift and a mask over all of that message's frames at once.

Bit layout (checked against cantools in tests/test_can_decode.py):

* little endian (Intel): the payload is one little-endian integer; a signal
  with DBC start bit ``s`` occupies bits ``s .. s+len-1`` of it.
* big endian (Motorola): the payload is one big-endian bit string, position 0
  being the MSB of byte 0; DBC start bit ``s`` (sawtooth numbering, the
  signal's MSB) is position ``p = (s//8)*8 + 7 - s%8``, the LSB sits at
  ``p + len - 1``.

A signal may straddle two 64-bit words (CAN FD payloads, or a 64-bit signal
not aligned on a byte); it is then put together from both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cantools
import numpy as np
import pyarrow as pa

from avops.can.frames import CanFrames

LOG = logging.getLogger(__name__)

EXTENDED_FLAG = 0x80000000  # cantools keys extended messages as frame_id | this flag


@dataclass
class DecodeResult:
    """Decoded signals per message plus everything that was *not* decoded, so nothing vanishes."""

    # message name -> table: "timestamp" (float64 s) + one float64 column per signal
    # (physical value raw*scale+offset; enumerations as numbers); a multiplexed
    # signal that is not active in a frame is null there.
    tables: dict[str, pa.Table] = field(default_factory=dict)
    # frame_id (no extended flag) -> frames whose (id, extended) the DBC does not know
    unknown_ids: dict[int, int] = field(default_factory=dict)
    frames_decoded: int = 0
    frames_short: dict[str, int] = field(default_factory=dict)  # message -> frames shorter than the DBC length


@dataclass(frozen=True)
class _SignalPlan:
    name: str
    big_endian: bool
    word: int  # first 64-bit word (LE: holds the LSB, BE: holds the MSB)
    word2: int  # second word when the signal straddles a word boundary, else -1
    shift: int  # LE: right shift of the first word; BE: right shift of the word holding the LSB
    length: int
    mask: np.uint64
    signed: bool
    float_bits: int  # 0 for integers, else 16/32/64 (IEEE)
    scale: float
    offset: float
    needed_bytes: int  # payload bytes a frame must have to carry this signal
    mux_parent: int  # index of the multiplexer signal in the message plan, -1 if none
    mux_ids: tuple[int, ...]


@dataclass(frozen=True)
class _MessagePlan:
    name: str
    length: int
    signals: tuple[_SignalPlan, ...]  # multiplexers always before the signals they select
    is_mux_parent: frozenset[int]
    column_order: tuple[int, ...]  # output columns in the DBC's (cantools') signal order


def _signal_plan(sig: cantools.database.can.Signal, mux_parent: int) -> _SignalPlan:
    length = int(sig.length)
    if sig.byte_order == "little_endian":
        lsb = int(sig.start)
        word, shift = divmod(lsb, 64)
        word2 = word + 1 if shift + length > 64 else -1
        needed = (lsb + length - 1) // 8 + 1
        big = False
    else:
        msb = (sig.start // 8) * 8 + 7 - sig.start % 8
        lsb = msb + length - 1
        word, lsb_word = msb // 64, lsb // 64
        word2 = lsb_word if lsb_word != word else -1
        shift = 63 - lsb % 64
        needed = lsb // 8 + 1
        big = True
    float_bits = length if sig.is_float else 0
    if float_bits not in (0, 16, 32, 64):
        raise ValueError(f"float signal {sig.name} has {length} bits; IEEE floats have 16, 32 or 64")
    mux_ids = tuple(int(i) for i in (sig.multiplexer_ids or ()))
    return _SignalPlan(
        name=sig.name,
        big_endian=big,
        word=word,
        word2=word2,
        shift=shift,
        length=length,
        mask=np.uint64((1 << length) - 1),
        signed=bool(sig.is_signed),
        float_bits=float_bits,
        scale=float(sig.scale),
        offset=float(sig.offset),
        needed_bytes=needed,
        mux_parent=mux_parent,
        mux_ids=mux_ids,
    )


def _message_plan(msg: cantools.database.can.Message) -> _MessagePlan:
    by_name = {s.name: s for s in msg.signals}

    def depth(sig: cantools.database.can.Signal) -> int:
        d, seen = 0, set()
        while sig.multiplexer_signal and sig.multiplexer_signal in by_name and sig.name not in seen:
            seen.add(sig.name)
            sig = by_name[sig.multiplexer_signal]
            d += 1
        return d

    # Parents first (stable within a depth, so column order mostly follows the DBC).
    ordered = sorted(msg.signals, key=depth)
    index: dict[str, int] = {}
    plans: list[_SignalPlan] = []
    for sig in ordered:
        if not 0 < sig.length <= 64:
            LOG.warning("message %s: signal %s has %d bits; only 1..64 are decoded", msg.name, sig.name, sig.length)
            continue
        parent = -1
        if sig.multiplexer_signal is not None:
            if sig.multiplexer_signal not in index:
                LOG.warning("message %s: signal %s has no decodable multiplexer; skipped", msg.name, sig.name)
                continue
            parent = index[sig.multiplexer_signal]
        index[sig.name] = len(plans)
        plans.append(_signal_plan(sig, parent))
    parents = frozenset(p.mux_parent for p in plans if p.mux_parent >= 0)
    order = tuple(index[s.name] for s in msg.signals if s.name in index)
    return _MessagePlan(
        name=msg.name, length=int(msg.length), signals=tuple(plans), is_mux_parent=parents, column_order=order
    )


class VectorizedDecoder:
    """Decode ``CanFrames`` with a cantools database; numbers match ``decode_message(decode_choices=False)``.

    Differences from cantools, on purpose: a frame shorter than the DBC length
    is counted in ``frames_short`` and left out (cantools raises); a frame whose
    multiplexer value is not in the DBC keeps its row with the multiplexed
    signals null (cantools raises); overlapping signals, which make cantools
    fail ("unpacking failed"), are each decoded from their own bits; a signal
    reaching past the DBC length is null unless the frame's payload covers it;
    a signal whose multiplexer is not flagged ``M`` in the DBC (a DBC defect
    cantools answers by never decoding it) is selected by that signal's value.
    """

    def __init__(self, db: cantools.database.Database) -> None:
        self.db = db
        # Same key and same last-one-wins rule as cantools' own frame id table.
        by_key: dict[int, cantools.database.can.Message] = {}
        for msg in db.messages:
            if msg.is_container:
                LOG.warning("container message %s is not decoded", msg.name)
                continue
            key = int(msg.frame_id) | (EXTENDED_FLAG if msg.is_extended_frame else 0)
            by_key[key] = msg
        keys = sorted(by_key)
        if len(keys) >= 0xFFFF:
            raise ValueError("more than 65534 messages in one DBC are not supported")
        self._plans: list[_MessagePlan] = [_message_plan(by_key[k]) for k in keys]
        self._keys = np.array(keys, dtype=np.uint32)
        # Standard ids are looked up in a table; extended ids by binary search.
        self._std_lut = np.full(0x800, len(keys), dtype=np.uint16)
        for i, k in enumerate(keys):
            if k < 0x800:
                self._std_lut[k] = i

    @property
    def message_names(self) -> list[str]:
        """Names of the messages this decoder can produce tables for."""
        return [p.name for p in self._plans]

    def _message_index(self, frames: CanFrames) -> np.ndarray:
        """Per frame: index into self._plans, or len(self._plans) when the DBC does not know it."""
        unknown = len(self._plans)
        ext = frames.is_extended
        if not ext.any():
            return self._std_lut[frames.frame_id]
        idx = self._std_lut[np.where(ext, 0, frames.frame_id)]
        ext_rows = np.flatnonzero(ext)
        key = frames.frame_id[ext_rows] | np.uint32(EXTENDED_FLAG)
        if len(self._keys):
            pos = np.minimum(np.searchsorted(self._keys, key), len(self._keys) - 1)
            hit = self._keys[pos] == key
            idx[ext_rows] = np.where(hit, pos, unknown).astype(np.uint16)
        else:
            idx[ext_rows] = unknown
        return idx

    def decode(self, frames: CanFrames) -> DecodeResult:
        """Decode every frame; unknown ids and short frames are counted, never dropped silently."""
        result = DecodeResult()
        n = len(frames)
        if n == 0:
            return result
        n_plans = len(self._plans)
        msg_idx = self._message_index(frames)
        counts = np.bincount(msg_idx, minlength=n_plans + 1)
        order = np.argsort(msg_idx, kind="stable")  # radix sort on uint16: keeps time order per message
        words = frames.data.view("<u8")  # (n, width/8): payload bytes as little-endian 64-bit words
        starts = np.concatenate(([0], np.cumsum(counts)))

        if counts[n_plans]:
            unknown_rows = order[starts[n_plans] : starts[n_plans + 1]]
            ids, id_counts = np.unique(frames.frame_id[unknown_rows], return_counts=True)
            result.unknown_ids = {int(i): int(c) for i, c in zip(ids, id_counts, strict=True)}

        for m in np.flatnonzero(counts[:n_plans]):
            plan = self._plans[m]
            rows = order[starts[m] : starts[m + 1]]
            dlc = frames.dlc[rows]
            short = dlc < plan.length
            n_short = int(np.count_nonzero(short))
            if n_short:
                result.frames_short[plan.name] = n_short
                rows = rows[~short]
                dlc = dlc[~short]
                if rows.size == 0:
                    continue
            table = self._decode_message(plan, rows, dlc, words, frames.timestamp)
            result.tables[plan.name] = table
            result.frames_decoded += table.num_rows
        return result

    def _decode_message(
        self,
        plan: _MessagePlan,
        rows: np.ndarray,
        dlc: np.ndarray,
        words: np.ndarray,
        timestamp: np.ndarray,
    ) -> pa.Table:
        payload = _Words(words, rows)
        columns: list[pa.Array | None] = [None] * len(plan.signals)
        active: dict[int, np.ndarray | None] = {}  # multiplexer index -> frames where it is itself present
        selector: dict[int, np.ndarray] = {}  # multiplexer index -> its value per frame
        # Random payload bits make signalling NaNs/infs in float signals: values, not errors.
        with np.errstate(invalid="ignore", over="ignore"):
            for i, sig in enumerate(plan.signals):
                number = _raw_number(sig, payload)
                if sig.scale == 1.0 and sig.offset == 0.0:
                    phys = number.astype(np.float64)
                else:
                    phys = np.multiply(number, sig.scale, dtype=np.float64)
                    if sig.offset:
                        phys += sig.offset
                act = None
                if sig.mux_parent >= 0:
                    values = selector[sig.mux_parent]
                    hit = values == sig.mux_ids[0] if len(sig.mux_ids) == 1 else np.isin(values, sig.mux_ids)
                    parent = active[sig.mux_parent]
                    act = hit if parent is None else parent & hit
                if sig.needed_bytes > plan.length:  # reaches past the DBC length: only where the frame has it
                    covered = dlc >= sig.needed_bytes
                    act = covered if act is None else act & covered
                if i in plan.is_mux_parent:
                    active[i] = act
                    selector[i] = _selector(sig, number, phys)
                columns[i] = pa.array(phys) if act is None else pa.array(phys, mask=~act)
        return pa.Table.from_arrays(
            [pa.array(timestamp[rows])] + [columns[i] for i in plan.column_order],
            names=["timestamp"] + [plan.signals[i].name for i in plan.column_order],
        )


class _Words:
    """One message's payloads as 64-bit words, gathered lazily and once per word index."""

    def __init__(self, words: np.ndarray, rows: np.ndarray) -> None:
        self._words = words  # (n, width/8) little-endian view of CanFrames.data
        self._rows = rows
        self._le: dict[int, np.ndarray] = {}
        self._be: dict[int, np.ndarray] = {}

    def le(self, j: int) -> np.ndarray:
        """Bytes 8j..8j+7 as a little-endian integer (bit b of the payload = bit b-64j)."""
        w = self._le.get(j)
        if w is None:
            if j >= self._words.shape[1]:  # past the batch width: no frame has these bytes (nulled later)
                w = np.zeros(self._rows.size, np.uint64)
            elif self._words.shape[1] == 1:
                w = np.take(self._words.reshape(-1), self._rows)
            else:
                w = self._words[self._rows, j]
            self._le[j] = w
        return w

    def be(self, j: int) -> np.ndarray:
        """Bytes 8j..8j+7 as a big-endian integer (Motorola position p = bit 63-(p-64j))."""
        w = self._be.get(j)
        if w is None:
            w = self.le(j).byteswap()
            self._be[j] = w
        return w


_FLOAT_VIEWS = {16: (np.uint16, np.float16), 32: (np.uint32, np.float32), 64: (np.uint64, np.float64)}


def _raw_number(sig: _SignalPlan, payload: _Words) -> np.ndarray:
    """The signal's raw value per frame: uint64, int64 (signed) or float (IEEE)."""
    if sig.big_endian:
        if sig.word2 < 0:
            raw = payload.be(sig.word) >> np.uint64(sig.shift)
        else:  # MSB part in the first word, LSB part in the next
            raw = payload.be(sig.word) << np.uint64(64 - sig.shift)
            raw |= payload.be(sig.word2) >> np.uint64(sig.shift)
    else:
        raw = payload.le(sig.word) >> np.uint64(sig.shift)
        if sig.word2 >= 0:
            raw |= payload.le(sig.word2) << np.uint64(64 - sig.shift)
    if sig.length < 64:
        raw &= sig.mask
    if sig.float_bits:
        utype, ftype = _FLOAT_VIEWS[sig.float_bits]
        return raw.astype(utype).view(ftype)
    if sig.signed:
        if sig.length < 64:
            sign = np.uint64(1 << (sig.length - 1))
            raw ^= sign
            raw -= sign  # wraps modulo 2**64: two's complement sign extension
        return raw.view(np.int64)
    return raw


def _selector(sig: _SignalPlan, number: np.ndarray, phys: np.ndarray) -> np.ndarray:
    """A multiplexer's value as cantools compares it: int() of the scaled value."""
    if sig.float_bits or sig.scale != 1.0 or sig.offset != 0.0:
        return np.nan_to_num(np.trunc(phys), nan=-1, posinf=-1, neginf=-1).astype(np.int64)
    return number.view(np.int64) if number.dtype == np.uint64 else number
