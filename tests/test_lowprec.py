"""Low-precision storage (``factor_dtype``): rounding inside the error bound.

Factors and dense blocks stored as IEEE halves or as 8-bit codes with one
float32 scale per factor column or dense row (:mod:`hmnumba.storage`). The
rounding is measured block by block, so ``||A - H||_F <= tol ||A||_F`` stays
exact; ``nbytes`` counts the stored codes; files, pickles, the estimator and
the CUDA copy carry them. The property: with ``factor_dtype`` set, an
H-matrix stores no more than :class:`QuantizationCompressor` at the error
that quantization reaches (plus one block's metadata, as against SVD in
``test_dominance``), on Gaussian-like weights.
"""
import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmnumba import HMatrix, HMatrixCompressor, load
from hmnumba.baselines import QuantizationCompressor
from hmnumba.storage import encode, run_lengths


def _weights(m, n, seed, dtype, rank=None):
    """Gaussian-like trained weights: Glorot noise plus a few strong directions."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n)) / np.sqrt(n)
    if rank:
        W += rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(n)
    return W.astype(dtype)


def _kernel(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.random(n))
    return 1.0 / (1.0 + 20.0 * np.abs(x[:, None] - x[None, :]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["float16", "int8"])
def test_rounding_is_counted_and_the_bound_holds(kind, dtype):
    A = _kernel(200).astype(dtype)
    tol = 3e-2
    H = HMatrix.from_dense(A, tol=tol, factor_dtype=kind, structure="hierarchical")
    assert H.encoding is not None and H.encoding.kind == kind
    exact = np.linalg.norm(H.to_dense(np.float64) - A.astype(np.float64))
    assert exact <= tol * np.linalg.norm(A.astype(np.float64)) * (1 + 1e-6)
    # The block errors are the errors of the rounded blocks, not of the factors.
    assert np.isclose(np.sqrt(np.sum(H.block_errors ** 2)), exact, rtol=1e-4)
    full = HMatrix.from_dense(A, tol=tol, structure="hierarchical")
    assert H.nbytes < full.nbytes
    assert H.data.dtype == dtype     # the working copy stays in the input's dtype


def test_a_tolerance_below_the_rounding_keeps_full_precision():
    A = _kernel(96)
    H = HMatrix.from_dense(A, tol=1e-6, factor_dtype="int8")
    assert H.encoding is None
    assert "full precision" in H.params["factor_dtype_fallback"]
    assert "full precision" in H.summary()
    assert H.error_bound <= 1e-6


def test_auto_picks_the_cheapest_and_summary_says_so():
    A = _kernel(160)
    sizes = {fd: HMatrix.from_dense(A, tol=1e-2, factor_dtype=fd).nbytes
             for fd in (None, "float16", "int8")}
    H = HMatrix.from_dense(A, tol=1e-2, factor_dtype="auto")
    assert H.nbytes == min(sizes.values())
    assert H.error_bound <= 1e-2
    won = H.encoding.kind if H.encoding is not None else None
    assert sizes[won] == H.nbytes
    if won is not None:
        assert won in H.summary()


def test_int8_dense_block_matches_quantization_exactly():
    W = _weights(64, 48, 1, np.float64)
    q = QuantizationCompressor(bits=8).fit(W)
    runs = np.full(64, 48)
    enc = encode(W.ravel(), runs, "int8", np.float64)
    assert np.array_equal(enc.decode(runs).reshape(W.shape), q.reconstruct())
    assert enc.nbytes == q.nbytes_


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(16, 256), n=st.integers(16, 256), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), rank=st.sampled_from([None, 2, 8]))
def test_never_more_bytes_than_quantization_at_its_error(m, n, seed, dtype, rank):
    W = _weights(m, n, seed, dtype, rank)
    q = QuantizationCompressor(bits=8).fit(W)   # 8-bit per-channel, the default
    e = q.relative_error_ * (1 + 1e-9)
    H = HMatrix.from_dense(W, tol=e, factor_dtype="auto", random_state=0)
    W64 = W.astype(np.float64)
    assert np.linalg.norm(H.to_dense(np.float64) - W64) <= e * np.linalg.norm(W64) * (1 + 1e-6)
    assert H.nbytes <= q.nbytes_ * 1.01 + 256, (H.nbytes, q.nbytes_, H.params)


@pytest.mark.parametrize("kind", ["float16", "int8"])
def test_file_and_pickle_keep_the_codes_and_the_bits(kind, tmp_path):
    A = _kernel(150).astype(np.float32)
    H = HMatrix.from_dense(A, tol=5e-2, factor_dtype=kind, structure="hierarchical")
    path = os.fspath(tmp_path / "h.hmz")
    H.save(path)
    x = np.random.default_rng(0).standard_normal((150, 3)).astype(np.float32)
    for G in (load(path), pickle.loads(pickle.dumps(H))):
        assert G.encoding.kind == kind and G.nbytes == H.nbytes
        assert np.array_equal(G.data, H.data)
        assert np.array_equal(G @ x, H @ x)
        assert G.error_bound == H.error_bound
    # The file holds the codes, not the working copy.
    assert os.path.getsize(path) < A.nbytes / 2


def test_a_damaged_scale_is_refused(tmp_path):
    A = _kernel(100)
    H = HMatrix.from_dense(A, tol=5e-2, factor_dtype="int8", structure="hierarchical")
    assert H.encoding.kind == "int8"
    object.__setattr__(H.encoding, "scales", np.zeros_like(H.encoding.scales))
    path = os.fspath(tmp_path / "bad.hmz")
    H.save(path)
    with pytest.raises(ValueError, match="data_scales"):
        load(path)


def test_estimator_and_unknown_factor_dtype():
    W = _weights(96, 64, 3, np.float32, rank=4)
    comp = HMatrixCompressor(tol=5e-2, factor_dtype="float16", random_state=0).fit(W)
    assert comp.hmatrix_.encoding.kind == "float16"
    assert comp.error_bound_ <= 5e-2
    X = np.ones((2, 64), np.float32)
    assert comp.transform(X).dtype == np.float32
    with pytest.raises(ValueError, match="factor_dtype"):
        HMatrix.from_dense(W, factor_dtype="bfloat16")


def test_run_lengths_follow_the_packed_layout():
    r0 = np.array([0, 0])
    r1 = np.array([3, 3])
    c0 = np.array([0, 2])
    c1 = np.array([2, 6])
    runs = run_lengths(r0, r1, c0, c1, np.array([-1, 2]))
    assert runs.tolist() == [2, 2, 2, 3, 3, 4, 4]


# ---------------------------------------------------------------- outliers


def _spiky(m=256, n=192, rank=6, seed=0, dtype=np.float64):
    """A low-rank array with 1 % large spikes."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    idx = rng.choice(m * n, m * n // 100, replace=False)
    W.ravel()[idx] += rng.choice([-1.0, 1.0], idx.size) * 30 * W.std()
    return W.astype(dtype)


def _pruned_nbytes(W, e):
    """Bytes of PruningCompressor at the largest sparsity meeting ``e``."""
    from hmnumba.baselines import PruningCompressor
    sq = np.sort(np.abs(W).ravel()) ** 2
    n_drop = int(np.searchsorted(np.cumsum(sq), (e * np.linalg.norm(W)) ** 2, side="right"))
    p = PruningCompressor(sparsity=min(n_drop, W.size - 1) / W.size).fit(W)
    assert p.relative_error_ <= e
    return p.nbytes_


@pytest.mark.slow
@pytest.mark.parametrize("tol", [1e-1, 1e-2])
def test_outliers_beat_pruning_and_plain_h_twice_on_spiky_low_rank(tol):
    W = _spiky()
    H = HMatrix.from_dense(W, tol=tol, outliers="auto", random_state=0)
    plain = HMatrix.from_dense(W, tol=tol, random_state=0)
    assert H.outliers is not None and H.params["outliers"] == H.outliers.nnz
    err = np.linalg.norm(H.to_dense() - W) / np.linalg.norm(W)
    assert err <= tol * (1 + 1e-9) and H.error_bound <= tol
    assert np.isclose(err, H.error_bound, rtol=1e-6)
    assert 2 * H.nbytes <= plain.nbytes
    assert 2 * H.nbytes <= _pruned_nbytes(W, tol)
    assert "outliers" in H.summary()


def test_outliers_in_products_transpose_file_and_pickle(tmp_path):
    W = _spiky(96, 80, 3, seed=1, dtype=np.float32)
    H = HMatrix.from_dense(W, tol=5e-2, outliers=40, factor_dtype="float16")
    assert H.outliers.nnz == 40 and H.outliers.indices.dtype == np.int32
    D = H.to_dense(np.float64)
    rng = np.random.default_rng(0)
    x, X, y = rng.standard_normal(80), rng.standard_normal((80, 3)), rng.standard_normal(96)
    assert np.allclose(H @ x, D @ x, rtol=1e-4, atol=1e-3)
    assert np.allclose(H @ X, D @ X, rtol=1e-4, atol=1e-3)
    assert np.allclose(H.T @ y, D.T @ y, rtol=1e-4, atol=1e-3)
    assert np.allclose((-H).to_dense(np.float64), -D)
    assert np.allclose(H.T.to_dense(np.float64), D.T)
    path = os.fspath(tmp_path / "s.hmz")
    H.save(path)
    for G in (load(path), pickle.loads(pickle.dumps(H))):
        assert G.nbytes == H.nbytes and G.outliers.nnz == 40
        assert np.array_equal(G @ X.astype(np.float32), H @ X.astype(np.float32))


def test_outliers_validation():
    W = _spiky(40, 40, 2)
    with pytest.raises(ValueError, match="outliers"):
        HMatrix.from_dense(W, outliers=-1)
    with pytest.raises(ValueError, match="outliers"):
        HMatrix.from_dense(W, outliers="many")
    with pytest.raises(TypeError, match="outliers"):
        HMatrix.from_dense(W, outliers=2.5)
    with pytest.raises(ValueError, match="symmetric"):
        HMatrix.from_dense(W + W.T, outliers=3, symmetric=True)


def test_cli_and_estimator_pick_the_cheapest_storage(tmp_path, capsys):
    from hmnumba.cli import main
    W = _spiky(64, 48, 2, seed=2)
    np.save(tmp_path / "W.npy", W)
    out = os.fspath(tmp_path / "W.hmz")
    assert main(["compress", os.fspath(tmp_path / "W.npy"), "--tol", "1e-2",
                 "--factor-dtype", "auto", "--outliers", "auto", "-o", out]) == 0
    assert "outliers" in capsys.readouterr().out
    H = load(out)
    comp = HMatrixCompressor(tol=1e-2, factor_dtype="auto", outliers="auto",
                             random_state=0).fit(W)
    assert H.nbytes == comp.nbytes_
    assert comp.nbytes_ <= HMatrixCompressor(tol=1e-2, random_state=0).fit(W).nbytes_
    assert np.linalg.norm(H.to_dense() - W) <= 1e-2 * np.linalg.norm(W)


def test_dask_parts_keep_low_precision_and_outliers():
    distributed = pytest.importorskip("distributed")
    from hmnumba.distributed import DistributedHMatrix
    W = _spiky(128, 96, 3, seed=4)
    H = HMatrix.from_dense(W, tol=1e-2, factor_dtype="float16", outliers=50,
                           structure="hierarchical", cluster="index")
    assert H.encoding is not None and H.outliers is not None
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        D = DistributedHMatrix.from_hmatrix(H, client, n_parts=2)
        x = np.random.default_rng(0).standard_normal((96, 2))
        y = np.random.default_rng(1).standard_normal(128)
        assert np.allclose(D.matmat(x), H @ x)
        assert np.allclose(D.rmatvec(y), H.T @ y)
        G = D.gather()
        assert G.nbytes == H.nbytes
        assert np.array_equal(G.to_dense(), H.to_dense())
