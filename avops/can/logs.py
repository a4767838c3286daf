"""Reading and writing CAN logger files (.blf, .asc, .mf4) as ``CanFrames``.

The one rule here: a file is read completely or not at all. python-can's
readers happily return a prefix of a damaged file (a BLF cut mid-container
yields the frames before the cut, an ASC cut mid-line yields a frame with
missing bytes, ASCReader skips lines it cannot parse), so each format gets
explicit end-of-file checks and every failure becomes a ``CanLogError`` with a
machine-readable ``reason`` that ingest can quarantine on.

Timestamps are absolute (Unix epoch) on both sides; how each format stores them:

* BLF: header start time (SYSTEMTIME, UTC, millisecond resolution) plus a
  per-object offset in ns. Round trip within ~1 µs (float64 at epoch scale).
* ASC: a "Begin Triggerblock <date>" line plus relative times with 6
  decimals. The date line has no zone; avops writes and reads it as UTC
  (python-can uses the machine's local zone, and its writer drops the
  sub-millisecond part of the first timestamp and writes e.g. 45 ms as ".45").
  Round trip within 1 µs.
* MF4: header ``abs_time`` (ns) plus float64 offsets; written in bulk with
  asammdf in python-can's ``CAN_DataFrame`` layout (python-can's MF4Writer
  manages ~11k frames/s) and read back vectorized. Round trip within ~1 µs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import io
import logging
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import can
import numpy as np
from can.io.asc import ASC_MESSAGE_REGEX
from can.io.blf import BLFParseError

from avops.can.frames import CAN_FD_MAX_LEN, CLASSIC_MAX_LEN, CanFrames

LOG = logging.getLogger(__name__)

SUFFIXES = (".blf", ".asc", ".mf4")
_BLF_MAGIC = b"LOGG"
_MDF_MAGIC = b"MDF     "
_MIN_EPOCH = 631152000.0  # 1990-01-01: BLF stores no start time before this (python-can writes zeros)
_UTC = dt.timezone.utc

# Reason codes, short and stable so ingest can branch on them.
MISSING = "missing"
EMPTY = "empty"
NOT_A_CAN_LOG = "not_a_can_log"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNSUPPORTED_FORMAT = "unsupported_format"
NO_START_TIME = "no_start_time"


class CanLogError(Exception):
    """A log file that cannot be read completely; ``reason`` is a short machine-readable code."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


def read_can_log(path: str | Path) -> CanFrames:
    """All data frames of a .blf/.asc/.mf4 log, in file order, with epoch timestamps.

    Error and remote frames are left out (no payload). Raises CanLogError for
    anything that is not a complete, readable CAN log.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CanLogError(path, UNSUPPORTED_FORMAT, f"suffix {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CanLogError(path, MISSING, "file not found") from None
    if size == 0:
        raise CanLogError(path, EMPTY, "0 bytes")
    with path.open("rb") as fh:
        head = fh.read(8)
    if suffix == ".blf":
        if head[:4] != _BLF_MAGIC:
            raise CanLogError(path, NOT_A_CAN_LOG, "no BLF signature 'LOGG'")
        return _read_blf(path, size)
    if suffix == ".mf4":
        if head != _MDF_MAGIC:
            raise CanLogError(path, NOT_A_CAN_LOG, "no MDF signature")
        return _read_mf4(path)
    if head[:4] in (_BLF_MAGIC, b"MDF ") or b"\0" in head:
        raise CanLogError(path, NOT_A_CAN_LOG, "binary content in an .asc file")
    return _read_asc(path)


def write_can_log(path: str | Path, frames: CanFrames) -> None:
    """Write frames as a logger would (time order, absolute start time in the header).

    Frames are written sorted by timestamp: every format stores times as
    offsets from a start time, and BLF clamps negative offsets to zero.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CanLogError(path, UNSUPPORTED_FORMAT, f"cannot write {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    frames = frames.sort_by_time()
    if suffix == ".blf":
        if len(frames) and frames.timestamp[0] < _MIN_EPOCH:
            raise ValueError("BLF needs epoch timestamps (after 1990): its header cannot store an earlier start")
        with can.BLFWriter(path) as writer:
            for msg in frames.to_messages():
                writer.on_message_received(msg)
    elif suffix == ".asc":
        first = frames.timestamp[0] if len(frames) else dt.datetime.now(_UTC).timestamp()
        start = np.floor(first * 1000) / 1000
        with _AscWriter(path, float(start)) as writer:
            for msg in frames.to_messages():
                writer.on_message_received(msg)
    else:
        _write_mf4(path, frames)


# --------------------------------------------------------------------- BLF


def _read_blf(path: Path, size: int) -> CanFrames:
    try:
        reader = can.BLFReader(path)
    except (struct.error, BLFParseError) as exc:
        raise CanLogError(path, TRUNCATED if size < 144 else NOT_A_CAN_LOG, f"BLF header: {exc}") from None
    with reader:  # closes the file
        # python-can stops silently at a cut (it inflates what is there and keeps the rest
        # as a "tail"), so the header's file size is the completeness check. A logger that
        # died before finalizing leaves the initial header (size 144, 0 objects): also caught.
        if reader.file_size != size:
            raise CanLogError(path, TRUNCATED, f"BLF header says {reader.file_size} bytes, file has {size}")
        try:
            messages = list(reader)
        except Exception as exc:  # python-can raises struct/zlib/parse errors mid-file
            raise CanLogError(path, TRUNCATED, f"{type(exc).__name__}: {exc}") from None
        if messages and reader.start_timestamp < _MIN_EPOCH:
            raise CanLogError(path, NO_START_TIME, "BLF header has no measurement start time")
        if getattr(reader, "_tail", b""):
            raise CanLogError(path, TRUNCATED, "last BLF object is incomplete")
        if len(messages) > reader.object_count:
            detail = f"{len(messages)} frames but the header counts {reader.object_count} objects"
            raise CanLogError(path, CORRUPT, detail)
    return _frames_or_corrupt(path, messages)


def _frames_or_corrupt(path: Path, messages: list[can.Message]) -> CanFrames:
    try:
        return CanFrames.from_messages(messages)
    except ValueError as exc:
        raise CanLogError(path, CORRUPT, str(exc)) from None


# --------------------------------------------------------------------- ASC

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ASC_TIMESTAMPED = re.compile(r"^\s*\d+\.\d+\s")
# A line shaped like "<time> <channel> <id> ..." that python-can's frame regex rejects
# is a damaged frame, not one of the other events ASC files contain (statistics, status...).
_ASC_FRAMEISH = re.compile(r"^\s*\d+\.\d+\s+\d+\s+[0-9A-Fa-f]+x?\s", re.IGNORECASE)
_ASC_HEADER = re.compile(
    r"^\s*(date\s|base\s|(no\s+)?internal\s+events|//|begin\s+triggerblock|end\s+triggerblock)", re.I
)


_MONTH_NUMBERS = {m: i for i, m in enumerate(_MONTHS, 1)} | {"Mär": 3, "Mai": 5, "Okt": 10, "Dez": 12}
_ASC_DATE_FORMATS = ("%m %d %I:%M:%S.%f %p %Y", "%m %d %I:%M:%S %p %Y", "%m %d %H:%M:%S.%f %Y", "%m %d %H:%M:%S %Y")


class _UtcAscReader(can.ASCReader):
    """python-can's ASC reader, with header dates taken as UTC instead of the machine's zone."""

    @staticmethod
    def _datetime_to_timestamp(datetime_string: str) -> float:
        # Same formats as python-can (the weekday is already stripped by its regexes).
        parts = datetime_string.split()
        if parts and parts[0] in _MONTH_NUMBERS:
            parts[0] = f"{_MONTH_NUMBERS[parts[0]]:02d}"
        text = " ".join(parts)
        for fmt in _ASC_DATE_FORMATS:
            try:
                return dt.datetime.strptime(text, fmt).replace(tzinfo=_UTC).timestamp()
            except ValueError:
                continue
        raise ValueError(f"unreadable ASC date {datetime_string!r}")


def _read_asc(path: Path) -> CanFrames:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # CANoe on German Windows writes "Mär", "Okt" in cp1252
    lines = text.splitlines()
    content = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not content or not re.match(r"^\s*(date\s|base\s|begin\s+triggerblock|//)", content[0][1], re.I):
        raise CanLogError(path, NOT_A_CAN_LOG, "no ASC header ('date ...' / 'Begin Triggerblock')")
    if not any(re.match(r"^\s*(date\s|begin\s+triggerblock\s)", ln, re.I) for _, ln in content):
        raise CanLogError(path, NO_START_TIME, "ASC file has no date header")
    if not re.match(r"^\s*end\s+triggerblock\s*$", content[-1][1], re.I):
        raise CanLogError(path, TRUNCATED, "ASC file does not end with 'End TriggerBlock'")
    if re.search(r"^\s*base\s+\w+\s+timestamps\s+relative", text, re.I | re.M):
        raise CanLogError(path, UNSUPPORTED_FORMAT, "ASC with relative (delta) timestamps")
    for lineno, line in content:
        if _ASC_HEADER.match(line):
            continue
        if not _ASC_TIMESTAMPED.match(line):
            raise CanLogError(path, CORRUPT, f"line {lineno} is not an ASC event: {line[:60]!r}")
        if _ASC_FRAMEISH.match(line) and not ASC_MESSAGE_REGEX.match(line.strip()):
            raise CanLogError(path, CORRUPT, f"line {lineno} looks like a damaged frame: {line[:60]!r}")
    try:
        messages = list(_UtcAscReader(io.StringIO(text), relative_timestamp=False))
    except Exception as exc:
        raise CanLogError(path, CORRUPT, f"{type(exc).__name__}: {exc}") from None
    return _frames_or_corrupt(path, messages)


def _asc_date(t: float) -> str:
    d = dt.datetime.fromtimestamp(t, tz=_UTC)
    return (
        f"{_DAYS[d.weekday()]} {_MONTHS[d.month - 1]} {d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond // 1000:03d} {d.year}"
    )


class _AscWriter(can.ASCWriter):
    """python-can's ASC writer with a header that round-trips: UTC, start = first frame floored to 1 ms."""

    def __init__(self, file: Path, start: float) -> None:
        self._start = start
        super().__init__(file)
        # Open the trigger block now so relative times count from our millisecond start.
        self.file.write(f"Begin Triggerblock {_asc_date(start)}\n")
        self.header_written = True
        self.started = self.last_timestamp = start
        self.file.write(self.FORMAT_EVENT.format(timestamp=0.0, message="Start of measurement"))

    def _format_header_datetime(self, _ignored: dt.datetime) -> str:
        return _asc_date(self._start)


# --------------------------------------------------------------------- MF4

_STD_FIELDS = "CAN_DataFrame"


@contextlib.contextmanager
def _quiet_asammdf_del() -> Iterator[None]:
    """asammdf's MDF4.__del__ raises AttributeError when its __init__ failed; don't print that."""
    previous = sys.unraisablehook

    def hook(info: sys.UnraisableHookArgs) -> None:
        if isinstance(info.exc_value, AttributeError) and type(info.object).__name__ in ("function", "MDF4"):
            return
        previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _read_mf4(path: Path) -> CanFrames:
    from asammdf import MDF
    from asammdf.blocks.v4_constants import BUS_TYPE_CAN, FLAG_CG_BUS_EVENT, FLAG_HD_LOCAL_TIME

    failure = ""
    with _quiet_asammdf_del():
        try:
            # process_bus_logging=False: asammdf would otherwise inflate all data at open time.
            mdf = MDF(path, process_bus_logging=False)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {str(exc)[:200]}"
        if failure:
            gc.collect()  # the half-built MDF4 sits in a reference cycle; its __del__ fails, inside the hook
    if failure:
        # The file starts with the MDF signature, so a failed parse means a cut or damaged file.
        raise CanLogError(path, TRUNCATED, failure)
    try:
        header = mdf.header
        if header.time_flags & FLAG_HD_LOCAL_TIME:
            start = header.start_time.timestamp()  # naive local wall clock, as python-can writes it
        else:
            start = header.abs_time // 10**9 + (header.abs_time % 10**9) / 1e9
        batches: list[CanFrames] = []
        saw_can_group = False
        for index, group in enumerate(mdf.groups):
            cg = group.channel_group
            source = cg.acq_source
            if not cg.flags & FLAG_CG_BUS_EVENT or source is None or source.bus_type != BUS_TYPE_CAN:
                continue
            saw_can_group = True
            if _STD_FIELDS not in [c.name for c in group.channels] or cg.cycles_nr == 0:
                continue  # error/remote frame groups carry no payload
            try:
                sig = mdf.get(_STD_FIELDS, index)
            except Exception as exc:
                raise CanLogError(path, TRUNCATED, f"group {index}: {type(exc).__name__}: {exc}") from None
            if len(sig.timestamps) != cg.cycles_nr:
                raise CanLogError(path, TRUNCATED, f"group {index}: {len(sig.timestamps)} of {cg.cycles_nr} records")
            batches.append(_mf4_batch(path, sig.samples, np.asarray(sig.timestamps, np.float64) + start))
        if not saw_can_group:
            raise CanLogError(path, NOT_A_CAN_LOG, "MF4 has no CAN bus logging group")
    finally:
        mdf.close()
    frames = CanFrames.concat(batches)
    if len(batches) > 1:
        frames = frames.sort_by_time()
    return frames


def _mf4_batch(path: Path, rec: np.ndarray, timestamp: np.ndarray) -> CanFrames:
    names = rec.dtype.names or ()

    def col(name: str) -> np.ndarray | None:
        full = f"{_STD_FIELDS}.{name}"
        return rec[full] if full in names else None

    raw_id, data = col("ID"), col("DataBytes")
    if raw_id is None or data is None or data.ndim != 2 or data.dtype != np.uint8:
        raise CanLogError(path, UNSUPPORTED_FORMAT, "CAN_DataFrame without fixed-size ID/DataBytes channels")
    raw_id = raw_id.astype(np.uint32)
    ide = col("IDE")
    is_ext = (raw_id & np.uint32(0x80000000)) != 0
    if ide is not None:
        is_ext |= ide.astype(bool)
    length = col("DataLength")
    if length is None:
        dlc_code = col("DLC")
        if dlc_code is None:
            raise CanLogError(path, UNSUPPORTED_FORMAT, "CAN_DataFrame without DLC/DataLength")
        lut = np.array([can.util.dlc2len(i) for i in range(16)], np.uint8)
        length = lut[np.minimum(dlc_code, 15)]
    length = length.astype(np.uint8)
    n = len(raw_id)
    width = CAN_FD_MAX_LEN if n and int(length.max()) > CLASSIC_MAX_LEN else CLASSIC_MAX_LEN
    payload = np.zeros((n, width), np.uint8)
    m = min(width, data.shape[1])
    payload[:, :m] = data[:, :m]
    payload[np.arange(width)[None, :] >= length[:, None]] = 0
    bus = col("BusChannel")
    channel = np.zeros(n, np.uint8) if bus is None else np.maximum(bus.astype(np.int64) - 1, 0).astype(np.uint8)
    try:
        return CanFrames(
            timestamp=np.ascontiguousarray(timestamp),
            frame_id=raw_id & np.uint32(0x1FFFFFFF),
            is_extended=is_ext,
            dlc=length,
            data=payload,
            channel=channel,
        )
    except ValueError as exc:
        raise CanLogError(path, CORRUPT, str(exc)) from None


def _write_mf4(path: Path, frames: CanFrames) -> None:
    """One bulk append in python-can's MF4Writer layout (ASAM bus logging, BusChannel 1-based)."""
    from asammdf import MDF, Signal
    from asammdf.blocks.v4_blocks import SourceInformation
    from asammdf.blocks.v4_constants import BUS_TYPE_CAN, SOURCE_BUS
    from can.io.mf4 import STD_DTYPE

    n = len(frames)
    rec = np.zeros(n, STD_DTYPE)
    rec["CAN_DataFrame.BusChannel"] = frames.channel.astype(np.uint16) + 1
    rec["CAN_DataFrame.ID"] = frames.frame_id
    rec["CAN_DataFrame.IDE"] = frames.is_extended
    len2dlc = np.array([can.util.len2dlc(i) for i in range(65)], np.uint8)
    rec["CAN_DataFrame.DLC"] = len2dlc[frames.dlc]
    rec["CAN_DataFrame.DataLength"] = frames.dlc
    rec["CAN_DataFrame.DataBytes"][:, : frames.width] = frames.data
    rec["CAN_DataFrame.EDL"] = frames.dlc > CLASSIC_MAX_LEN
    # Whole seconds: the header stores int(start * 1e9), exact only for an integral start.
    start = float(np.floor(frames.timestamp[0])) if n else float(np.floor(dt.datetime.now(_UTC).timestamp()))
    mdf = MDF(version="4.10")
    try:
        mdf.header.start_time = dt.datetime.fromtimestamp(start, tz=_UTC)
        mdf.append(
            Signal(
                name=_STD_FIELDS,
                samples=rec,
                timestamps=frames.timestamp - start,
                source=SourceInformation(source_type=SOURCE_BUS, bus_type=BUS_TYPE_CAN),
            )
        )
        mdf.save(path, overwrite=True, compression=2)
    finally:
        mdf.close()
