"""Persistence (DESIGN sections 4 and 7): ``HMatrix.save`` / ``hmnumba.load``.

Round trips are exact (same arrays, same product bits). Damaged and hostile
files are refused with ``ValueError``: random byte damage is caught by the
checksums, and files whose checksums were recomputed after tampering
(written here by an independent encoder that follows the format documented
in :mod:`hmnumba.io`) are caught by the structural validation. A writer killed
with SIGKILL mid-save never damages the previous file.
"""
import hashlib
import io
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time

import joblib
import numpy as np
import pytest

import hmnumba.blocks as hblocks
import hmnumba.io as hio
from hmnumba import HMatrix, load
from hmnumba.kernels import exponential
from reference import smooth_matrix

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARRAY_NAMES = ("row_perm", "col_perm", "row_start", "row_stop", "col_start", "col_stop",
               "rank", "offset", "block_err2", "block_norm2", "data")
PREAMBLE = struct.Struct("<8sIIQ32s")


# ---------------------------------------------------------------------------
# matrices
# ---------------------------------------------------------------------------


def _dense_case(dtype):
    return HMatrix.from_dense(smooth_matrix(150, 110).astype(dtype), tol=1e-6, leaf_size=16,
                              random_state=0)


def _kernel_case():
    rng = np.random.default_rng(1)
    return HMatrix.from_kernel(exponential.with_length_scale(0.5), rng.random((300, 2)),
                               col_points=rng.random((200, 2)) + [0.3, 0.0], tol=1e-6,
                               leaf_size=16)


def _synthetic(m, n, bs, seed, dtype=np.float64, dense_kinds=(0,)):
    """A grid of ``bs x bs`` blocks with random factors, built directly from
    the flat arrays: block ``b`` is dense if ``b % 5`` is in ``dense_kinds``,
    else of rank 0 (``b % 5 == 1``) or ``min(b % 5, m_b, n_b)``."""
    rng = np.random.default_rng(seed)
    r0, c0 = [a.ravel() for a in np.meshgrid(np.arange(0, m, bs), np.arange(0, n, bs),
                                             indexing="ij")]
    r1 = np.minimum(r0 + bs, m)
    c1 = np.minimum(c0 + bs, n)
    kind = np.arange(r0.size) % 5
    mb, nb = r1 - r0, c1 - c0
    rank = np.where(np.isin(kind, dense_kinds), -1,
                    np.where(kind == 1, 0, np.minimum(kind, np.minimum(mb, nb))))
    stored = np.where(rank < 0, mb * nb, rank * (mb + nb))
    offset = np.concatenate([[0], np.cumsum(stored)[:-1]])
    data = rng.standard_normal(int(stored.sum())).astype(dtype)
    return HMatrix.from_arrays((m, n), rng.permutation(m), rng.permutation(n), r0, r1, c0, c1,
                   rank.astype(np.int64), offset.astype(np.int64), data,
                   rng.random(r0.size) * 1e-12, rng.random(r0.size), 1e-3,
                   params={"synthetic": True, "seed": seed})


CASES = {
    "dense-float64": lambda: _dense_case(np.float64),
    "dense-float32": lambda: _dense_case(np.float32),
    "kernel-float64": _kernel_case,
    "synthetic-float32": lambda: _synthetic(70, 90, 16, 3, np.float32),
}


@pytest.fixture(scope="module", params=list(CASES))
def H(request):
    return CASES[request.param]()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A small saved matrix with dense, low-rank and rank-0 blocks."""
    path = tmp_path_factory.mktemp("io") / "small.hmz"
    H = _synthetic(40, 30, 8, 5)
    H.save(path)
    return H, path, path.read_bytes()


# ---------------------------------------------------------------------------
# an independent encoder / decoder of the documented format
# ---------------------------------------------------------------------------


def _decode(blob, widen=True):
    """(header dict, arrays dict) of a file, read as hmnumba.io documents it;
    ``widen``: int64 index arrays and full permutations, as a loader makes
    them (else the arrays as stored)."""
    magic, version, reserved, hlen, digest = PREAMBLE.unpack_from(blob)
    assert (magic, version, reserved) == (b"\x89HMZ\r\n\x1a\n", 1, 0)
    text = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    assert hashlib.sha256(text).digest() == digest
    header = json.loads(text)
    payload = blob[header["payload_offset"]:]
    assert hashlib.sha256(payload).hexdigest() == header["payload_sha256"]
    arrays = {}
    for name in ARRAY_NAMES:
        spec = header["arrays"][name]
        dt = np.dtype(spec["dtype"])
        arrays[name] = np.frombuffer(payload, dt, spec["shape"][0], spec["offset"]).copy()
        if widen and dt.kind == "i":  # int32 where it fits; crafted files get the room of int64
            arrays[name] = arrays[name].astype("<i8")
    for name, size in (("row_perm", header["shape"][0]), ("col_perm", header["shape"][1])):
        if widen and arrays[name].size == 0:  # an identity permutation is not stored
            arrays[name] = np.arange(size, dtype="<i8")
    return header, arrays


def _place_payload(header, allow_nan):
    """Set ``payload_offset`` to the aligned end of the header that holds it
    (a fixed point); returns the header bytes and that offset."""
    while True:
        text = json.dumps(header, sort_keys=True, allow_nan=allow_nan).encode()
        start = -(-(PREAMBLE.size + len(text)) // 64) * 64
        if start == header["payload_offset"]:
            return text, start
        header["payload_offset"] = start


def _encode(header, arrays, edit=None, version=1, reserved=0, allow_nan=False):
    """File bytes with valid checksums: the layout follows ``arrays`` (each in
    its own dtype and length), then ``edit(header)`` may lie about anything,
    then both digests are computed over what is written."""
    header = json.loads(json.dumps(header))
    payload = b""
    header["arrays"] = {}
    for name in ARRAY_NAMES:
        a = np.ascontiguousarray(arrays[name])
        payload += bytes(-len(payload) % 64)
        header["arrays"][name] = {"dtype": a.dtype.str, "shape": [a.size],
                                  "offset": len(payload)}
        payload += a.tobytes()
    header["payload_nbytes"] = len(payload)
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    header["payload_offset"] = 0
    text, start = _place_payload(header, allow_nan)
    if edit is not None:
        offset_before = header["payload_offset"]
        edit(header)
        text = json.dumps(header, sort_keys=True, allow_nan=allow_nan).encode()
        if isinstance(header, dict) and header.get("payload_offset") == offset_before:
            # The edit changed the header's length but not the layout: put
            # the payload at the aligned offset after it, as a writer would.
            text, start = _place_payload(header, allow_nan)
        start = max(start, PREAMBLE.size + len(text))
    pre = PREAMBLE.pack(b"\x89HMZ\r\n\x1a\n", version, reserved, len(text),
                        hashlib.sha256(text).digest())
    return pre + text + bytes(start - PREAMBLE.size - len(text)) + payload


def _assert_refused(path, blob):
    path.write_bytes(blob)
    with pytest.raises(ValueError) as exc:
        load(path)
    assert str(path) in str(exc.value)
    return str(exc.value)


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


def test_round_trip_keeps_every_array_and_attribute(H, tmp_path):
    path = tmp_path / "h.hmz"
    H.save(path)
    H2 = load(path)
    assert H2.shape == H.shape and H2.dtype == H.dtype
    for name in ARRAY_NAMES:
        got, want = getattr(H2, name), getattr(H, name)
        assert got.dtype == (H.dtype if name == "data" else want.dtype)
        assert np.array_equal(got, want), name
    assert H2.tol == H.tol and H2.norm == H.norm
    assert H2.params == json.loads(json.dumps(hio._jsonable(H.params)))
    assert H2.error_bound == H.error_bound and H2.nbytes == H.nbytes
    assert os.listdir(tmp_path) == ["h.hmz"]


def test_products_are_bit_for_bit_equal_after_load(H, tmp_path):
    path = tmp_path / "h.hmz"
    H.save(str(path))
    H2 = load(str(path))
    rng = np.random.default_rng(0)
    m, n = H.shape
    x, X = rng.standard_normal(n).astype(H.dtype), rng.standard_normal((n, 3)).astype(H.dtype)
    y, Y = rng.standard_normal(m).astype(H.dtype), rng.standard_normal((m, 2)).astype(H.dtype)
    for got, want in ((H2 @ x, H @ x), (H2 @ X, H @ X), (H2.rmatvec(y), H.rmatvec(y)),
                      (H2.rmatmat(Y), H.rmatmat(Y)), (H2.to_dense(), H.to_dense())):
        assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("dumps, loads", [
    (pickle.dumps, pickle.loads),
    (lambda H: _joblib_bytes(H), lambda blob: joblib.load(io.BytesIO(blob))),
], ids=["pickle", "joblib"])
def test_pickle_and_joblib_round_trips_are_exact(H, dumps, loads):
    """In-process persistence for trusted data (estimators, caches); unlike
    ``.hmz`` it keeps the kernel source of a ``from_kernel`` matrix."""
    H2 = loads(dumps(H))
    x = np.random.default_rng(3).standard_normal((H.shape[1], 2)).astype(H.dtype)
    assert np.array_equal(H2 @ x, H @ x) and np.array_equal(H2.rmatmat(H @ x), H.rmatmat(H @ x))
    assert H2.params == H.params and H2.tol == H.tol and H2.norm == H.norm
    if H._source is not None:
        assert H2.estimate_error(random_state=0) == H.estimate_error(random_state=0)


def _joblib_bytes(obj):
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def test_transposed_matrix_round_trips(tmp_path):
    H = _dense_case(np.float64).T
    H.save(tmp_path / "t.hmz")
    assert np.array_equal(load(tmp_path / "t.hmz").to_dense(), H.to_dense())


def test_loaded_kernel_matrix_needs_A_for_estimate_error(tmp_path):
    H = _kernel_case()
    H.save(tmp_path / "k.hmz")
    H2 = load(tmp_path / "k.hmz")
    with pytest.raises(ValueError, match="needs A"):
        H2.estimate_error()
    A = H.to_dense()
    assert H2.estimate_error(A, random_state=0) == H.estimate_error(A, random_state=0)


def test_saving_twice_gives_identical_bytes_and_the_documented_layout(tmp_path):
    H = _dense_case(np.float32)
    H.save(tmp_path / "a.hmz")
    H.save(tmp_path / "b.hmz")
    blob = (tmp_path / "a.hmz").read_bytes()
    assert blob == (tmp_path / "b.hmz").read_bytes()
    header, arrays = _decode(blob)
    assert header["format"] == "hmnumba-hmatrix" and header["format_version"] == 1
    assert header["dtype"] == "float32" and header["shape"] == list(H.shape)
    assert header["n_blocks"] == H.n_blocks and header["tol"] == H.tol
    assert header["payload_offset"] % 64 == 0 and len(blob) == (header["payload_offset"]
                                                               + header["payload_nbytes"])
    for name in ARRAY_NAMES:
        assert np.array_equal(arrays[name], getattr(H, name))
    # Index arrays are stored as int32 (they fit), the permutations in full.
    _, stored = _decode(blob, widen=False)
    assert all(stored[name].dtype == "<i4" for name in ARRAY_NAMES[:8])
    assert stored["row_perm"].size == H.shape[0] and stored["col_perm"].size == H.shape[1]
    # The independent encoder reproduces the file exactly, so the hostile
    # files below differ from a valid one only by what each test changes.
    assert _encode(header, stored) == blob


def test_identity_permutations_are_not_stored(tmp_path):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40))
    H = HMatrix.from_dense(W, tol=1e-6, cluster="index", leaf_size=8)
    assert np.array_equal(H.row_perm, np.arange(60))
    H.save(tmp_path / "i.hmz")
    _, stored = _decode((tmp_path / "i.hmz").read_bytes(), widen=False)
    assert stored["row_perm"].size == 0 and stored["col_perm"].size == 0
    H2 = load(tmp_path / "i.hmz")
    assert np.array_equal(H2.row_perm, np.arange(60)) and H2.row_perm.dtype == np.int64
    x = rng.standard_normal(40)
    assert np.array_equal(H2 @ x, H @ x)
    assert H2.nbytes == H.nbytes


def test_zero_matrix_with_empty_data_round_trips(tmp_path):
    H = HMatrix.from_dense(np.zeros((50, 40), np.float32), tol=1e-3, leaf_size=8)
    assert H.data.size == 0 and (H.rank == 0).all()
    H.save(tmp_path / "z.hmz")
    H2 = load(tmp_path / "z.hmz")
    assert H2.data.size == 0 and H2.dtype == np.float32
    assert np.array_equal(H2 @ np.ones(40, np.float32), np.zeros(50, np.float32))


def test_save_through_a_symlink_replaces_its_target(small_file, tmp_path):
    real = tmp_path / "real.hmz"
    real.write_bytes(b"old")
    (tmp_path / "link.hmz").symlink_to(real)
    small_file[0].save(tmp_path / "link.hmz")
    assert (tmp_path / "link.hmz").is_symlink() and real.read_bytes() == small_file[2]


def test_params_that_json_cannot_hold_are_stored_as_repr(tmp_path):
    rs = np.random.RandomState(0)
    H = HMatrix.from_dense(smooth_matrix(64, 64), tol=1e-6, random_state=rs)
    H.params["extra"] = (np.int32(3), np.float64(np.inf), {1: None})
    H.save(tmp_path / "p.hmz")
    params = load(tmp_path / "p.hmz").params
    assert params["random_state"] == repr(rs)
    assert params["extra"] == [3, "inf", {"1": None}]


# ---------------------------------------------------------------------------
# failures with a clear message
# ---------------------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.hmz")


def test_bad_arguments_raise_type_error(tmp_path):
    with pytest.raises(TypeError, match="HMatrix"):
        hio.save(np.eye(3), tmp_path / "x.hmz")
    with pytest.raises(TypeError, match="path"):
        load(3.5)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x89HMZ", "truncated"),
    (b"\x93NUMPY\x01\x00" + bytes(100), ".npy/.npz"),
    (b"PK\x03\x04" + bytes(100), ".npy/.npz"),
    (b"hello world, not an hmz file at all", "bad magic"),
])
def test_not_an_hmz_file(tmp_path, content, message):
    assert message in _assert_refused(tmp_path / "f.hmz", content)


def test_newer_format_version_says_upgrade(small_file, tmp_path):
    header, arrays = _decode(small_file[2])
    msg = _assert_refused(tmp_path / "v.hmz", _encode(header, arrays, version=2))
    assert "newer" in msg and "version 2" in msg and "upgrade" in msg


def test_payload_damage_is_reported_as_a_checksum_mismatch(small_file, tmp_path):
    blob = bytearray(small_file[2])
    blob[-3] ^= 0x10
    assert "payload checksum" in _assert_refused(tmp_path / "d.hmz", bytes(blob))


# ---------------------------------------------------------------------------
# fuzz: random damage
# ---------------------------------------------------------------------------


def _damaged(blob, rng):
    """One random damage of ``blob``: bit flips, truncation, appended bytes
    or an overwritten range, half of them aimed at the preamble and header."""
    hlen = PREAMBLE.size + PREAMBLE.unpack_from(blob)[3] + 64
    b = bytearray(blob)
    where = lambda: int(rng.integers(0, hlen if rng.random() < 0.5 else len(b)))  # noqa: E731
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            b[where()] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del b[where():]
    elif kind == 2:
        b += rng.bytes(int(rng.integers(1, 200)))
    else:
        i = where()
        b[i:i + int(rng.integers(1, 64))] = rng.bytes(int(rng.integers(1, 64)))
    return bytes(b)


def test_random_damage_always_raises_value_error(small_file, tmp_path):
    H, _, blob = small_file
    path = tmp_path / "fuzz.hmz"
    n_refused = 0
    for seed in range(300):
        bad = _damaged(blob, np.random.default_rng(seed))
        if bad == blob:  # unchanged bytes must still load, and be the same matrix
            path.write_bytes(bad)
            assert np.array_equal(load(path).to_dense(), H.to_dense())
            continue
        _assert_refused(path, bad)
        n_refused += 1
    assert n_refused >= 290


def test_every_truncation_of_the_head_raises_value_error(small_file, tmp_path):
    blob = small_file[2]
    header_end = PREAMBLE.size + PREAMBLE.unpack_from(blob)[3]
    for cut in list(range(0, header_end + 80, 7)) + [len(blob) - 1, len(blob) - 8]:
        _assert_refused(tmp_path / "cut.hmz", blob[:cut])


# ---------------------------------------------------------------------------
# hostile files: checksums recomputed, so the validation has to catch them
# ---------------------------------------------------------------------------


def _set(key, value):
    return lambda h: h.__setitem__(key, value)


def _set_array(name, key, value):
    return lambda h: h["arrays"][name].__setitem__(key, value)


HEADER_EDITS = {
    "format name": _set("format", "numpy"),
    "format_version disagrees": _set("format_version", 2),
    "dtype float16": _set("dtype", "float16"),
    "dtype float32 for float64 data": _set("dtype", "float32"),
    "shape one more row": lambda h: h["shape"].__setitem__(0, h["shape"][0] + 1),
    "shape one fewer column": lambda h: h["shape"].__setitem__(1, h["shape"][1] - 1),
    "shape zero": _set("shape", [0, 30]),
    "shape negative": _set("shape", [-40, 30]),
    "shape huge": _set("shape", [2**40, 30]),
    "shape float": _set("shape", [40.0, 30]),
    "shape string": _set("shape", "40x30"),
    "shape 3-D": _set("shape", [40, 30, 1]),
    "n_blocks plus one": lambda h: h.__setitem__("n_blocks", h["n_blocks"] + 1),
    "n_blocks zero": _set("n_blocks", 0),
    "n_blocks bool": _set("n_blocks", True),
    "tol zero": _set("tol", 0.0),
    "tol above one": _set("tol", 1.5),
    "tol string": _set("tol", "1e-3"),
    "tol null": _set("tol", None),
    "norm negative": _set("norm", -1.0),
    "norm beyond float range": _set("norm", 10**400),
    "params a list": _set("params", [1, 2]),
    "checksum not hex": _set("payload_sha256", "z" * 64),
    "checksum of other bytes": _set("payload_sha256", "0" * 64),
    "payload_nbytes larger": lambda h: h.__setitem__("payload_nbytes", h["payload_nbytes"] + 64),
    "payload_offset later": lambda h: h.__setitem__("payload_offset", h["payload_offset"] + 64),
    "unknown field": _set("evil", 1),
    "missing field": lambda h: h.pop("tol"),
    "array missing": lambda h: h["arrays"].pop("data"),
    "array extra": lambda h: h["arrays"].__setitem__("code", {"dtype": "|O", "shape": [1],
                                                              "offset": 0}),
    "array offset negative": _set_array("rank", "offset", -64),
    "array offset huge": _set_array("data", "offset", 2**62),
    "array offset misaligned": lambda h: h["arrays"]["data"].__setitem__(
        "offset", h["arrays"]["data"]["offset"] + 8),
    "arrays overlap": lambda h: h["arrays"]["row_stop"].__setitem__(
        "offset", h["arrays"]["row_start"]["offset"]),
    "array shape negative": _set_array("offset", "shape", [-5]),
    "array shape huge": _set_array("data", "shape", [2**61]),
    "array big-endian": _set_array("rank", "dtype", ">i8"),
    "array int16": _set_array("offset", "dtype", "<i2"),
    "array int64 read as int32": _set_array("offset", "dtype", "<i4"),
    "array object dtype": _set_array("data", "dtype", "|O"),
    "array complex dtype": _set_array("data", "dtype", "<c16"),
    "array extra key": _set_array("data", "strides", [8]),
}


@pytest.mark.parametrize("edit", list(HEADER_EDITS))
def test_hostile_header_is_refused(small_file, tmp_path, edit):
    header, arrays = _decode(small_file[2])
    _assert_refused(tmp_path / "h.hmz", _encode(header, arrays, HEADER_EDITS[edit]))


WRONG_VALUES = ([], [1, 2], {}, {"a": 1}, "x", None, True, 1.5, -1, 0, 2**70)


def test_every_header_field_with_a_wrong_type_is_refused(small_file, tmp_path):
    """Each header field, and each field of each array entry, replaced by
    values of other types and out-of-range numbers (unhashable ones
    included): always ValueError, except where the value is valid (any
    writer string, any params object, any norm >= 0)."""
    header, arrays = _decode(small_file[2])
    path = tmp_path / "w.hmz"
    n_refused = 0
    targets = [(None, key) for key in header if key != "arrays"]
    targets += [(name, key) for name in ARRAY_NAMES for key in ("dtype", "shape", "offset")]
    for name, key in targets:
        current = (header if name is None else header["arrays"][name])[key]
        for value in WRONG_VALUES:
            if type(value) is type(current) and value == current:
                continue
            def edit(h, name=name, key=key, value=value):
                (h if name is None else h["arrays"][name])[key] = value
            blob = _encode(header, arrays, edit)
            if ((key == "writer" and isinstance(value, str))
                    or (key == "params" and isinstance(value, dict))
                    or (key == "norm" and type(value) in (int, float) and value >= 0)):
                path.write_bytes(blob)
                assert load(path).shape == small_file[0].shape
                continue
            msg = _assert_refused(path, blob)
            assert len(msg) < 400
            n_refused += 1
    assert n_refused > 300


@pytest.mark.parametrize("raw", [
    b"[1, 2, 3]", b"{\"format\": 1, \"format\": 2}", b"\xff\xfe not utf-8",
    b"{" * 100_000, b"{\"tol\": NaN}", b"{\"norm\": Infinity}", b"",
])
def test_hostile_header_text_is_refused(tmp_path, raw):
    blob = PREAMBLE.pack(b"\x89HMZ\r\n\x1a\n", 1, 0, len(raw), hashlib.sha256(raw).digest())
    _assert_refused(tmp_path / "t.hmz", blob + raw + bytes(64))


@pytest.mark.parametrize("version, reserved, hlen", [(0, 0, None), (1, 1, None),
                                                     (1, 0, 2**63), (1, 0, 10**9)])
def test_hostile_preamble_is_refused(small_file, tmp_path, version, reserved, hlen):
    blob = bytearray(small_file[2])
    old = PREAMBLE.unpack_from(blob)
    PREAMBLE.pack_into(blob, 0, old[0], version, reserved, old[3] if hlen is None else hlen,
                       old[4])
    _assert_refused(tmp_path / "p.hmz", bytes(blob))


def _first(arrays, cond):
    return int(np.flatnonzero(cond(arrays))[0])


def _edit_entry(name, index, value):
    def edit(a):
        i = index(a) if callable(index) else index
        a[name][i] = value(a, i) if callable(value) else value
    return edit


def _dense(a):
    return a["rank"] < 0


def _lowrank(a):
    return a["rank"] > 0


ARRAY_EDITS = {
    "row_perm repeats an entry": _edit_entry("row_perm", 0, lambda a, i: a["row_perm"][1]),
    "row_perm entry m": _edit_entry("row_perm", 3, 40),
    "col_perm negative": _edit_entry("col_perm", 2, -1),
    "empty block": _edit_entry("row_stop", 0, lambda a, i: a["row_start"][i]),
    "reversed block": _edit_entry("col_stop", 1, lambda a, i: a["col_start"][i] - 1),
    "row_stop beyond m": _edit_entry("row_stop", -1, 41),
    "col_start negative": _edit_entry("col_start", 0, -8),
    "rank below -1": _edit_entry("rank", 0, -2),
    "rank above min(m_b, n_b)": _edit_entry("rank", lambda a: _first(a, _lowrank),
                                            lambda a, i: 9),
    "rank huge": _edit_entry("rank", 2, 2**62),
    "rank grows into the next block": _edit_entry("rank", lambda a: _first(a, _lowrank),
                                                  lambda a, i: a["rank"][i] + 1),
    "offset negative": _edit_entry("offset", 1, -1),
    "offset past data": _edit_entry("offset", lambda a: _first(a, _dense),
                                    lambda a, i: a["data"].size),
    "offset huge": _edit_entry("offset", 0, 2**62),
    "offsets overlap": _edit_entry("offset", lambda a: _first(a, _lowrank),
                                   lambda a, i: a["offset"][0]),
    "data one short": lambda a: a.__setitem__("data", a["data"][:-1]),
    "two blocks swap columns": lambda a: a["col_start"].__setitem__(
        slice(0, 2), a["col_start"][[1, 0]]),
    "duplicate block": lambda a: [a[k].__setitem__(1, a[k][0]) for k in
                                  ("row_start", "row_stop", "col_start", "col_stop")],
    "data NaN": _edit_entry("data", 5, np.nan),
    "data infinite": _edit_entry("data", -1, -np.inf),
    "block_err2 negative": _edit_entry("block_err2", 0, -1e-3),
    "block_norm2 NaN": _edit_entry("block_norm2", 3, np.nan),
    "row_perm float64": lambda a: a.__setitem__("row_perm", a["row_perm"].astype(float)),
    "rank big-endian": lambda a: a.__setitem__("rank", a["rank"].astype(">i8")),
    "data float32 in a float64 file": lambda a: a.__setitem__("data",
                                                              a["data"].astype(np.float32)),
    "col_perm one short": lambda a: a.__setitem__("col_perm", a["col_perm"][:-1]),
    "no blocks": lambda a: [a.__setitem__(k, a[k][:0]) for k in ARRAY_NAMES[2:]],
}


@pytest.mark.parametrize("edit", list(ARRAY_EDITS))
def test_hostile_arrays_are_refused(small_file, tmp_path, edit):
    header, arrays = _decode(small_file[2])
    ARRAY_EDITS[edit](arrays)
    _assert_refused(tmp_path / "a.hmz", _encode(header, arrays))


def test_no_blocks_header_consistent_is_refused(small_file, tmp_path):
    header, arrays = _decode(small_file[2])
    for k in ARRAY_NAMES[2:]:
        arrays[k] = arrays[k][:0]
    header["n_blocks"] = 0
    assert "n_blocks" in _assert_refused(tmp_path / "z.hmz", _encode(header, arrays))


def test_random_structural_tampering_is_refused(small_file, tmp_path):
    """Random single-entry changes that can never describe a valid matrix:
    a block boundary moved (the blocks no longer tile), a stored rank grown
    (the data is packed without gaps, so it overlaps or overflows), an offset
    of a non-empty block moved (likewise), a permutation entry repeated."""
    H, _, blob = small_file
    header, base = _decode(blob)
    m, n = H.shape
    n_blocks = H.n_blocks
    rng = np.random.default_rng(1234)
    messages = set()
    for _ in range(150):
        a = {k: v.copy() for k, v in base.items()}
        kind = rng.integers(4)
        if kind == 0:
            name = ("row_start", "row_stop", "col_start", "col_stop")[rng.integers(4)]
            b = rng.integers(n_blocks)
            limit = m if name.startswith("row") else n
            choices = [v for v in range(-3, limit + 4) if v != a[name][b]]
            a[name][b] = rng.choice(choices)
        elif kind == 1:
            b = rng.choice(np.flatnonzero(a["rank"] >= 0))
            a["rank"][b] += rng.integers(1, 6)
        elif kind == 2:
            stored = np.where(a["rank"] < 0, (a["row_stop"] - a["row_start"])
                              * (a["col_stop"] - a["col_start"]),
                              a["rank"] * (a["row_stop"] - a["row_start"]
                                           + a["col_stop"] - a["col_start"]))
            b = rng.choice(np.flatnonzero(stored > 0))
            choices = [v for v in range(-2, a["data"].size + 3) if v != a["offset"][b]]
            a["offset"][b] = rng.choice(choices)
        else:
            name = ("row_perm", "col_perm")[rng.integers(2)]
            i, j = rng.choice(a[name].size, 2, replace=False)
            a[name][i] = a[name][j]
        msg = _assert_refused(tmp_path / "r.hmz", _encode(header, a))
        messages.add(msg.split(": ", 1)[1].split(" ")[0])
    assert len(messages) >= 3   # several different checks were reached


def test_tiling_check_works_in_chunks(monkeypatch, small_file, tmp_path):
    """The coverage check gives the same verdicts with a tiny chunk size."""
    monkeypatch.setattr(hblocks, "_TILING_CHUNK", 3)
    H, path, blob = small_file
    assert np.array_equal(load(path).to_dense(), H.to_dense())
    header, arrays = _decode(blob)
    ARRAY_EDITS["duplicate block"](arrays)   # widths still sum to n in every row
    assert "starts at column" in _assert_refused(tmp_path / "c.hmz", _encode(header, arrays))


def test_schedule_size_limit(monkeypatch, small_file, tmp_path):
    """A file whose products would need a huge row schedule is refused
    before the schedule is built (here with a lowered limit)."""
    H, path, _ = small_file
    monkeypatch.setattr(hblocks, "MAX_SCHEDULE", H.n_blocks - 1)
    assert "schedule" in _assert_refused(tmp_path / "s.hmz", path.read_bytes())


def test_save_refuses_an_inconsistent_matrix(tmp_path):
    H = _synthetic(40, 30, 8, 5)
    H.rank[0] = 50   # arrays stay writable: save checks them again
    with pytest.raises(ValueError, match="rank"):
        H.save(tmp_path / "x.hmz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failed_write_leaves_old_file_and_no_temp_file(monkeypatch, small_file, tmp_path, step):
    H, _, blob = small_file
    target = tmp_path / "t.hmz"
    target.write_bytes(blob)

    def boom(*args, **kwargs):
        raise OSError("disk on fire")
    monkeypatch.setattr(hio.os, step, boom)
    with pytest.raises(OSError, match="disk on fire"):
        _synthetic(50, 50, 10, 9).save(target)
    monkeypatch.undo()
    assert target.read_bytes() == blob and os.listdir(tmp_path) == ["t.hmz"]


def test_missing_directory_is_an_os_error(small_file, tmp_path):
    with pytest.raises(FileNotFoundError):
        small_file[0].save(tmp_path / "no" / "such" / "dir.hmz")


def test_new_file_gets_umask_permissions_and_replacement_keeps_mode(small_file, tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    target = tmp_path / "m.hmz"
    small_file[0].save(target)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(target, 0o600)
    small_file[0].save(target)
    assert target.stat().st_mode & 0o777 == 0o600


WRITER = """
import sys
from hmnumba import load
from hmnumba.io import save
a, b, target = sys.argv[1:4]
versions = [load(b), load(a)]
i = 0
while True:
    save(versions[i % 2], target)
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def _wait_for_temp_file(directory, pattern, known, proc, timeout=30.0):
    """Poll until a new temporary file of an ongoing save appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(pattern.match(name) for name in set(os.listdir(directory)) - known):
            return True
    return False


def test_sigkill_during_save_never_damages_the_previous_file(tmp_path):
    """A subprocess saves two ~15 MB matrices alternately over one file and is
    SIGKILLed several times: at a random moment, or just after a temporary
    file appeared (mid-write). The file is always exactly one of the two
    complete versions, and the only litter is the documented
    ``.<name>.<random>.tmp`` of an interrupted write."""
    a, b, target = tmp_path / "a.hmz", tmp_path / "b.hmz", tmp_path / "target.hmz"
    big = dict(m=1536, n=1536, bs=32, dense_kinds=(0, 2, 3, 4))
    _synthetic(seed=1, **big).save(a)
    _synthetic(seed=2, **big).save(b)
    versions = {a.read_bytes(), b.read_bytes()}
    target.write_bytes(a.read_bytes())
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = np.random.default_rng(7)
    litter_pattern = re.compile(r"^\.target\.hmz\.[^/]+\.tmp$")
    known = {"a.hmz", "b.hmz", "target.hmz"}
    schedule = ["random", "mid-write", "random", "mid-write", "mid-write"]
    interrupted = 0
    for when in schedule:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(a), str(b), str(target)],
                                stdout=subprocess.PIPE, env=env, cwd=tmp_path)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            if when == "random":
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                assert _wait_for_temp_file(tmp_path, litter_pattern, known, proc)
                time.sleep(rng.uniform(0.0, 0.004))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        assert target.read_bytes() in versions
        assert load(target).shape == (1536, 1536)
        now = set(os.listdir(tmp_path))
        interrupted += len(now - known) > 0
        known = now
    litter = set(os.listdir(tmp_path)) - {"a.hmz", "b.hmz", "target.hmz"}
    assert all(litter_pattern.match(name) for name in litter), litter
    assert len(litter) == interrupted <= len(schedule)
    assert interrupted >= 1   # at least one kill really landed inside a write


# ---------------------------------------------------------------------------
# bounded work and non-regular files (issue #22)
# ---------------------------------------------------------------------------


def _quadratic_schedule(small_file, k):
    """The reproducer: ``k`` full-height rank-0 blocks (one column each) and
    one more column cut into ``k`` rank-0 blocks. A valid tiling whose row
    schedule has ``k**2`` entries, from a file of ``O(k)`` bytes."""
    _, _, blob = small_file
    header, _ = _decode(blob)
    m, n = k, k + 1
    r0 = np.concatenate([np.zeros(k, np.int64), np.arange(k)])
    r1 = np.concatenate([np.full(k, k, np.int64), np.arange(1, k + 1)])
    c0 = np.concatenate([np.arange(k), np.full(k, k, np.int64)])
    c1 = c0 + 1
    nb = 2 * k
    arrays = dict(row_perm=np.arange(m), col_perm=np.arange(n), row_start=r0, row_stop=r1,
                  col_start=c0, col_stop=c1, rank=np.zeros(nb, np.int64),
                  offset=np.zeros(nb, np.int64), block_err2=np.zeros(nb),
                  block_norm2=np.zeros(nb), data=np.zeros(0))
    arrays = {key: np.asarray(v, dtype=np.float64 if key in ("block_err2", "block_norm2", "data")
                              else np.int64) for key, v in arrays.items()}
    header.update(shape=[m, n], n_blocks=nb, dtype="float64")
    return _encode(header, arrays), arrays


@pytest.mark.parametrize("k", [512, 4096])
def test_quadratic_schedule_is_refused_before_it_is_built(small_file, tmp_path, k):
    """k = 4096 took 845 MB (k = 8192: 2.8 GB, 11.7 s) in load(); now the
    schedule's size is checked against the file's blocks and rows first."""
    blob, _ = _quadratic_schedule(small_file, k)
    msg = _assert_refused(tmp_path / "q.hmz", blob)
    assert f"row schedule of {k * k + k} entries" in msg
    assert len(blob) < 200 * k   # from a file of O(k) bytes


def test_quadratic_schedule_refused_by_the_constructor(small_file):
    _, arrays = _quadratic_schedule(small_file, 512)
    with pytest.raises(ValueError, match="schedule"):
        HMatrix.from_arrays((512, 513), tol=1e-3, **arrays)


def test_crafted_schedules_fuzz(small_file, tmp_path):
    """Random mixes of full-height columns and cut columns: a file is
    accepted exactly when its schedules stay within the bound, and then
    loads and applies."""
    rng = np.random.default_rng(7)
    _, _, blob = small_file
    header, _ = _decode(blob)
    seen = set()
    for trial in range(16):
        m = int(rng.integers(8, 400))
        n_full = int(rng.integers(1, 1000))
        cuts = np.unique(np.concatenate([[0, m], rng.integers(1, m, rng.integers(0, m))]))
        r0 = np.concatenate([np.zeros(n_full, np.int64), cuts[:-1]])
        r1 = np.concatenate([np.full(n_full, m, np.int64), cuts[1:]])
        c0 = np.concatenate([np.arange(n_full), np.full(cuts.size - 1, n_full)])
        c1 = c0 + 1
        nb = r0.size
        arrays = dict(row_perm=np.arange(m), col_perm=np.arange(n_full + 1), row_start=r0,
                      row_stop=r1, col_start=c0, col_stop=c1, rank=np.zeros(nb, np.int64),
                      offset=np.zeros(nb, np.int64))
        arrays = {key: np.asarray(v, np.int64) for key, v in arrays.items()}
        arrays.update(block_err2=np.zeros(nb), block_norm2=np.zeros(nb), data=np.zeros(0))
        h = dict(header, shape=[m, n_full + 1], n_blocks=nb, dtype="float64")
        path = tmp_path / f"f{trial}.hmz"
        path.write_bytes(_encode(h, arrays))
        entries = n_full * (cuts.size - 1) + cuts.size - 1
        refused = entries > hblocks.SCHEDULE_PER_ITEM * (nb + m)
        seen.add(refused)
        if refused:
            with pytest.raises(ValueError, match="schedule"):
                load(path)
        else:
            H = load(path)
            assert np.array_equal(H @ np.ones(n_full + 1), np.zeros(m))
    assert seen == {True, False}


def test_load_refuses_a_fifo_without_blocking(tmp_path):
    """load() and `hmnumba info` on a FIFO blocked forever (no writer)."""
    fifo = tmp_path / "pipe.hmz"
    os.mkfifo(fifo)
    outcome = []

    def attempt():
        try:
            load(fifo)
        except ValueError as exc:
            outcome.append(str(exc))

    import threading
    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():   # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load() blocked on a FIFO")
    assert outcome and "FIFO" in outcome[0]


def test_load_refuses_a_directory_and_a_device(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="device"):
            load("/dev/zero")


def test_error_exp_in_header_is_validated(small_file, tmp_path):
    _, path, blob = small_file
    header, arrays = _decode(blob)
    for bad in (1.5, "3", 5000, True):
        msg = _assert_refused(tmp_path / "e.hmz",
                              _encode(header, arrays, edit=lambda h: h.update(error_exp=bad)))
        assert "error_exp" in msg
    H = load(path)
    assert H.error_exp == 0 and "error_exp" not in header
