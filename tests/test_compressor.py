"""HMatrixCompressor and the baselines as scikit-learn estimators.

The scikit-learn API contract is checked by ``parametrize_with_checks`` (every
check, none skipped); the H-matrix specific behaviour (guarantee, attributes,
reproducibility, pickling, pipelines, grid search) is tested below.
"""
import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from hmnumba import CompressionWarning, HMatrix, HMatrixCompressor
from hmnumba.baselines import PruningCompressor, QuantizationCompressor, SVDCompressor

ALL_COMPRESSORS = [
    HMatrixCompressor(backend="cpu"),
    HMatrixCompressor(backend="cpu", tol=1e-6, leaf_size=4, cluster="index", method="svd"),
    HMatrixCompressor(backend="cpu", format="h2"),
    SVDCompressor(),
    SVDCompressor(rank=2),
    PruningCompressor(),
    QuantizationCompressor(),
    QuantizationCompressor(bits=4, per_channel=False, symmetric=False),
]


# The checks call fit(X, y) on small random samples: the warnings that a
# compressor gives for exactly that (y given; a random matrix stores more than
# dense) are expected there and only shown, never errors, by check_estimator.
@parametrize_with_checks(ALL_COMPRESSORS)
@pytest.mark.filterwarnings("ignore:.*fit got y:UserWarning")
@pytest.mark.filterwarnings("ignore::hmnumba.CompressionWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


def smooth_weights(m=384, n=320, seed=0, noise=1e-4):
    """A weight-like operator: a smooth kernel on shuffled 1-D points, plus noise."""
    rng = np.random.default_rng(seed)
    s, t = rng.random(m), rng.random(n)
    W = 1.0 / (1.0 + 8.0 * np.abs(s[:, None] - t[None, :]))
    return W + noise * rng.standard_normal((m, n)) / np.sqrt(m * n) * np.linalg.norm(W)


@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_meets_tolerance_and_reports_attributes(tol, dtype):
    W = smooth_weights().astype(dtype)
    comp = HMatrixCompressor(tol=tol, backend="cpu", random_state=0).fit(W)
    H = comp.hmatrix_
    assert isinstance(H, HMatrix) and H.dtype == dtype
    true = np.linalg.norm(comp.reconstruct().astype(np.float64) - W) / np.linalg.norm(W)
    slack = 1e-5 if dtype == np.float32 else 1e-12   # float32 storage rounding
    assert comp.error_bound_ <= tol
    assert true <= tol + slack
    assert comp.relative_error_ == comp.error_bound_
    assert comp.n_features_in_ == W.shape[1] and comp.n_outputs_ == W.shape[0]
    assert comp.compression_ratio_ == pytest.approx(W.nbytes / H.nbytes)
    assert comp.nbytes_ == H.nbytes
    np.testing.assert_array_equal(comp.ranks_, H.ranks)
    np.testing.assert_array_equal(comp.block_errors_, H.block_errors)
    assert np.sqrt(np.sum(comp.block_errors_ ** 2)) / np.linalg.norm(W.astype(np.float64)) \
        == pytest.approx(comp.error_bound_, rel=1e-9)


def test_transform_is_x_times_w_hat_transposed():
    W = smooth_weights()
    comp = HMatrixCompressor(tol=1e-4, backend="cpu", random_state=1).fit(W)
    X = np.random.default_rng(2).standard_normal((17, W.shape[1]))
    W_hat = comp.reconstruct()
    np.testing.assert_allclose(comp.transform(X), X @ W_hat.T, rtol=1e-12, atol=1e-12)
    Y = np.random.default_rng(3).standard_normal((5, W.shape[0]))
    np.testing.assert_allclose(comp.adjoint_transform(Y), Y @ W_hat, rtol=1e-12, atol=1e-12)
    assert comp.transform(X.astype(np.float32)).dtype == np.float64   # float64 weights
    comp32 = HMatrixCompressor(tol=1e-3, backend="cpu").fit(W.astype(np.float32))
    assert comp32.transform(X.astype(np.float32)).dtype == np.float32


def test_random_state_is_bitwise_reproducible():
    W = smooth_weights(seed=4)
    a = HMatrixCompressor(tol=1e-3, random_state=7, backend="cpu").fit(W)
    b = HMatrixCompressor(tol=1e-3, random_state=7, backend="cpu").fit(W)
    for name in ("row_perm", "col_perm", "row_start", "col_start", "rank", "offset", "data"):
        np.testing.assert_array_equal(getattr(a.hmatrix_, name), getattr(b.hmatrix_, name))
    c = HMatrixCompressor(tol=1e-3, random_state=np.random.RandomState(7),
                          backend="cpu").fit(W)
    assert c.error_bound_ <= 1e-3


def test_clone_pickle_joblib_round_trip(tmp_path):
    W = smooth_weights()
    comp = HMatrixCompressor(tol=1e-3, leaf_size=16, backend="cpu", random_state=0).fit(W)
    unfitted = clone(comp)
    assert unfitted.get_params() == comp.get_params() and not hasattr(unfitted, "hmatrix_")
    X = np.random.default_rng(0).standard_normal((9, W.shape[1]))
    again = pickle.loads(pickle.dumps(comp))
    np.testing.assert_array_equal(again.transform(X), comp.transform(X))
    joblib.dump(comp, tmp_path / "comp.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "comp.joblib").transform(X),
                                  comp.transform(X))


def test_frozen_compressor_in_pipeline():
    rng = np.random.default_rng(0)
    W = smooth_weights(m=96, n=64)
    comp = HMatrixCompressor(tol=1e-4, backend="cpu", random_state=0).fit(W)
    X = rng.standard_normal((200, 64))
    y = (X @ W.T) @ rng.standard_normal(96)
    pipe = make_pipeline(StandardScaler(), FrozenEstimator(comp), Ridge(alpha=1e-6))
    pipe.fit(X, y)
    # The frozen compressor is not refitted on X: its operator is still W's.
    assert pipe[1].estimator.hmatrix_ is comp.hmatrix_
    assert pipe.score(X, y) > 0.99
    names = pipe[:-1].get_feature_names_out()
    assert names.shape == (96,) and names[0] == "hmatrixcompressor0"


def test_set_output_pandas_like_names():
    pytest.importorskip("pandas")
    W = smooth_weights(m=40, n=30)
    comp = HMatrixCompressor(tol=1e-3, backend="cpu").set_output(transform="pandas").fit(W)
    frame = comp.transform(np.ones((3, 30)))
    assert list(frame.columns) == [f"hmatrixcompressor{i}" for i in range(40)]


@pytest.mark.filterwarnings("ignore:.*fit got y:UserWarning")   # refitting is the point here
def test_grid_search_over_tol():
    """tol is a hyper-parameter: GridSearchCV refits the compressor per value and fold.

    Inside a fitted pipeline the compressor compresses the training matrix
    (n_train, d) and maps samples to ``X @ X_train_hat.T`` (a compressed linear
    kernel feature map), which Ridge then fits.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 40)) @ np.diag(np.linspace(1, 0.01, 40))
    y = X @ rng.standard_normal(40) + 1e-3 * rng.standard_normal(150)
    pipe = make_pipeline(HMatrixCompressor(backend="cpu", random_state=0), Ridge(alpha=1e-3))
    grid = {"hmatrixcompressor__tol": [0.5, 1e-2, 1e-5]}
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    assert scores[2] > scores[0]                 # finer tol predicts better
    best = search.best_estimator_[0]
    assert best.error_bound_ <= search.best_params_["hmatrixcompressor__tol"]


@pytest.mark.parametrize("params, exc, match", [
    ({"tol": 0.0}, ValueError, "tol"),
    ({"tol": 1.5}, ValueError, "tol"),
    ({"tol": "small"}, TypeError, "tol"),
    ({"leaf_size": 0}, ValueError, "leaf_size"),
    ({"admissibility": "strong"}, ValueError, "admissibility"),
    ({"cluster": "geometric"}, ValueError, "cluster"),
    ({"method": "qr"}, ValueError, "method"),
    ({"backend": "tpu"}, ValueError, "backend"),
    ({"max_rank": -1}, ValueError, "max_rank"),
])
def test_bad_parameters_are_named_at_fit(params, exc, match):
    comp = HMatrixCompressor(**params)          # __init__ never validates (sklearn rule)
    with pytest.raises(exc, match=match):
        comp.fit(np.ones((8, 8)))


def test_transform_shape_mismatch_and_unfitted():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        HMatrixCompressor().transform(np.ones((2, 3)))
    comp = HMatrixCompressor(backend="cpu").fit(np.ones((6, 5)))
    with pytest.raises(ValueError, match="5 features"):
        comp.transform(np.ones((2, 4)))
    with pytest.raises(ValueError, match="outputs"):
        comp.adjoint_transform(np.ones((2, 5)))


def test_fit_with_y_warns_and_names_frozen_estimator():
    """A fitted compressor put bare into a pipeline is refitted on the samples."""
    rng = np.random.default_rng(0)
    W = smooth_weights(m=64, n=48)
    comp = HMatrixCompressor(tol=1e-4, backend="cpu", random_state=0).fit(W)
    X, y = rng.standard_normal((30, 48)), rng.standard_normal(30)
    with pytest.warns(UserWarning, match="FrozenEstimator"):
        pipe = make_pipeline(comp, Ridge()).fit(X, y)
    assert pipe[0].n_outputs_ == 30           # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", CompressionWarning)   # a small W: not the point here
        make_pipeline(FrozenEstimator(comp), Ridge()).fit(X, y)
        comp.fit(W)
    assert comp.n_outputs_ == 64


def test_class_docstring_shows_the_frozen_estimator_recipe():
    assert "FrozenEstimator(comp)" in HMatrixCompressor.__doc__


def test_random_state_none_is_the_fixed_seed_zero():
    """Documented difference from scikit-learn's glossary: None does not mean
    fresh randomness, the same fit gives the same bits."""
    W = smooth_weights(seed=5)
    a = HMatrixCompressor(tol=1e-3, backend="cpu").fit(W).hmatrix_
    b = HMatrixCompressor(tol=1e-3, backend="cpu").fit(W).hmatrix_
    c = HMatrixCompressor(tol=1e-3, backend="cpu", random_state=0).fit(W).hmatrix_
    for name in ("row_perm", "col_perm", "rank", "data"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a, name), getattr(c, name))


@pytest.mark.parametrize("comp", [HMatrixCompressor(backend="cpu", tol=1e-6),
                                  PruningCompressor(sparsity=0.1),
                                  SVDCompressor(tol=1e-6)])
def test_compression_larger_than_dense_warns_once(comp):
    W = np.random.default_rng(0).standard_normal((48, 40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp.fit(W)
    assert comp.compression_ratio_ < 1
    assert [w.category for w in caught] == [CompressionWarning]


def test_compression_smaller_than_dense_does_not_warn():
    W = smooth_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for comp in (HMatrixCompressor(backend="cpu", tol=1e-3), SVDCompressor(tol=1e-2),
                     QuantizationCompressor(bits=8)):
            assert comp.fit(W).compression_ratio_ > 1
