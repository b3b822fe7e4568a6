"""Saving and loading H^2 matrices (hmnumba.io.save_h2 / hmnumba.load): exact
round trips of every kind and mode, and refusal of damaged or hostile files
(checksummed but structurally wrong) before any numba kernel sees them."""
import hashlib
import json
import struct

import numpy as np
import pytest

from hmnumba import H2Matrix, HMatrix, load
from hmnumba.h2matrix import GeneralH2Matrix
from hmnumba.kernels import assemble_dense, gaussian, laplace

PREAMBLE = struct.Struct("<8sIIQ32s")


def _points(n, d, seed=0):
    return np.random.default_rng(seed).random((n, d))


def _weights(dtype=np.float64):
    x = np.linspace(0, 1, 90)
    W = 1.0 / (1.0 + 30 * np.abs(x[:, None] - np.linspace(0, 1.2, 70)[None, :]))
    return W.astype(dtype)


CASES = {
    "kernel stored": lambda: H2Matrix.from_kernel(laplace, _points(800, 3), tol=1e-4),
    "kernel stored float64": lambda: H2Matrix.from_kernel(laplace, _points(400, 3), tol=1e-9),
    "kernel on-the-fly": lambda: H2Matrix.from_kernel(gaussian.with_length_scale(0.4),
                                                      _points(400, 2), tol=1e-6,
                                                      mode="on-the-fly"),
    "general float32": lambda: H2Matrix.from_dense(_weights(np.float32), tol=1e-3,
                                                   leaf_size=8, random_state=0),
    "general float64": lambda: H2Matrix.from_dense(_weights(), tol=1e-9, leaf_size=8,
                                                   cluster="index"),
    # symmetric general: converted from a symmetric HMatrix (tol 1e-3: with
    # 300 points in 3-D, a tighter one stores every block dense, no couplings)
    "symmetric float64": lambda: H2Matrix.from_hmatrix(
        HMatrix.from_kernel(laplace, _points(300, 3), tol=1e-3, leaf_size=16)),
    "symmetric float32": lambda: H2Matrix.from_hmatrix(HMatrix.from_dense(
        assemble_dense(laplace, _points(300, 3)).astype(np.float32), tol=1e-3, leaf_size=16,
        symmetric=True)),
}


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    H = CASES[request.param]()
    path = tmp_path_factory.mktemp("h2io") / "a.hmz"
    H.save(path)
    return H, path


def test_round_trip_gives_the_same_kind_and_bits(saved):
    H, path = saved
    G = load(path)
    assert type(G) is type(H)
    assert (G.shape, G.mode, G.tol, G.dtype, G.nbytes) == (H.shape, H.mode, H.tol, H.dtype,
                                                           H.nbytes)
    assert np.array_equal(G.ranks, H.ranks)
    for k, v in H._a.items():
        if isinstance(v, np.ndarray):
            assert G._a[k].dtype == v.dtype and np.array_equal(G._a[k], v), k
    rng = np.random.default_rng(3)
    x, X = rng.standard_normal(H.shape[1]), rng.standard_normal((H.shape[1], 3))
    assert np.array_equal(G @ x, H @ x)
    assert np.array_equal(G @ X, H @ X)
    y = rng.standard_normal(H.shape[0])
    assert np.array_equal(G.rmatvec(y), H.rmatvec(y))
    if isinstance(H, GeneralH2Matrix):
        assert G.error == H.error


@pytest.mark.parametrize("case", ["symmetric float64", "symmetric float32"])
def test_symmetric_file_holds_one_side_and_loads_symmetric(case, tmp_path):
    H = CASES[case]()
    path = tmp_path / "s.hmz"
    H.save(path)
    header, arrays = _decode(path.read_bytes())
    assert header["kind"] == "symmetric"
    assert set(header["meta"]) == {"shape", "tol", "dtype", "error"}
    assert list(arrays) == (["row_" + k for k in ("perm", "level_ptr", "children", "start",
                                                  "stop", "vp", "boff", "basis")]
                            + [b + k for b in ("c", "n")
                               for k in ("_ptr", "_other", "_off", "_flip", "_data")])
    for name in ("c", "n"):
        assert 0 < arrays[name + "_flip"].sum() < arrays[name + "_flip"].size
    G = load(path)
    assert G.symmetric and G._a["col_vp"] is G._a["row_vp"]
    x = np.random.default_rng(4).standard_normal(H.shape[0])
    assert np.array_equal(G.rmatvec(x), G @ x)          # H^T = H, the same lists


def test_saving_twice_gives_identical_bytes(saved, tmp_path):
    H, path = saved
    H.save(tmp_path / "b.hmz")
    assert (tmp_path / "b.hmz").read_bytes() == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["b.hmz"]   # no temporary file left


def test_hmatrix_files_still_load_as_hmatrix(tmp_path):
    H = HMatrix.from_dense(_weights(), tol=1e-6)
    H.save(tmp_path / "h.hmz")
    assert type(load(tmp_path / "h.hmz")) is HMatrix


def test_save_rejects_other_objects(tmp_path):
    from hmnumba.io import save_h2
    with pytest.raises(TypeError, match="H must be an H2Matrix"):
        save_h2(np.eye(3), tmp_path / "x.hmz")


# ---------------------------------------------------------------------------
# an independent decoder / encoder of the documented layout
# ---------------------------------------------------------------------------


def _decode(blob):
    magic, version, reserved, hlen, digest = PREAMBLE.unpack_from(blob)
    assert (magic, version, reserved) == (b"\x89HMZ\r\n\x1a\n", 1, 0)
    text = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    assert hashlib.sha256(text).digest() == digest
    header = json.loads(text)
    assert header["format"] == "hmnumba-h2matrix"
    payload = blob[header["payload_offset"]:]
    arrays = {}
    for name, spec in sorted(header["arrays"].items(), key=lambda kv: kv[1]["offset"]):
        dt = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"]))
        a = np.frombuffer(payload, dt, count, spec["offset"]).reshape(spec["shape"]).copy()
        arrays[name] = a.astype("<i8") if dt.kind == "i" else a
    return header, arrays


def _encode(header, arrays):
    header = json.loads(json.dumps(header))
    payload = b""
    header["arrays"] = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        payload += bytes(-len(payload) % 64)
        header["arrays"][name] = {"dtype": a.dtype.str, "shape": list(a.shape),
                                  "offset": len(payload)}
        payload += a.tobytes()
    header.update(payload_nbytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest(),
                  payload_offset=0)
    while True:
        text = json.dumps(header, sort_keys=True).encode()
        start = -(-(PREAMBLE.size + len(text)) // 64) * 64
        if start == header["payload_offset"]:
            break
        header["payload_offset"] = start
    pre = PREAMBLE.pack(b"\x89HMZ\r\n\x1a\n", 1, 0, len(text), hashlib.sha256(text).digest())
    return pre + text + bytes(start - PREAMBLE.size - len(text)) + payload


def _refused(path, blob, match=None):
    path.write_bytes(blob)
    with pytest.raises(ValueError) as exc:
        load(path)
    assert str(path) in str(exc.value)
    if match is not None:
        assert match in str(exc.value), str(exc.value)
    return str(exc.value)


def test_the_independent_encoder_reproduces_the_file(saved):
    _, path = saved
    blob = path.read_bytes()
    header, arrays = _decode(blob)
    G = load(path)
    path2 = path.with_name("re.hmz")
    path2.write_bytes(_encode(header, arrays))   # int64 instead of int32: still valid
    assert np.array_equal(load(path2).to_dense(), G.to_dense())


def test_damaged_bytes_are_refused(saved, tmp_path):
    _, path = saved
    blob = path.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(blob), 40).tolist() + [len(blob) - 1, 10, 30]:
        bad = bytearray(blob)
        bad[pos] ^= 1 + rng.integers(255)
        _refused(tmp_path / "d.hmz", bytes(bad))
    for cut in (0, 20, 100, len(blob) // 2, len(blob) - 1):
        _refused(tmp_path / "t.hmz", blob[:cut])
    _refused(tmp_path / "x.hmz", blob + b"\0", "trailing bytes")


def _set(name, index, value):
    def edit(a):
        v = value(a) if callable(value) else value
        a[name][index] = v
    return edit


# (cases it applies to, edit of the arrays, words of the expected message)
KERNEL_EDITS = {
    "perm repeats": (_set("perm", 0, lambda a: a["perm"][1]), "perm must be a permutation"),
    "child out of range": (_set("children", 0, lambda a: [a["start"].size, a["start"].size + 1]),
                           "children"),
    "children not consecutive": (_set("children", (0, 1), lambda a: a["children"][0, 0] + 2),
                                 "children"),
    "leaf with one child": (lambda a: a["children"].__setitem__(
        (np.flatnonzero(a["children"][:, 0] < 0)[0], 1), 1), "children"),
    "stop beyond n": (_set("stop", -1, lambda a: a["stop"][-1] + 1000), "node ranges"),
    "split moved": (lambda a: (a["stop"].__setitem__(1, a["stop"][1] + 1),
                               a["start"].__setitem__(2, a["start"][2] + 1)),
                    "split its range"),
    "level_ptr wrong": (_set("level_ptr", 1, 2), "level_ptr"),
    "vec_ptr falls": (_set("vec_ptr", -1, 0), "vec_ptr"),
    "rank grown": (lambda a: a["vec_ptr"].__setitem__(slice(-1, None), a["vec_ptr"][-1] + 1),
                   None),
    "piv out of range": (_set("piv", 0, 10**6), "piv"),
    "piv repeats": (_set("piv", 1, lambda a: a["piv"][0]), "piv"),
    "T_ptr shifted": (_set("T_ptr", -1, lambda a: a["T_ptr"][-1] + 1), "T_ptr"),
    "T one short": (lambda a: a.__setitem__("T", a["T"][:-1]), "T_ptr"),
    "T NaN": (_set("T", 0, np.nan), "T contains NaN"),
    "coupling node out of range": (_set("cb_s", 0, 10**6), "cb_s"),
    "coupling below the diagonal": (lambda a: a["cb_t"].__setitem__(0, a["cb_s"][0]), "cb_t"),
    "near field on an inner node": (_set("nb_t", 0, 0), "near-field"),
    "near field negative": (_set("nb_t", 0, -1), "nb_t"),
}
STORED_EDITS = {
    "c_off wrong": (_set("c_off", -1, lambda a: a["c_off"][-1] + 1), "c_off"),
    "D one short": (lambda a: a.__setitem__("D", a["D"][:-1]), "n_off"),
    "l_rank negative": (_set("l_rank", 0, -1), "l_rank"),
    "l_rank grown": (_set("l_rank", 0, lambda a: a["l_rank"][0] + 1), "l_off"),
    "B infinite": (_set("B", 0, np.inf), "B contains NaN"),
}
OTF_EDITS = {
    "xyz one point short": (lambda a: a.__setitem__("xyz", a["xyz"][:, :-1]), None),
    "skel_xyz NaN": (_set("skel_xyz", (0, 0), np.nan), "skel_xyz contains NaN"),
}
GENERAL_EDITS = {
    "row_perm repeats": (_set("row_perm", 0, lambda a: a["row_perm"][1]), "row_perm"),
    "col child out of range": (_set("col_children", 0, [10**6, 10**6 + 1]), "col_children"),
    "row_boff shifted": (_set("row_boff", -1, lambda a: a["row_boff"][-1] + 1), "row_boff"),
    "basis one short": (lambda a: a.__setitem__("col_basis", a["col_basis"][:-1]), "col_boff"),
    "c_other out of range": (_set("c_other", 0, 10**6), "c_other"),
    "c_off past data": (_set("c_off", 0, lambda a: a["c_data"].size), "c_"),
    "n_toff disagrees": (_set("n_toff", 0, lambda a: a["n_toff"][0] + 1), "n_"),
    "n_ptr falls": (_set("n_ptr", 1, -1), "n_ptr"),
    "n_data NaN": (_set("n_data", 0, np.nan), "n_data contains NaN"),
    "row_vp falls": (_set("row_vp", -1, -1), "row_vp"),
    "near field on the root column": (_set("n_other", 0, 0), None),
}


def _entries(a, name):
    """``(key, other, flip)`` of each entry of the CSR list ``name``."""
    key = np.repeat(np.arange(a["row_start"].size), np.diff(a[name + "_ptr"]))
    return key, a[name + "_other"], a[name + "_flip"]


def _first_flipped(name):
    return lambda a: int(np.flatnonzero(a[name + "_flip"])[0])


def _first_diagonal(a):
    key, other, _ = _entries(a, "n")
    return int(np.flatnonzero(key == other)[0])


def _first_mirrored(a):
    key, other, flip = _entries(a, "c")
    return int(np.flatnonzero((flip == 0) & (key != other))[0])


def _shift_last_block(a):
    # the block at the largest offset and its mirror entry move back by one
    # number: they overlap the block before
    off = a["n_off"]
    off[off == off.max()] -= 1


SYMMETRIC_EDITS = {
    "flip mirrors nothing": (lambda a: a["n_off"].__setitem__(
        _first_flipped("n")(a), a["n_off"][_first_flipped("n")(a)] + 1), "must mirror exactly"),
    "diagonal block flipped": (lambda a: a["n_flip"].__setitem__(_first_diagonal(a), 1),
                               "n_flip must mirror exactly"),
    "mirror left unflipped": (lambda a: a["c_flip"].__setitem__(_first_flipped("c")(a), 0),
                              "unflipped entry of c_ptr"),
    "unflipped entry flipped": (lambda a: a["c_flip"].__setitem__(_first_mirrored(a), 1),
                                "c_flip must mirror exactly"),
    "flip not 0 or 1": (_set("c_flip", 0, 2), "c_flip must hold 0 or 1"),
    "flip one short": (lambda a: a.__setitem__("n_flip", a["n_flip"][:-1]), "n_flip must be"),
    "blocks overlap": (_shift_last_block, "n_data must lie inside it"),
    "n_data one short": (lambda a: a.__setitem__("n_data", a["n_data"][:-1]), "n_data"),
    "c_other out of range": (_set("c_other", 0, 10**6), "c_other must lie in"),
    "n_other negative": (_set("n_other", 0, -1), "n_other must lie in"),
    "n_ptr falls": (_set("n_ptr", 1, -1), "n_ptr"),
    "row_perm repeats": (_set("row_perm", 0, lambda a: a["row_perm"][1]), "row_perm"),
    "row_boff shifted": (_set("row_boff", -1, lambda a: a["row_boff"][-1] + 1), "row_boff"),
    "basis one short": (lambda a: a.__setitem__("row_basis", a["row_basis"][:-1]), "row_boff"),
    "c_data NaN": (_set("c_data", 0, np.nan), "c_data contains NaN"),
}


def _edits(case):
    if case.startswith("symmetric"):
        return SYMMETRIC_EDITS
    if case.startswith("general"):
        return GENERAL_EDITS
    return {**KERNEL_EDITS, **(OTF_EDITS if "on-the-fly" in case else STORED_EDITS)}


@pytest.mark.parametrize("case", ["kernel stored", "kernel on-the-fly", "general float32",
                                  "symmetric float64"])
def test_hostile_arrays_are_refused_with_a_message_naming_the_array(case, tmp_path):
    H = CASES[case]()
    H.save(tmp_path / "ok.hmz")
    header, base = _decode((tmp_path / "ok.hmz").read_bytes())
    reached = set()
    for what, (edit, words) in _edits(case).items():
        arrays = {k: v.copy() for k, v in base.items()}
        try:
            edit(arrays)
        except IndexError:           # the structure this edit needs is absent
            continue
        _refused(tmp_path / "bad.hmz", _encode(header, arrays), words)
        reached.add(what)
    assert len(reached) == len(_edits(case)), set(_edits(case)) - reached


@pytest.mark.parametrize("edit, words", [
    (lambda h: h.__setitem__("kind", "sparse"), "kind"),
    (lambda h: h["meta"].__setitem__("kernel", "cosine"), "kernel must be one of"),
    (lambda h: h["meta"].__setitem__("mode", "lazy"), "mode"),
    (lambda h: h["meta"].__setitem__("n", 0), "n must be"),
    (lambda h: h["meta"].__setitem__("tol", 1.5), "tol"),
    (lambda h: h["meta"].__setitem__("length_scale", -1.0), "length_scale"),
    (lambda h: h["meta"].pop("dim"), "meta must have exactly"),
    (lambda h: h.__setitem__("extra", 1), "unexpected ['extra']"),
    (lambda h: h.__setitem__("kind", "symmetric"), "meta must have exactly"),
])
def test_hostile_header_is_refused(tmp_path, edit, words):
    H = CASES["kernel stored"]()
    H.save(tmp_path / "ok.hmz")
    header, arrays = _decode((tmp_path / "ok.hmz").read_bytes())
    edit(header)
    _refused(tmp_path / "bad.hmz", _encode(header, arrays), words)


def test_array_with_the_wrong_dtype_or_rank_is_refused(tmp_path):
    H = CASES["kernel on-the-fly"]()
    H.save(tmp_path / "ok.hmz")
    header, arrays = _decode((tmp_path / "ok.hmz").read_bytes())
    bad = dict(arrays, perm=arrays["perm"].astype(np.float64))
    _refused(tmp_path / "a.hmz", _encode(header, bad), "array perm: dtype")
    bad = dict(arrays, xyz=arrays["xyz"].astype(np.float32))
    _refused(tmp_path / "b.hmz", _encode(header, bad), "array xyz: dtype")
    bad = dict(arrays, children=arrays["children"].ravel())
    _refused(tmp_path / "c.hmz", _encode(header, bad), "array children: shape")
    bad = {k: v for k, v in arrays.items() if k != "piv"}
    _refused(tmp_path / "d.hmz", _encode(header, bad), "arrays must name exactly")


def test_symmetric_header_and_arrays_must_agree(tmp_path):
    H = CASES["symmetric float64"]()
    H.save(tmp_path / "ok.hmz")
    header, arrays = _decode((tmp_path / "ok.hmz").read_bytes())
    general = dict(header, kind="general")
    _refused(tmp_path / "a.hmz", _encode(general, arrays), "arrays must name exactly")
    square = json.loads(json.dumps(header))
    square["meta"]["shape"] = [300, 301]
    _refused(tmp_path / "b.hmz", _encode(square, arrays), "must be square")
    bad = dict(arrays, c_flip=arrays["c_flip"].astype(np.float64))
    _refused(tmp_path / "c.hmz", _encode(header, bad), "array c_flip: dtype")
