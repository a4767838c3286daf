"""CanFrames, log files (.blf/.asc/.mf4) and ``decode_logs``: complete reads or a CanLogError."""

from __future__ import annotations

from pathlib import Path

import can
import numpy as np
import pyarrow.parquet as pq
import pytest

from avops.can.cli import DecodeSummary, decode_logs
from avops.can.dbc import dbc_sha256, load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.frames import CanFrames
from avops.can.logs import CanLogError, read_can_log, write_can_log

SUFFIXES = [".blf", ".asc", ".mf4"]
# Each format's timestamp resolution after a round trip (all are ~1 µs or better).
TIME_TOLERANCE = {".blf": 1e-6, ".asc": 1e-6, ".mf4": 1e-6}


def mixed_frames(n: int = 3000, seed: int = 0, t0: float = 1_718_000_000.123456) -> CanFrames:
    """Standard and extended ids, classic and CAN FD lengths, three channels, sub-µs times."""
    rng = np.random.default_rng(seed)
    dlc = rng.choice(np.array([0, 1, 3, 8, 8, 8, 12, 24, 64], np.uint8), n)
    data = rng.integers(0, 256, (n, 64), dtype=np.uint8)
    data[np.arange(64)[None, :] >= dlc[:, None]] = 0
    ext = rng.random(n) < 0.3
    ids = np.where(ext, rng.integers(0, 0x20000000, n), rng.integers(0, 0x800, n)).astype(np.uint32)
    return CanFrames(
        timestamp=t0 + np.cumsum(rng.random(n) * 2e-3),
        frame_id=ids,
        is_extended=ext,
        dlc=dlc,
        data=data,
        channel=rng.integers(0, 3, n).astype(np.uint8),
    )


def assert_same_frames(got: CanFrames, want: CanFrames, tol: float) -> None:
    assert len(got) == len(want)
    for name in ("frame_id", "is_extended", "dlc", "data", "channel"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.abs(got.timestamp - want.timestamp).max() <= tol


# ------------------------------------------------------------------ CanFrames


def test_frames_validation_names_the_problem() -> None:
    good = mixed_frames(10)
    fields = {k: getattr(good, k) for k in ("timestamp", "frame_id", "is_extended", "dlc", "data", "channel")}
    with pytest.raises(ValueError, match="frame_id must have dtype uint32"):
        CanFrames(**{**fields, "frame_id": fields["frame_id"].astype(np.int64)})
    with pytest.raises(ValueError, match="channel has 9 rows"):
        CanFrames(**{**fields, "channel": fields["channel"][:9]})
    with pytest.raises(ValueError, match="width must be 8 or 64"):
        CanFrames(**{**fields, "data": np.zeros((10, 16), np.uint8)})
    with pytest.raises(ValueError, match="payload length of 10"):
        CanFrames(**{**fields, "dlc": np.full(10, 10, np.uint8)})
    with pytest.raises(ValueError, match="standard .* above 0x7FF"):
        CanFrames(**{**fields, "frame_id": np.full(10, 0x800, np.uint32), "is_extended": np.zeros(10, bool)})
    with pytest.raises(ValueError, match="without the extended flag"):
        CanFrames(**{**fields, "frame_id": np.full(10, 0x80000001, np.uint32)})


def test_frames_concat_sort_and_messages() -> None:
    classic = CanFrames.from_messages(
        [
            can.Message(timestamp=5.0, arbitration_id=0x10, data=b"\x01\x02"),
            can.Message(timestamp=1.0, arbitration_id=0x1ABCDEF, is_extended_id=True, data=bytes(8)),
        ]
    )
    assert classic.width == 8 and classic.dlc.tolist() == [2, 8]
    fd = CanFrames.from_messages(
        [can.Message(timestamp=3.0, arbitration_id=0x20, data=bytes(range(12)), is_fd=True, channel=2)]
    )
    assert fd.width == 64
    both = CanFrames.concat([classic, CanFrames.empty(), fd])
    assert len(both) == 3 and both.width == 64
    assert both.data[0, :3].tolist() == [1, 2, 0]
    ordered = both.sort_by_time()
    assert ordered.timestamp.tolist() == [1.0, 3.0, 5.0]
    assert ordered.frame_id.tolist() == [0x1ABCDEF, 0x20, 0x10]
    assert ordered.channel.tolist() == [0, 2, 0]
    # A 64-wide batch without long frames is narrowed to 8 (the documented invariant).
    assert both.take(np.array([0, 1])).width == 8
    skipped = CanFrames.from_messages([can.Message(is_error_frame=True), can.Message(is_remote_frame=True, dlc=4)])
    assert len(skipped) == 0
    back = both.to_messages()
    assert [bytes(m.data) for m in back] == [b"\x01\x02", bytes(8), bytes(range(12))]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_ids_data_flags_channels_and_times(tmp_path: Path, suffix: str) -> None:
    frames = mixed_frames()
    path = tmp_path / f"drive{suffix}"
    write_can_log(path, frames)
    assert_same_frames(read_can_log(path), frames, TIME_TOLERANCE[suffix])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_classic_only_and_unsorted_input(tmp_path: Path, suffix: str) -> None:
    frames = mixed_frames(500, seed=1)
    frames = frames.take(frames.dlc <= 8)
    shuffled = frames.take(np.random.default_rng(2).permutation(len(frames)))
    path = tmp_path / f"c{suffix}"
    write_can_log(path, shuffled)  # loggers write in time order; so does write_can_log
    got = read_can_log(path)
    assert got.width == 8
    assert_same_frames(got, frames, TIME_TOLERANCE[suffix])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_python_can_reads_what_we_write(tmp_path: Path, suffix: str) -> None:
    frames = mixed_frames(200, seed=4)
    path = tmp_path / f"x{suffix}"
    write_can_log(path, frames)
    reader = {".blf": can.BLFReader, ".asc": can.ASCReader, ".mf4": can.MF4Reader}[suffix]
    with reader(path) as r:
        msgs = list(r)
    assert [m.arbitration_id for m in msgs] == frames.frame_id.tolist()
    assert [bytes(m.data) for m in msgs] == [frames.data[i, : frames.dlc[i]].tobytes() for i in range(len(frames))]
    if suffix == ".blf":  # python-can turns the other formats' dates into local time
        assert np.allclose([m.timestamp for m in msgs], frames.timestamp, rtol=0, atol=1e-6)


def test_reads_python_can_mf4writer_output(tmp_path: Path) -> None:
    frames = mixed_frames(100, seed=5)
    path = tmp_path / "pc.mf4"
    with can.MF4Writer(path) as writer:  # start time = now, naive local: the local-time header flag
        for msg in frames.to_messages():
            writer.on_message_received(msg)
    got = read_can_log(path)
    assert got.frame_id.tolist() == frames.frame_id.tolist()
    assert np.array_equal(got.data, frames.data)
    assert np.abs(got.timestamp - frames.timestamp).max() < 1e-5


def test_asc_header_time_is_utc_with_padded_milliseconds(tmp_path: Path) -> None:
    t0 = 1_700_000_000.045_678  # 2023-11-14 22:13:20.045678 UTC; python-can would write ".45"
    frames = mixed_frames(5, t0=t0)
    path = tmp_path / "t.asc"
    write_can_log(path, frames)
    text = path.read_text()
    assert "Begin Triggerblock Tue Nov 14 22:13:20.045 2023" in text
    assert text.rstrip().endswith("End TriggerBlock")
    assert abs(read_can_log(path).timestamp[0] - frames.timestamp[0]) < 1e-6


# ------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_empty_random_and_wrong_files(tmp_path: Path, suffix: str) -> None:
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CanLogError) as err:
        read_can_log(empty)
    assert err.value.reason == "empty" and err.value.path == empty
    noise = tmp_path / f"noise{suffix}"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CanLogError) as err:
        read_can_log(noise)
    assert err.value.reason == "not_a_can_log"
    text = tmp_path / f"text{suffix}"
    text.write_text("timestamp,id,data\n1.0,0x100,00\n")
    with pytest.raises(CanLogError) as err:
        read_can_log(text)
    assert err.value.reason == "not_a_can_log"


def test_wrong_extension(tmp_path: Path) -> None:
    path = tmp_path / "drive.trc"
    path.write_text("x")
    with pytest.raises(CanLogError) as err:
        read_can_log(path)
    assert err.value.reason == "unsupported_format"
    with pytest.raises(CanLogError) as err:
        write_can_log(tmp_path / "out.csv", mixed_frames(3))
    assert err.value.reason == "unsupported_format"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_files_never_return_partial_data(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"full{suffix}"
    write_can_log(path, mixed_frames(20000, seed=7))
    raw = path.read_bytes()
    cut_path = tmp_path / f"cut{suffix}"
    # (an ASC cut only through its final newline is complete, hence -2 rather than -1)
    for cut in (10, 200, len(raw) // 3, len(raw) // 2, len(raw) - 100, len(raw) - 2):
        cut_path.write_bytes(raw[:cut])
        with pytest.raises(CanLogError) as err:
            read_can_log(cut_path)
        assert err.value.reason == "truncated", (cut, str(err.value))


def test_python_can_blf_reader_silently_returns_a_prefix(tmp_path: Path) -> None:
    """The behaviour read_can_log guards against: no error, just fewer frames."""
    path = tmp_path / "a.blf"
    write_can_log(path, mixed_frames(20000, seed=8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with can.BLFReader(path) as reader:
        partial = list(reader)
    assert 0 < len(partial) < 20000


def test_blf_from_a_logger_that_never_finalized(tmp_path: Path) -> None:
    path = tmp_path / "crash.blf"
    write_can_log(path, mixed_frames(5000, seed=9))
    raw = bytearray(path.read_bytes())
    # python-can writes a placeholder header first (size 144, 0 objects) and fixes it on stop().
    raw[16:24] = (144).to_bytes(8, "little")  # file size
    raw[32:36] = (0).to_bytes(4, "little")  # object count
    path.write_bytes(bytes(raw))
    with pytest.raises(CanLogError) as err:
        read_can_log(path)
    assert err.value.reason == "truncated"


def test_asc_damaged_lines_are_errors_not_skips(tmp_path: Path) -> None:
    path = tmp_path / "a.asc"
    write_can_log(path, mixed_frames(50, seed=10).take(np.arange(50)))
    lines = path.read_text().splitlines()
    frame_line = next(i for i, ln in enumerate(lines) if " Rx " in ln and "CANFD" not in ln)
    cases = {
        "missing bytes": lines[frame_line].rsplit(" ", 2)[0],  # dlc 8 but fewer bytes
        "garbage line": "this is not an event",
        "bad direction": lines[frame_line].replace(" Rx ", " Qx "),  # python-can skips this silently
    }
    for what, replacement in cases.items():
        damaged = lines.copy()
        damaged[frame_line] = replacement
        path.write_text("\n".join(damaged) + "\n")
        with pytest.raises(CanLogError) as err:
            read_can_log(path)
        assert err.value.reason == "corrupt", what
    path.write_text("\n".join(lines[:-1]) + "\n")  # no "End TriggerBlock"
    with pytest.raises(CanLogError) as err:
        read_can_log(path)
    assert err.value.reason == "truncated"


# ------------------------------------------------------------------ decode_logs


def vw_frames(seed: int, n: int, t0: float) -> CanFrames:
    db = load_dbc("opendbc:vw_mqb")
    msgs = [db.get_message_by_name(name) for name in ("ESP_21", "Motor_20", "LWI_01", "VIN_01")]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(msgs) + 1, n)  # the extra index is an id vw_mqb does not know
    ids = np.array([m.frame_id for m in msgs] + [0x7AB], np.uint32)[pick]
    data = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    data[pick == 3, 0] &= 0xFC  # VIN_01_MUX 0 (2 bits) so every VIN frame is valid for cantools too
    return CanFrames(
        timestamp=t0 + np.cumsum(rng.random(n) * 1e-3),
        frame_id=ids,
        is_extended=np.zeros(n, np.bool_),
        dlc=np.full(n, 8, np.uint8),
        data=data,
        channel=np.zeros(n, np.uint8),
    )


def test_decode_logs_writes_one_sorted_parquet_per_message(tmp_path: Path) -> None:
    a, b = vw_frames(1, 4000, 1.7e9 + 10), vw_frames(2, 3000, 1.7e9)  # b is earlier than a
    write_can_log(tmp_path / "a.blf", a)
    write_can_log(tmp_path / "b.asc", b)
    out = tmp_path / "out"
    calls: list[tuple[int, int, str]] = []
    logs = [tmp_path / "a.blf", tmp_path / "b.asc"]
    summary = decode_logs("opendbc:vw_mqb", logs, out, progress=lambda p, d, t: calls.append((d, t, p.name)))
    assert isinstance(summary, DecodeSummary)
    assert calls == [(1, 2, "a.blf"), (2, 2, "b.asc")]
    assert summary.files_read == [tmp_path / "a.blf", tmp_path / "b.asc"]
    assert summary.dbc_sha256 == dbc_sha256("opendbc:vw_mqb")
    unknown = int((a.frame_id == 0x7AB).sum() + (b.frame_id == 0x7AB).sum())
    assert summary.unknown_ids == {0x7AB: unknown}
    assert summary.frames_read == 7000 and summary.frames_decoded == 7000 - unknown
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ESP_21.parquet", "LWI_01.parquet", "Motor_20.parquet", "VIN_01.parquet"]

    db = load_dbc("opendbc:vw_mqb")
    expected = VectorizedDecoder(db).decode(CanFrames.concat([a, b]).sort_by_time())
    for name, table in expected.tables.items():
        got = pq.read_table(out / f"{name}.parquet")
        assert got.column_names == ["timestamp"] + [s.name for s in db.get_message_by_name(name).signals]
        assert summary.rows_per_message[name] == got.num_rows == table.num_rows
        ts = got.column("timestamp").to_numpy()
        assert np.all(np.diff(ts) >= 0)
        assert np.allclose(ts, table.column("timestamp").to_numpy(), rtol=0, atol=1e-6)
        for col in table.column_names[1:]:
            assert got.column(col).to_pylist() == table.column(col).to_pylist(), (name, col)
    # Spot-check against cantools directly.
    first = a.take(np.flatnonzero(a.frame_id == db.get_message_by_name("LWI_01").frame_id)[:1])
    lwi = db.decode_message(int(first.frame_id[0]), first.data[0].tobytes(), decode_choices=False)
    row = pq.read_table(out / "LWI_01.parquet").to_pylist()
    match = [r for r in row if abs(r["timestamp"] - first.timestamp[0]) < 1e-6][0]
    assert all(abs(match[k] - float(v)) < 1e-9 for k, v in lwi.items())


def test_decode_logs_leaves_out_dir_alone_when_a_log_is_bad(tmp_path: Path) -> None:
    write_can_log(tmp_path / "ok.blf", vw_frames(3, 500, 1.7e9))
    bad = tmp_path / "bad.blf"
    write_can_log(bad, vw_frames(4, 20000, 1.7e9))
    bad.write_bytes(bad.read_bytes()[:-500])
    out = tmp_path / "out"
    out.mkdir()
    (out / "ESP_21.parquet").write_bytes(b"previous run")
    with pytest.raises(CanLogError):
        decode_logs("opendbc:vw_mqb", [tmp_path / "ok.blf", bad], out)
    assert [p.name for p in out.iterdir()] == ["ESP_21.parquet"]
    assert (out / "ESP_21.parquet").read_bytes() == b"previous run"
    summary = decode_logs("opendbc:vw_mqb", [tmp_path / "ok.blf"], out)
    assert pq.read_table(out / "ESP_21.parquet").num_rows == summary.rows_per_message["ESP_21"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
