"""Put a vehicle model's quantities on the CAN bus through the platform's real DBC."""

from __future__ import annotations

import zlib

import numpy as np

from avops.can.dbc import load_dbc
from avops.can.encode import encode_message
from avops.can.frames import CanFrames
from avops.can.signal_map import load_signal_map


def _physical(spec, series: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    if isinstance(spec, str):
        spec = {"quantity": spec}
    q = series[spec["quantity"]][idx]
    transform = spec.get("transform")
    if transform == "abs":
        q = np.abs(q)
    elif transform == "negative_flag":
        q = (q < 0).astype(float)
    return q * float(spec.get("scale", 1.0))


def encode_bus(
    rng: np.random.Generator, dbc_spec: str, series: dict[str, np.ndarray], t0: float, signal_map: dict | None = None
) -> CanFrames:
    """Sample each mapped message at its send period (with a random phase and jitter) and encode it."""
    mapping = (signal_map or load_signal_map()).get(dbc_spec)
    if mapping is None:
        raise KeyError(f"config/can_signals.yaml has no entry for {dbc_spec}; add one to simulate this platform")
    db = load_dbc(dbc_spec)
    t = series["t"]
    dt = float(t[1] - t[0])
    batches = []
    for name, spec in mapping.items():
        msg = db.get_message_by_name(name)
        period = spec["period_ms"] / 1000
        # A message added to the map later draws its timing from its own stream, so adding it
        # leaves every other byte of a simulated drive (and the camera after it) unchanged.
        mrng = np.random.default_rng([zlib.crc32(name.encode()), int(t0 * 1000) % 2**32]) if spec.get("own_timing") else rng
        times = np.arange(mrng.uniform(0, period), t[-1], period)
        idx = np.minimum((times / dt).astype(int), len(t) - 1)
        values = {sig: _physical(s, series, idx) for sig, s in spec["signals"].items()}
        data = encode_message(msg, values, len(times))
        n = len(times)
        batches.append(
            CanFrames(
                timestamp=t0 + times + mrng.normal(0, 50e-6, n).clip(-2e-4, 2e-4),
                frame_id=np.full(n, msg.frame_id, dtype=np.uint32),
                is_extended=np.full(n, bool(msg.is_extended_frame)),
                dlc=np.full(n, msg.length, dtype=np.uint8),
                data=data,
                channel=np.zeros(n, dtype=np.uint8),
            )
        )
    return CanFrames.concat(batches).sort_by_time()
