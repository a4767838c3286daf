"""Vectorized CAN encoding: physical signal arrays -> frame payloads.

The simulator puts a vehicle model on the bus through the real DBC. Encoding a whole
message's time series at once keeps simulation fast; tests check every payload
against cantools' own decoder, so the bit layout is proven, not assumed.
"""

from __future__ import annotations

import numpy as np


def _raw(signal, values: np.ndarray) -> np.ndarray:
    """Physical values -> unsigned raw bit patterns, clipped to the signal's range."""
    lo = signal.minimum if signal.minimum is not None else -np.inf
    hi = signal.maximum if signal.maximum is not None else np.inf
    phys = np.clip(np.asarray(values, dtype=np.float64), lo, hi)
    raw = np.rint((phys - signal.offset) / signal.scale)
    length = signal.length
    if signal.is_signed:
        raw = np.clip(raw, -(2 ** (length - 1)), 2 ** (length - 1) - 1).astype(np.int64)
        return (raw & ((1 << length) - 1)).astype(np.uint64)
    return np.clip(raw, 0, 2**length - 1).astype(np.uint64)


def encode_message(message, values: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Encode ``n`` frames of a classic (<= 8 byte) DBC message; unlisted signals are raw 0.

    Returns uint8 (n, 8). Multiplexed and IEEE-float signals are not supported here
    (the simulator does not send them) and raise ValueError.
    """
    if message.length > 8:
        raise ValueError(f"{message.name}: encoding CAN FD payloads ({message.length} bytes) is not supported")
    little = np.zeros(n, dtype=np.uint64)  # bit i = byte i//8, bit i%8
    big = np.zeros(n, dtype=np.uint64)  # bit 63-p for big-endian linear position p
    for sig in message.signals:
        if sig.name not in values:
            continue
        if sig.is_float or sig.multiplexer_ids:
            raise ValueError(f"{message.name}.{sig.name}: float or multiplexed signals cannot be encoded here")
        raw = _raw(sig, values[sig.name])
        if sig.byte_order == "little_endian":
            little |= raw << np.uint64(sig.start)
        else:
            p_msb = (sig.start // 8) * 8 + (7 - sig.start % 8)
            p_lsb = p_msb + sig.length - 1
            big |= raw << np.uint64(63 - p_lsb)
    data = little.astype("<u8").view(np.uint8).reshape(n, 8) | big.astype(">u8").view(np.uint8).reshape(n, 8)
    return data
