"""Raw CAN frames as column arrays.

Drive logs hold millions of frames; a list of ``can.Message`` objects costs
~1 µs and ~500 bytes per frame, so everything past the log reader works on
these columns instead, which the vectorized decoder can slice without Python
loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import can
import numpy as np

CAN_FD_MAX_LEN = 64
CLASSIC_MAX_LEN = 8
MAX_STD_ID = 0x7FF
MAX_EXT_ID = 0x1FFFFFFF
# Payload lengths a CAN FD frame can have; classic frames use 0..8.
VALID_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
_VALID_LEN_LUT = np.zeros(256, np.bool_)
_VALID_LEN_LUT[list(VALID_LENGTHS)] = True

_DTYPES: dict[str, np.dtype] = {
    "timestamp": np.dtype(np.float64),
    "frame_id": np.dtype(np.uint32),
    "is_extended": np.dtype(np.bool_),
    "dlc": np.dtype(np.uint8),
    "data": np.dtype(np.uint8),
    "channel": np.dtype(np.uint8),
}


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare columns explicitly
class CanFrames:
    """A batch of raw CAN (or CAN FD) frames as column arrays.

    Invariants (checked in ``__post_init__`` so a bad batch fails where it is
    built, not deep inside a decoder): all columns have the same length and
    the dtypes below; ``data`` is ``(n, 8)``, or ``(n, 64)`` when at least one
    frame carries more than 8 bytes (a 64-wide batch of classic frames is
    narrowed to 8 on construction); bytes past ``dlc`` are expected to be 0.
    Error and remote frames are not represented: they carry no signal payload.
    """

    timestamp: np.ndarray  # float64, seconds since the Unix epoch
    frame_id: np.ndarray  # uint32, arbitration id WITHOUT any extended flag bit
    is_extended: np.ndarray  # bool
    dlc: np.ndarray  # uint8, payload length in bytes (0..64)
    data: np.ndarray  # uint8, (n, width) zero-padded, width 8 or 64
    channel: np.ndarray  # uint8 bus channel (0-based)

    def __post_init__(self) -> None:
        for name, dtype in _DTYPES.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"CanFrames.{name} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != dtype:
                raise ValueError(f"CanFrames.{name} must have dtype {dtype}, got {arr.dtype}")
            want_ndim = 2 if name == "data" else 1
            if arr.ndim != want_ndim:
                raise ValueError(f"CanFrames.{name} must be {want_ndim}-D, got shape {arr.shape}")
        n = self.timestamp.shape[0]
        for name in ("frame_id", "is_extended", "dlc", "data", "channel"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(
                    f"CanFrames.{name} has {getattr(self, name).shape[0]} rows, timestamp has {n}"
                )
        if not self.data.flags.c_contiguous:  # the decoder views rows as 64-bit words
            object.__setattr__(self, "data", np.ascontiguousarray(self.data))
        width = self.data.shape[1]
        if width not in (CLASSIC_MAX_LEN, CAN_FD_MAX_LEN):
            raise ValueError(f"CanFrames.data width must be 8 or 64, got {width}")
        if n == 0:
            if width != CLASSIC_MAX_LEN:
                object.__setattr__(self, "data", np.zeros((0, CLASSIC_MAX_LEN), np.uint8))
            return
        max_dlc = int(self.dlc.max())
        if max_dlc > width:
            raise ValueError(f"CanFrames.dlc has a frame of {max_dlc} bytes but data is only {width} wide")
        if not _VALID_LEN_LUT[self.dlc].all():
            bad = int(self.dlc[~_VALID_LEN_LUT[self.dlc]][0])
            raise ValueError(f"CanFrames.dlc has a payload length of {bad} bytes, not a CAN FD length {VALID_LENGTHS}")
        if width == CAN_FD_MAX_LEN and max_dlc <= CLASSIC_MAX_LEN:
            # Keep the documented invariant: 64 wide only when needed (8x less memory).
            object.__setattr__(self, "data", np.ascontiguousarray(self.data[:, :CLASSIC_MAX_LEN]))
        if int(self.frame_id.max()) > MAX_EXT_ID:
            raise ValueError(
                "CanFrames.frame_id has ids above 0x1FFFFFFF: pass the id without the extended flag bit"
            )
        std_ids = self.frame_id[~self.is_extended]
        if std_ids.size and int(std_ids.max()) > MAX_STD_ID:
            raise ValueError("CanFrames.frame_id has a standard (11-bit) frame with an id above 0x7FF")
        if not np.isfinite(self.timestamp).all():
            raise ValueError("CanFrames.timestamp contains NaN or infinite values")

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    @property
    def width(self) -> int:
        """Row width of ``data`` (8 or 64)."""
        return int(self.data.shape[1])

    @classmethod
    def empty(cls) -> CanFrames:
        """A batch with no frames (what a log with no data frames reads as)."""
        return cls(
            timestamp=np.zeros(0, np.float64),
            frame_id=np.zeros(0, np.uint32),
            is_extended=np.zeros(0, np.bool_),
            dlc=np.zeros(0, np.uint8),
            data=np.zeros((0, CLASSIC_MAX_LEN), np.uint8),
            channel=np.zeros(0, np.uint8),
        )

    @classmethod
    def concat(cls, batches: Sequence[CanFrames]) -> CanFrames:
        """Join batches in the given order, widening ``data`` to 64 if any batch needs it."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        width = max(b.width for b in batches)
        data = np.zeros((sum(len(b) for b in batches), width), np.uint8)
        row = 0
        for b in batches:
            data[row : row + len(b), : b.width] = b.data
            row += len(b)
        return cls(
            timestamp=np.concatenate([b.timestamp for b in batches]),
            frame_id=np.concatenate([b.frame_id for b in batches]),
            is_extended=np.concatenate([b.is_extended for b in batches]),
            dlc=np.concatenate([b.dlc for b in batches]),
            data=data,
            channel=np.concatenate([b.channel for b in batches]),
        )

    @classmethod
    def from_messages(cls, messages: Iterable[can.Message]) -> CanFrames:
        """Columns from python-can messages; error and remote frames are skipped (no payload).

        A message whose ``data`` is shorter than its ``dlc`` is an error here: log
        readers produce those for cut-off lines and must not pass them on silently.
        """
        ts: list[float] = []
        ids: list[int] = []
        ext: list[bool] = []
        dlcs: list[int] = []
        chans: list[int] = []
        payloads: list[bytes] = []
        for msg in messages:
            if msg.is_error_frame or msg.is_remote_frame:
                continue
            payload = bytes(msg.data)
            # Classic CAN allows DLC codes 9..15, all meaning 8 bytes.
            if len(payload) != msg.dlc and not (not msg.is_fd and msg.dlc > 8 and len(payload) == 8):
                raise ValueError(
                    f"message 0x{msg.arbitration_id:X} at t={msg.timestamp} has dlc {msg.dlc} "
                    f"but {len(payload)} data bytes"
                )
            ts.append(msg.timestamp)
            ids.append(msg.arbitration_id)
            ext.append(msg.is_extended_id)
            dlcs.append(len(payload))
            chans.append(_channel_number(msg.channel))
            payloads.append(payload)
        n = len(ts)
        if n == 0:
            return cls.empty()
        dlc = np.array(dlcs, dtype=np.uint8)
        width = CAN_FD_MAX_LEN if int(dlc.max()) > CLASSIC_MAX_LEN else CLASSIC_MAX_LEN
        if int(dlc.min()) == width:
            data = np.frombuffer(b"".join(payloads), np.uint8).reshape(n, width).copy()
        else:
            data = np.frombuffer(b"".join(p.ljust(width, b"\0") for p in payloads), np.uint8)
            data = data.reshape(n, width).copy()
        return cls(
            timestamp=np.array(ts, dtype=np.float64),
            frame_id=np.array(ids, dtype=np.uint32),
            is_extended=np.array(ext, dtype=np.bool_),
            dlc=dlc,
            data=data,
            channel=np.array(chans, dtype=np.uint8),
        )

    def to_messages(self) -> list[can.Message]:
        """python-can messages (for the log writers); frames longer than 8 bytes become CAN FD."""
        out = []
        ts = self.timestamp.tolist()
        ids = self.frame_id.tolist()
        ext = self.is_extended.tolist()
        dlc = self.dlc.tolist()
        ch = self.channel.tolist()
        raw = self.data.tobytes()
        w = self.width
        for i in range(len(ts)):
            n = dlc[i]
            out.append(
                can.Message(
                    timestamp=ts[i],
                    arbitration_id=ids[i],
                    is_extended_id=ext[i],
                    dlc=n,
                    data=raw[i * w : i * w + n],
                    channel=ch[i],
                    is_fd=n > CLASSIC_MAX_LEN,
                    check=False,
                )
            )
        return out

    def take(self, index: np.ndarray) -> CanFrames:
        """The frames at ``index`` (integer positions or a boolean mask), in that order."""
        return CanFrames(
            timestamp=self.timestamp[index],
            frame_id=self.frame_id[index],
            is_extended=self.is_extended[index],
            dlc=self.dlc[index],
            data=self.data[index],
            channel=self.channel[index],
        )

    def sort_by_time(self) -> CanFrames:
        """Frames in timestamp order; stable, so equal timestamps keep their log order."""
        if len(self) < 2 or bool(np.all(self.timestamp[1:] >= self.timestamp[:-1])):
            return self
        return self.take(np.argsort(self.timestamp, kind="stable"))


def _channel_number(channel: object) -> int:
    """python-can channels may be None, ints or names like 'can1'; we keep a 0-based number."""
    if channel is None:
        return 0
    if isinstance(channel, int):
        return channel
    number = can.util.channel2int(channel)  # type: ignore[arg-type]
    return 0 if number is None else number
