"""Benchmark: avops' vectorized CAN decoder against cantools, value for value.

For each DBC (vw_mqb: Intel byte order with a multiplexed message;
ford_lincoln_base_pt: Motorola, 64-byte CAN FD messages) it builds 1,000,000
frames of random messages with random payloads (multiplexed messages get
cantools-encoded payloads with valid multiplexer values), decodes them with
cantools one frame at a time (``decode_message(..., decode_choices=False)``)
and with ``VectorizedDecoder``, aborts with exit 1 on any differing value,
and prints one summary line last:

    can decode 2,000,000 frames: avops 20.1M frames/s, cantools 0.41M frames/s, cantools 49.0x

The last figure is how many times faster avops is (cantools time / avops time).
Run: ``.venv/bin/python benchmarks/bench_can_decode.py [--frames N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import cantools
import numpy as np

from avops.can.dbc import load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.frames import CanFrames

DBCS = ("opendbc:vw_mqb", "opendbc:ford_lincoln_base_pt")
EXTENDED = 0x80000000


def decodable(db: cantools.database.Database) -> list[cantools.database.can.Message]:
    """Messages cantools can decode at all (some opendbc messages have overlapping signals)."""
    out = []
    for msg in db.messages:
        try:
            if msg.is_multiplexed():
                msg.encode(random_values(msg, np.random.default_rng(0)), strict=False)
            else:
                msg.decode(bytes(msg.length), decode_choices=False)
        except Exception:
            continue
        out.append(msg)
    return out


def random_values(msg: cantools.database.can.Message, rng: np.random.Generator) -> dict[str, float]:
    """In-range raw values for every signal (cantools picks the active ones by multiplexer)."""
    values: dict[str, float] = {}
    mux_choice: dict[str, int] = {}
    for sig in msg.signals:
        if sig.is_multiplexer:
            ids = sorted({i for s in msg.signals if s.multiplexer_signal == sig.name for i in s.multiplexer_ids or ()})
            mux_choice[sig.name] = int(rng.choice(ids)) if ids else 0
    for sig in msg.signals:
        if sig.is_multiplexer:
            values[sig.name] = mux_choice[sig.name]
            continue
        raw = int.from_bytes(rng.bytes(8), "little") & ((1 << sig.length) - 1)
        if sig.is_signed and raw >> (sig.length - 1):
            raw -= 1 << sig.length
        values[sig.name] = raw
    return values


def make_frames(db: cantools.database.Database, n: int, rng: np.random.Generator) -> tuple[CanFrames, int]:
    msgs = decodable(db)
    width = 64 if max(m.length for m in msgs) > 8 else 8
    pick = rng.integers(0, len(msgs), n)
    lengths = np.array([m.length for m in msgs], np.uint8)
    data = rng.integers(0, 256, (n, width), dtype=np.uint8)
    dlc = lengths[pick]
    data[np.arange(width)[None, :] >= dlc[:, None]] = 0
    for k, msg in enumerate(msgs):
        if not msg.is_multiplexed():
            continue
        rows = np.flatnonzero(pick == k)
        pool = [
            msg.encode(random_values(msg, rng), scaling=False, strict=False, padding=False) for _ in range(256)
        ]
        pool_arr = np.frombuffer(b"".join(pool), np.uint8).reshape(len(pool), msg.length)
        data[rows, : msg.length] = pool_arr[rng.integers(0, len(pool), rows.size)]
    frames = CanFrames(
        timestamp=1.7e9 + np.cumsum(rng.exponential(1e-4, n)),
        frame_id=np.array([m.frame_id for m in msgs], np.uint32)[pick],
        is_extended=np.array([m.is_extended_frame for m in msgs], np.bool_)[pick],
        dlc=dlc,
        data=data,
        channel=np.zeros(n, np.uint8),
    )
    return frames, len(msgs)


def cantools_decode(db: cantools.database.Database, frames: CanFrames) -> tuple[list[dict], float]:
    ids = frames.frame_id.tolist()
    ext = frames.is_extended.tolist()
    w = frames.width
    raw = frames.data.tobytes()
    payloads = [raw[i * w : i * w + d] for i, d in enumerate(frames.dlc.tolist())]
    decode = db.decode_message
    t0 = time.perf_counter()
    out = [decode(f, p, decode_choices=False, force_extended_id=e) for f, p, e in zip(ids, payloads, ext, strict=True)]
    return out, time.perf_counter() - t0


def verify(db: cantools.database.Database, frames: CanFrames, expected: list[dict], result) -> int:
    """Compare every value; returns the number of compared values (exits 1 on a mismatch)."""
    if result.unknown_ids or result.frames_short or result.frames_decoded != len(frames):
        sys.exit(f"FAIL: unknown {result.unknown_ids}, short {result.frames_short}, decoded {result.frames_decoded}")
    keys = frames.frame_id.astype(np.int64) | np.where(frames.is_extended, EXTENDED, 0)
    compared = 0
    for key in np.unique(keys):
        msg = db._frame_id_to_message[int(key)]
        rows = np.flatnonzero(keys == key)
        table = result.tables[msg.name]
        if table.num_rows != rows.size:
            sys.exit(f"FAIL: {msg.name}: {table.num_rows} rows, expected {rows.size}")
        if not np.array_equal(table.column("timestamp").to_numpy(), frames.timestamp[rows]):
            sys.exit(f"FAIL: {msg.name}: timestamps differ")
        dicts = [expected[i] for i in rows.tolist()]
        for sig in msg.signals:
            col = table.column(sig.name)
            want = np.array([d.get(sig.name, np.nan) for d in dicts], np.float64)
            present = np.array([sig.name in d for d in dicts])
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            got = col.to_numpy(zero_copy_only=False).astype(np.float64)
            if not np.array_equal(valid, present):
                sys.exit(f"FAIL: {msg.name}.{sig.name}: null pattern differs from cantools")
            ok = np.isclose(got[present], want[present], rtol=1e-12, atol=0, equal_nan=True)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                sys.exit(f"FAIL: {msg.name}.{sig.name}: avops {got[present][i]!r} != cantools {want[present][i]!r}")
            compared += int(present.sum())
    return compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames per DBC")
    parser.add_argument("--rounds", type=int, default=5, help="avops rounds (median is reported)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    rng = np.random.default_rng(20240601)
    total_frames, t_avops, t_cantools = 0, 0.0, 0.0
    for spec in DBCS:
        db = load_dbc(spec)
        frames, n_msgs = make_frames(db, args.frames, rng)
        decoder = VectorizedDecoder(db)
        decoder.decode(frames.take(np.arange(min(1000, len(frames)))))  # warm-up
        times, result = [], None
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            result = decoder.decode(frames)
            times.append(time.perf_counter() - t0)
        avops_s = statistics.median(times)
        expected, cantools_s = cantools_decode(db, frames)
        compared = verify(db, frames, expected, result)
        print(
            f"{spec}: {len(frames):,} frames of {n_msgs} messages, {compared:,} values equal; "
            f"avops {avops_s * 1e3:.1f} ms (median of {args.rounds}), cantools {cantools_s:.2f} s, "
            f"{cantools_s / avops_s:.1f}x"
        )
        total_frames += len(frames)
        t_avops += avops_s
        t_cantools += cantools_s
    print(
        f"can decode {total_frames:,} frames: avops {total_frames / t_avops / 1e6:.1f}M frames/s, "
        f"cantools {total_frames / t_cantools / 1e6:.2f}M frames/s, cantools {t_cantools / t_avops:.1f}x"
    )


if __name__ == "__main__":
    main()
