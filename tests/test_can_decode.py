"""The vectorized decoder must give cantools' numbers for every signal of every frame."""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import cantools
import numpy as np
import pytest

from avops.can.dbc import DbcError, dbc_path, dbc_sha256, load_dbc
from avops.can.decode import VectorizedDecoder
from avops.can.frames import CanFrames

EXT = 0x80000000

# Signed/float/64-bit/CAN FD/extended/nested-multiplexing cases cantools must agree with.
# FdMsg puts signals across 64-bit word boundaries in both byte orders (incl. 64-bit ones
# spanning 9 bytes); ExtMsg and StdMsg share the numeric id 0x100.
TEST_DBC = """VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 StdMsg: 8 ECU
 SG_ LeSigned : 3|13@1- (0.25,-10) [0|0] "" ECU
 SG_ BeSigned : 23|11@0- (1,0) [0|0] "" ECU
 SG_ BeUnsigned : 38|20@0+ (0.1,5) [0|0] "" ECU

BO_ 2147483904 ExtMsg: 8 ECU
 SG_ Le64 : 0|64@1+ (1,0) [0|0] "" ECU

BO_ 2147483905 ExtFloat: 8 ECU
 SG_ F32 : 0|32@1- (1,0) [0|0] "" ECU
 SG_ F32be : 39|32@0- (2,1) [0|0] "" ECU

BO_ 2566844672 J1939Like: 8 ECU
 SG_ Speed : 8|16@1+ (0.00390625,0) [0|250.996] "km/h" ECU
 SG_ BeSigned64 : 7|64@0- (1,0) [0|0] "" ECU

BO_ 302 F64: 8 ECU
 SG_ F64be : 7|64@0- (1,0) [0|0] "" ECU

BO_ 400 FdMsg: 64 ECU
 SG_ LeCross : 60|40@1+ (1,0) [0|0] "" ECU
 SG_ BeCross : 125|50@0- (0.001,0) [0|0] "" ECU
 SG_ Le64Unaligned : 260|64@1- (1,0) [0|0] "" ECU
 SG_ Be64Unaligned : 403|64@0+ (1,0) [0|0] "" ECU
 SG_ Tail : 504|8@1+ (1,0) [0|0] "" ECU
 SG_ F64le : 192|64@1- (1,0) [0|0] "" ECU

BO_ 300 Nested: 8 ECU
 SG_ Mux1 M : 0|4@1+ (1,0) [0|15] "" ECU
 SG_ Mux2 m1M : 8|4@1+ (1,0) [0|15] "" ECU
 SG_ SigA m2 : 16|8@1+ (1,0) [0|0] "" ECU
 SG_ SigB m3 : 16|16@1- (0.5,-1) [0|0] "" ECU
 SG_ SigC m0 : 8|8@1+ (1,0) [0|0] "" ECU
 SG_ Always : 56|8@1+ (1,0) [0|0] "" ECU

SG_MUL_VAL_ 300 Mux2 Mux1 1-1;
SG_MUL_VAL_ 300 SigA Mux2 2-2;
SG_MUL_VAL_ 300 SigB Mux2 3-4;
SG_MUL_VAL_ 300 SigC Mux1 0-0;

SIG_VALTYPE_ 2147483905 F32 : 1;
SIG_VALTYPE_ 2147483905 F32be : 1;
SIG_VALTYPE_ 302 F64be : 2;
SIG_VALTYPE_ 400 F64le : 2;
"""


@pytest.fixture(scope="module")
def test_dbc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dbc") / "test.dbc"
    path.write_text(TEST_DBC)
    return path


def random_frames(
    db: cantools.database.Database,
    n: int,
    seed: int,
    messages: list[cantools.database.can.Message] | None = None,
    valid_mux_share: float = 0.7,
) -> CanFrames:
    """Random payloads; multiplexed messages mostly get a valid selector (cantools raises otherwise)."""
    rng = np.random.default_rng(seed)
    msgs = messages if messages is not None else list(db.messages)
    width = 64 if max(m.length for m in msgs) > 8 else 8
    pick = rng.integers(0, len(msgs), n)
    dlc = np.array([m.length for m in msgs], np.uint8)[pick]
    data = rng.integers(0, 256, (n, width), dtype=np.uint8)
    # Special bit patterns: all ones / all zeros / sign bits set.
    data[rng.random(n) < 0.05] = 0xFF
    data[rng.random(n) < 0.05] = 0
    for k, msg in enumerate(msgs):
        if not msg.is_multiplexed():
            continue
        for row in np.flatnonzero(pick == k):
            if rng.random() < valid_mux_share:
                payload = msg.encode(valid_mux_values(msg, rng), scaling=False, strict=False, padding=False)
                data[row, : msg.length] = np.frombuffer(payload, np.uint8)
    data[np.arange(width)[None, :] >= dlc[:, None]] = 0
    return CanFrames(
        timestamp=1.7e9 + np.cumsum(rng.random(n) * 1e-3),
        frame_id=np.array([m.frame_id for m in msgs], np.uint32)[pick],
        is_extended=np.array([m.is_extended_frame for m in msgs], np.bool_)[pick],
        dlc=dlc,
        data=data,
        channel=np.zeros(n, np.uint8),
    )


def valid_mux_values(msg: cantools.database.can.Message, rng: np.random.Generator) -> dict[str, int]:
    values: dict[str, int] = {}
    for sig in msg.signals:
        raw = int.from_bytes(rng.bytes(8), "little") & ((1 << sig.length) - 1)
        if sig.is_signed and raw >> (sig.length - 1):
            raw -= 1 << sig.length
        if sig.is_multiplexer:
            ids = sorted({i for s in msg.signals if s.multiplexer_signal == sig.name for i in s.multiplexer_ids or ()})
            raw = int(rng.choice(ids)) if ids else raw
        values[sig.name] = raw
    return values


def assert_matches_cantools(db: cantools.database.Database, frames: CanFrames) -> int:
    """Every frame through cantools; every value, and every null, must agree. Returns values compared."""
    result = VectorizedDecoder(db).decode(frames)
    columns = {
        name: {c: (t.column(c).to_numpy(zero_copy_only=False), t.column(c).is_valid().to_numpy(zero_copy_only=False))
               for c in t.column_names}
        for name, t in result.tables.items()
    }
    row_of: dict[str, int] = {}
    compared = cantools_failures = 0
    for i in range(len(frames)):
        fid, ext = int(frames.frame_id[i]), bool(frames.is_extended[i])
        msg = db._frame_id_to_message.get(fid | (EXT if ext else 0))
        if msg is None:
            continue
        row = row_of.get(msg.name, 0)
        row_of[msg.name] = row + 1
        cols = columns[msg.name]
        assert cols["timestamp"][0][row] == frames.timestamp[i]
        payload = frames.data[i, : frames.dlc[i]].tobytes()
        try:
            want = db.decode_message(fid, payload, decode_choices=False, force_extended_id=ext)
        except cantools.database.DecodeError:
            cantools_failures += 1  # e.g. an unknown multiplexer value; checked separately
            continue
        for sig in msg.signals:
            got, valid = cols[sig.name][0][row], cols[sig.name][1][row]
            if sig.name not in want:
                assert not valid, f"{msg.name}.{sig.name} should be null (inactive multiplexed signal)"
                continue
            exp = float(want[sig.name])
            assert valid, f"{msg.name}.{sig.name} is null, cantools says {exp}"
            same = got == exp or (math.isnan(got) and math.isnan(exp)) or abs(got - exp) <= 1e-12 * abs(exp)
            assert same, f"{msg.name}.{sig.name} frame {i} payload {payload.hex()}: avops {got!r} cantools {exp!r}"
            compared += 1
    assert sum(row_of.values()) == result.frames_decoded
    assert cantools_failures < len(frames) // 2
    return compared


def decodable(db: cantools.database.Database) -> list[cantools.database.can.Message]:
    """Messages cantools can decode at all (a few opendbc messages have overlapping signals)."""
    out = []
    for msg in db.messages:
        try:
            msg.decode(bytes(msg.length), decode_choices=False)
        except cantools.database.DecodeError as exc:
            if "multiplexer" not in str(exc):
                continue
        out.append(msg)
    return out


@pytest.mark.parametrize(
    "spec, n",
    [
        ("opendbc:vw_mqb", 6000),  # Intel byte order, 29-bit ids, VIN_01 multiplexed
        ("opendbc:ford_lincoln_base_pt", 6000),  # Motorola, 64-byte CAN FD messages
        ("opendbc:gm_global_a_high_voltage_management", 3000),  # Motorola multiplexed
        ("opendbc:toyota_prius_2010_pt", 2000),
    ],
)
def test_matches_cantools_on_opendbc(spec: str, n: int) -> None:
    db = load_dbc(spec)
    frames = random_frames(db, n, seed=hash(spec) % 1000, messages=decodable(db))
    assert assert_matches_cantools(db, frames) > n


def test_vw_mqb_multiplexed_vin(test_dbc: Path) -> None:
    db = load_dbc("opendbc:vw_mqb")
    vin = db.get_message_by_name("VIN_01")
    frames = random_frames(db, 1500, seed=7, messages=[vin], valid_mux_share=1.0)
    assert assert_matches_cantools(db, frames) > 1500
    table = VectorizedDecoder(db).decode(frames).tables["VIN_01"]
    mux = table.column("VIN_01_MUX").to_numpy()
    # VIN_4 is only sent with mux 1: null elsewhere, present there.
    assert table.column("VIN_4").is_valid().to_numpy(zero_copy_only=False).tolist() == (mux == 1).tolist()


def test_handwritten_dbc_signed_float_fd_extended_nested(test_dbc: Path) -> None:
    db = load_dbc(test_dbc)
    frames = random_frames(db, 8000, seed=3)
    assert frames.width == 64
    assert assert_matches_cantools(db, frames) > 8000
    result = VectorizedDecoder(db).decode(frames)
    assert set(result.tables) == {m.name for m in db.messages}
    assert not result.unknown_ids and not result.frames_short


def test_standard_and_extended_ids_are_different_messages(test_dbc: Path) -> None:
    db = load_dbc(test_dbc)
    data = np.zeros((3, 8), np.uint8)
    data[:, 0] = 0xFF
    frames = CanFrames(
        timestamp=np.array([1.0, 2.0, 3.0]) + 1.7e9,
        frame_id=np.array([0x100, 0x100, 0x102], np.uint32),
        is_extended=np.array([False, True, True]),
        dlc=np.full(3, 8, np.uint8),
        data=data,
        channel=np.zeros(3, np.uint8),
    )
    result = VectorizedDecoder(db).decode(frames)
    assert result.tables["StdMsg"].num_rows == 1
    assert result.tables["ExtMsg"].column("Le64").to_pylist() == [255.0]
    assert result.unknown_ids == {0x102: 1}  # extended 0x102 is unknown even though nothing else is
    assert result.frames_decoded == 2


def test_unknown_ids_and_short_frames_are_counted(test_dbc: Path) -> None:
    db = load_dbc(test_dbc)
    base = random_frames(db, 500, seed=11)
    n = 40
    extra = CanFrames(
        timestamp=np.full(n, 1.8e9),
        frame_id=np.array([0x7FF] * 25 + [0x12C] * 15, np.uint32),
        is_extended=np.zeros(n, np.bool_),
        dlc=np.array([8] * 25 + [4] * 15, np.uint8),
        data=np.zeros((n, 8), np.uint8),
        channel=np.zeros(n, np.uint8),
    )
    result = VectorizedDecoder(db).decode(CanFrames.concat([base, extra]))
    assert result.unknown_ids == {0x7FF: 25}
    assert result.frames_short == {"Nested": 15}
    assert result.frames_decoded == 500
    assert sum(t.num_rows for t in result.tables.values()) == 500


def test_unknown_multiplexer_value_keeps_row_with_nulls(test_dbc: Path) -> None:
    db = load_dbc(test_dbc)
    payloads = [bytes([1, 2, 7, 0, 0, 0, 0, 5]), bytes([1, 9, 0, 0, 0, 0, 0, 6]), bytes([7, 0, 0, 0, 0, 0, 0, 8])]
    frames = CanFrames(
        timestamp=np.arange(3) + 1.7e9,
        frame_id=np.full(3, 300, np.uint32),
        is_extended=np.zeros(3, np.bool_),
        dlc=np.full(3, 8, np.uint8),
        data=np.frombuffer(b"".join(payloads), np.uint8).reshape(3, 8).copy(),
        channel=np.zeros(3, np.uint8),
    )
    table = VectorizedDecoder(db).decode(frames).tables["Nested"]
    assert table.column_names == ["timestamp"] + [s.name for s in db.get_message_by_name("Nested").signals]
    assert table.column("SigA").to_pylist() == [7.0, None, None]
    assert table.column("Mux2").to_pylist() == [2.0, 9.0, None]  # Mux1=7: Mux2 itself inactive
    assert table.column("SigB").to_pylist() == [None, None, None]
    assert table.column("Always").to_pylist() == [5.0, 6.0, 8.0]
    with pytest.raises(cantools.database.DecodeError):  # cantools refuses the whole frame instead
        db.decode_message(300, payloads[1], decode_choices=False)


def test_empty_frames_decode_to_nothing(test_dbc: Path) -> None:
    result = VectorizedDecoder(load_dbc(test_dbc)).decode(CanFrames.empty())
    assert result.tables == {} and result.unknown_ids == {} and result.frames_decoded == 0


def test_decoding_is_vectorized() -> None:
    """A per-frame Python loop cannot do 300k frames in this time; cantools needs ~1 s."""
    db = load_dbc("opendbc:vw_mqb")
    frames = random_frames(db, 300_000, seed=5, messages=[m for m in db.messages if not m.is_multiplexed()])
    decoder = VectorizedDecoder(db)
    decoder.decode(frames)
    best = min(_timed(decoder, frames) for _ in range(3))
    assert best < 0.25, f"decoding 300k frames took {best:.3f} s"


def _timed(decoder: VectorizedDecoder, frames: CanFrames) -> float:
    t0 = time.perf_counter()
    decoder.decode(frames)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ DBC loading


def test_load_dbc_from_opendbc_and_path(test_dbc: Path) -> None:
    db = load_dbc("opendbc:vw_mqb")
    assert db.get_message_by_name("VIN_01").is_multiplexed()
    assert load_dbc("opendbc:vw_mqb") is db  # cached
    path = dbc_path("opendbc:vw_mqb")
    assert path.is_absolute() and path.name == "vw_mqb.dbc"
    assert load_dbc(path) is db  # same file, same cache entry
    assert dbc_sha256("opendbc:vw_mqb") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(load_dbc(str(test_dbc)).messages) == 7


def test_load_dbc_reloads_an_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "a.dbc"
    path.write_text(TEST_DBC)
    first = load_dbc(path)
    path.write_text(TEST_DBC.replace("StdMsg", "Renamed"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = load_dbc(path)
    assert second is not first and "Renamed" in [m.name for m in second.messages]


def test_dbc_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DbcError, match=r"did you mean opendbc:vw_mqb"):
        load_dbc("opendbc:vw_mqbb")
    with pytest.raises(DbcError, match="file not found"):
        load_dbc(tmp_path / "missing.dbc")
    with pytest.raises(DbcError, match="not found"):
        dbc_sha256(tmp_path / "missing.dbc")
    bad = tmp_path / "bad.dbc"
    bad.write_text("BO_ this is not a dbc")
    with pytest.raises(DbcError, match="could not be loaded"):
        load_dbc(bad)
    assert issubclass(DbcError, ValueError)
