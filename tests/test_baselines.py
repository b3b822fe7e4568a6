"""The three baselines against references computed independently here.

Each reference is written out longhand (numpy SVD, a sort of the magnitudes,
explicit rounding) rather than reusing the code under test, and each byte count
is recomputed from the format's definition.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from hmnumba.baselines import (PruningCompressor, QuantizationCompressor, SVDCompressor,
                               pack_bits, svd_rank_for_tol, unpack_bits)


def random_weights(m=60, n=45, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    decay = np.logspace(0, -6, min(m, n))
    U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    return ((U * decay) @ V.T).astype(dtype)


# ----------------------------------------------------------------------- SVD
@pytest.mark.parametrize("rank", [1, 3, 10, 45, 100])
def test_svd_fixed_rank_matches_numpy(rank):
    W = random_weights()
    comp = SVDCompressor(rank=rank).fit(W)
    U, s, Vt = np.linalg.svd(W)
    k = min(rank, 45)
    reference = (U[:, :k] * s[:k]) @ Vt[:k]
    np.testing.assert_allclose(comp.reconstruct(), reference, atol=1e-12)
    assert comp.rank_ == k
    assert comp.nbytes_ == k * (60 + 45) * 8
    assert comp.compression_ratio_ == pytest.approx(60 * 45 / (k * 105))
    expected_err = np.sqrt(np.sum(s[k:] ** 2)) / np.linalg.norm(W)
    assert comp.relative_error_ == pytest.approx(expected_err, rel=1e-6, abs=1e-14)


@pytest.mark.parametrize("tol", [0.5, 1e-2, 1e-4, 1e-7])
def test_svd_tol_picks_the_smallest_sufficient_rank(tol):
    W = random_weights(seed=1)
    comp = SVDCompressor(tol=tol).fit(W)
    s = np.linalg.svd(W, compute_uv=False)
    errors = [np.sqrt(np.sum(s[k:] ** 2)) / np.linalg.norm(s) for k in range(s.size + 1)]
    smallest = min(k for k, e in enumerate(errors) if e <= tol)
    assert comp.rank_ == smallest
    assert comp.relative_error_ <= tol * (1 + 1e-10)


def test_svd_defaults_and_errors():
    W = random_weights()
    assert SVDCompressor().fit(W).relative_error_ <= 1e-3
    with pytest.raises(ValueError, match="either rank or tol"):
        SVDCompressor(rank=2, tol=0.1).fit(W)
    with pytest.raises(ValueError, match="rank"):
        SVDCompressor(rank=0).fit(W)
    with pytest.raises(ValueError, match="tol"):
        SVDCompressor(tol=2.0).fit(W)


def test_svd_of_zero_matrix_stores_nothing():
    comp = SVDCompressor(tol=1e-3).fit(np.zeros((5, 4)))
    assert comp.rank_ == 0 and comp.nbytes_ == 0
    np.testing.assert_array_equal(comp.transform(np.ones((2, 4))), np.zeros((2, 5)))


def test_svd_transform_float32():
    W = random_weights(dtype=np.float32)
    comp = SVDCompressor(rank=5).fit(W)
    X = np.ones((3, 45), np.float32)
    out = comp.transform(X)
    assert out.dtype == np.float32 and comp.nbytes_ == 5 * 105 * 4
    np.testing.assert_allclose(out, X @ comp.reconstruct().T, rtol=1e-5, atol=1e-6)


@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=30), st.floats(1e-6, 0.99))
def test_svd_rank_for_tol_property(values, tol):
    s = np.sort(np.array(values))[::-1]
    k = svd_rank_for_tol(s, tol)
    total = np.sum(s ** 2)
    assert np.sum(s[k:] ** 2) <= tol ** 2 * total * (1 + 1e-12)
    if k > 0:
        assert np.sum(s[k - 1:] ** 2) > tol ** 2 * total


# ------------------------------------------------------------------- pruning
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_pruning_removes_the_smallest_magnitudes(sparsity):
    W = np.random.default_rng(2).standard_normal((50, 40))
    comp = PruningCompressor(sparsity=sparsity).fit(W)
    n_prune = int(round(sparsity * W.size))
    magnitudes = np.sort(np.abs(W).ravel())
    threshold = magnitudes[n_prune - 1] if n_prune else -1.0
    reference = np.where(np.abs(W) > threshold, W, 0.0)       # no ties in Gaussian data
    np.testing.assert_array_equal(comp.reconstruct(), reference)
    nnz = W.size - n_prune
    assert comp.weights_.nnz == nnz
    # CSR: values (float64) + column indices (int32) + row pointers (int32).
    assert comp.nbytes_ == nnz * 8 + nnz * 4 + (50 + 1) * 4
    assert comp.compression_ratio_ == pytest.approx(W.size * 8 / comp.nbytes_)
    expected = np.linalg.norm(W - reference) / np.linalg.norm(W)
    assert comp.relative_error_ == pytest.approx(expected, rel=1e-12, abs=1e-15)
    X = np.random.default_rng(3).standard_normal((7, 40))
    np.testing.assert_allclose(comp.transform(X), X @ reference.T, atol=1e-12)
    Y = np.random.default_rng(4).standard_normal((7, 50))
    np.testing.assert_allclose(comp.adjoint_transform(Y), Y @ reference, atol=1e-12)


def test_pruning_ties_and_rounding_like_torch():
    """round(amount * size) entries go, the lower flat index first on ties."""
    W = np.array([[1.0, -1.0, 2.0, 1.0]])
    out = PruningCompressor(sparsity=0.5).fit(W).reconstruct()
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0, 1.0]])
    assert PruningCompressor(sparsity=0.125).fit(np.arange(1.0, 5.0)[None]).n_pruned_ == 0


def test_pruning_float32_at_half_sparsity_saves_nothing():
    W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    comp = PruningCompressor(sparsity=0.5).fit(W)
    assert comp.compression_ratio_ == pytest.approx(64 * 64 * 4 / (2048 * 8 + 65 * 4))


@pytest.mark.parametrize("sparsity, exc", [(1.0, ValueError), (-0.1, ValueError),
                                           ("half", TypeError)])
def test_pruning_bad_sparsity(sparsity, exc):
    with pytest.raises(exc, match="sparsity"):
        PruningCompressor(sparsity=sparsity).fit(np.ones((3, 3)))


# -------------------------------------------------------------- quantization
def reference_quantize(W, bits, per_channel, symmetric):
    """Longhand quantize/dequantize, one channel (row) at a time."""
    rows = [W[i] for i in range(W.shape[0])] if per_channel else [W.ravel()]
    out, n_scales = [], 0
    for w in rows:
        w = w.astype(np.float64)
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            scale = np.float32(np.max(np.abs(w)) / qmax)
            scale = np.float32(1.0) if scale == 0 else scale
            q = np.clip(np.round(w / np.float64(scale)), -qmax, qmax)
            out.append(np.float64(scale) * q)
        else:
            lo, hi = min(w.min(), 0.0), max(w.max(), 0.0)
            scale64 = (hi - lo) / (2 ** bits - 1)
            zp = np.clip(np.round(-lo / scale64), 0, 2 ** bits - 1) if scale64 > 0 else 0.0
            scale = np.float32(scale64) if scale64 > 0 else np.float32(1.0)
            q = np.clip(np.round(w / np.float64(scale)) + zp, 0, 2 ** bits - 1)
            out.append(np.float64(scale) * (q - zp))
        n_scales += 1
    return np.array(out).reshape(W.shape), n_scales


@pytest.mark.parametrize("bits", [2, 4, 5, 8, 12])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantization_matches_longhand_rounding(bits, per_channel, symmetric):
    rng = np.random.default_rng(bits)
    W = rng.standard_normal((24, 37)) * rng.uniform(0.1, 3, (24, 1)) + 0.3
    comp = QuantizationCompressor(bits=bits, per_channel=per_channel,
                                  symmetric=symmetric).fit(W)
    reference, n_scales = reference_quantize(W, bits, per_channel, symmetric)
    np.testing.assert_allclose(comp.reconstruct(), reference, rtol=1e-6, atol=1e-7)
    code_bytes = -(-W.size * bits // 8)                   # ceil
    expected = code_bytes + 4 * n_scales + (0 if symmetric else 4 * n_scales)
    assert comp.nbytes_ == expected
    assert comp.compression_ratio_ == pytest.approx(W.size * 8 / expected)
    expected_err = np.linalg.norm(W - reference) / np.linalg.norm(W)
    assert comp.relative_error_ == pytest.approx(expected_err, rel=1e-5)
    X = rng.standard_normal((6, 37))
    np.testing.assert_allclose(comp.transform(X), X @ reference.T, rtol=1e-6, atol=1e-6)
    offset = -(2 ** (bits - 1) - 1) if symmetric else 0
    np.testing.assert_array_equal(unpack_bits(comp.packed_codes_, bits, W.size),
                                  comp.codes_.ravel() - offset)


def test_quantization_error_shrinks_with_bits():
    W = np.random.default_rng(0).standard_normal((32, 32))
    errors = [QuantizationCompressor(bits=b).fit(W).relative_error_ for b in (2, 4, 8, 16)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


def test_quantization_zero_channel_and_float32():
    W = np.zeros((3, 5), np.float32)
    W[1] = [1, -2, 3, 0, 0.5]
    comp = QuantizationCompressor(bits=8).fit(W)
    assert comp.reconstruct().dtype == np.float32
    np.testing.assert_array_equal(comp.reconstruct()[0], 0)
    assert comp.transform(np.ones((2, 5), np.float32)).dtype == np.float32


@pytest.mark.parametrize("params, exc, match", [
    ({"bits": 1}, ValueError, "bits"), ({"bits": 17}, ValueError, "bits"),
    ({"bits": 4.0}, TypeError, "bits"), ({"per_channel": "yes"}, TypeError, "per_channel"),
    ({"symmetric": 1}, TypeError, "symmetric"),
])
def test_quantization_bad_parameters(params, exc, match):
    with pytest.raises(exc, match=match):
        QuantizationCompressor(**params).fit(np.ones((3, 3)))


@given(hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 2 ** 11 - 1)))
def test_pack_bits_round_trip(codes):
    packed = pack_bits(codes, 11)
    assert packed.nbytes == -(-codes.size * 11 // 8)
    np.testing.assert_array_equal(unpack_bits(packed, 11, codes.size), codes)


def test_float16_cast_is_nearest_rounding_and_counts_two_bytes():
    from hmnumba.baselines import Float16Compressor
    for dtype in (np.float32, np.float64):
        W = random_weights(dtype=dtype)
        comp = Float16Compressor().fit(W)
        assert comp.nbytes_ == 2 * W.size
        assert comp.compression_ratio_ == W.dtype.itemsize / 2
        np.testing.assert_array_equal(comp.reconstruct(), W.astype(np.float16).astype(dtype))
        assert comp.reconstruct().dtype == dtype
        assert comp.relative_error_ <= 2.0 ** -11
        X = random_weights(5, W.shape[1], seed=1, dtype=dtype)
        np.testing.assert_allclose(comp.transform(X), X @ comp.reconstruct().T, rtol=1e-5)
        Y = random_weights(5, W.shape[0], seed=2, dtype=dtype)
        np.testing.assert_allclose(comp.adjoint_transform(Y), Y @ comp.reconstruct(), rtol=1e-5)


def test_float16_refuses_weights_beyond_its_range():
    from hmnumba.baselines import Float16Compressor
    with pytest.raises(ValueError, match="float16"):
        Float16Compressor().fit(np.array([[1.0, 7e4]]))
