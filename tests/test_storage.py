"""The packed arrays as one value (DESIGN section 4): :mod:`hmnumba.storage`'s
``Packed`` / ``SymmetricPacked``, which ``construct.build`` returns,
``io`` reads and writes, and ``HMatrix`` wraps."""
import dataclasses
import pickle

import numpy as np
import pytest

from hmnumba import HMatrix, load
from hmnumba.construct import build
from hmnumba.cluster import ClusterTree
from hmnumba.io import read
from hmnumba.storage import Packed, SymmetricPacked


@pytest.fixture(scope="module")
def pair():
    """A full and a symmetric matrix of the same smooth kernel."""
    x = np.linspace(0.0, 1.0, 160)
    A = np.exp(-np.abs(x[:, None] - x[None, :]))
    return (A, HMatrix.from_dense(A, tol=1e-7, leaf_size=16, structure="hierarchical"),
            HMatrix.from_dense(A, tol=1e-7, leaf_size=16, symmetric=True))


def test_hmatrix_wraps_one_storage_value(pair):
    _, H, S = pair
    assert type(H.storage) is Packed and type(S.storage) is SymmetricPacked
    assert not H.symmetric and S.symmetric
    for name in ("rank", "data", "row_perm", "block_err2", "shape", "error_exp"):
        assert getattr(H, name) is getattr(H.storage, name)
    with pytest.raises(AttributeError):
        H.rank = H.rank.copy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        H.storage.rank = H.rank.copy()


def test_loose_arrays_are_refused_by_the_constructor(pair):
    _, H, _ = pair
    with pytest.raises(TypeError, match="HMatrix.from_arrays"):
        HMatrix(H.storage.arrays(), tol=1e-3)
    with pytest.raises(TypeError):   # the layout before the storage value
        HMatrix(H.shape, *H.storage.arrays().values(), 1e-3)


def test_storage_made_from_outside_is_validated(pair):
    _, H, S = pair
    a = H.storage.arrays()
    ok = Packed(H.shape, **a)
    assert np.array_equal(HMatrix(ok, H.tol) @ np.ones(160), H @ np.ones(160))
    bad = dict(a, offset=a["offset"] + a["data"].size)
    with pytest.raises(ValueError, match="HMatrix storage"):
        Packed(H.shape, **bad)
    with pytest.raises(TypeError, match="rank"):
        Packed.from_arrays(H.shape, **dict(a, rank=a["rank"].astype(float)))
    # full storage is no symmetric storage: the mirror blocks overlap
    with pytest.raises(ValueError):
        Packed.from_arrays(H.shape, symmetric=True, **a)
    assert type(Packed.from_arrays(S.shape, symmetric=True, **S.storage.arrays())) \
        is SymmetricPacked


def test_variants_share_one_apply(pair):
    A, H, S = pair
    rng = np.random.default_rng(0)
    x, X = rng.standard_normal(160), rng.standard_normal((160, 20))
    F = S.storage.full()
    assert type(F) is Packed and S.storage.transpose() is S.storage
    for P in (H.storage, S.storage, F):
        for trans in (False, True):
            ref = A.T if trans else A
            assert np.allclose(P._apply(x, trans), ref @ x, rtol=0, atol=1e-5)
            assert np.allclose(P._apply(X, trans), ref @ X, rtol=0, atol=1e-5)
    assert np.array_equal(S @ x, S.storage._apply(x, False))
    assert np.allclose(S.to_dense(), F.to_dense(), rtol=0, atol=1e-14)


def test_build_returns_the_storage_value():
    X = np.random.default_rng(1).random((80, 2))
    tree = ClusterTree.from_points(X, 16)
    Xp = X[tree.perm]
    D = np.exp(-np.sum((Xp[:, None] - Xp[None]) ** 2, axis=-1))
    for symmetric, kind in ((False, Packed), (True, SymmetricPacked)):
        built = build(D, True, tree, tree, np.dtype(np.float64), 1e-8, "strong",
                      symmetric=symmetric)
        assert type(built.storage) is kind and built.n_rounds >= 1
        assert built.storage.shape == (80, 80) and built.storage.row_perm is tree.perm
        assert np.allclose(built.storage._dense_clustered(), D, rtol=0, atol=1e-6)


def test_read_gives_the_storage_value_and_load_wraps_it(pair, tmp_path):
    _, H, S = pair
    for M in (H, S):
        path = tmp_path / "m.hmz"
        M.save(path)
        storage, meta = read(path)
        assert type(storage) is type(M.storage)
        assert meta["tol"] == M.tol and meta["norm"] == M.norm
        for k, v in M.storage.arrays().items():
            assert np.array_equal(getattr(storage, k), v), k
        assert np.array_equal(load(path) @ np.ones(160), M @ np.ones(160))


def test_storage_pickles_its_fields_only(pair):
    _, H, S = pair
    _ = H.storage.row_sched, S.storage.slab_ptr    # caches filled
    for M in (H, S):
        state = M.storage.__getstate__()
        assert set(state) == {f.name for f in dataclasses.fields(M.storage)}
        M2 = pickle.loads(pickle.dumps(M))
        assert type(M2.storage) is type(M.storage)
        assert np.array_equal(M2 @ np.ones(160), M @ np.ones(160))


def test_low_precision_pickles_its_codes():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((96, 6)) @ rng.standard_normal((6, 80))
    H = HMatrix.from_dense(W, tol=1e-2, factor_dtype="int8")
    assert H.encoding is not None
    assert H.storage.__getstate__()["data"] is None
    H2 = pickle.loads(pickle.dumps(H))
    assert np.array_equal(H2.data, H.data) and H2.nbytes == H.nbytes


def _old_layout_state(M):
    """The ``__dict__`` an HMatrix pickled before the storage value had."""
    state = dict(M.storage.arrays(), shape=M.shape, tol=M.tol, norm=M.norm,
                 params=M.params, symmetric=M.symmetric, error_exp=M.error_exp,
                 encoding=M.encoding, outliers=M.outliers, _source=None,
                 _device_arrays=None, _halves=None)
    if M.encoding is not None:
        state["data"] = None
    return state


def test_old_layout_pickles_load(pair):
    _, H, S = pair
    for M in (H, S):
        old = HMatrix.__new__(HMatrix)
        old.__setstate__(_old_layout_state(M))
        assert type(old.storage) is type(M.storage)
        assert np.array_equal(old @ np.ones(160), M @ np.ones(160))
        assert old.tol == M.tol and old.norm == M.norm


def test_unknown_pickle_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="incompatible hmnumba version"):
        HMatrix.__new__(HMatrix).__setstate__({"shape": (3, 3), "tol": 0.1})
