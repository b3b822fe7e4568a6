"""HMatrixCompressor(format="h2") and ``hmnumba compress --format h2``: the
H^2 format behind the scikit-learn estimator and the command line, saved
and loaded through the .hmz file (the scikit-learn contract itself is
checked in tests/test_compressor.py)."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from hmnumba import H2Matrix, HMatrixCompressor, load
from hmnumba.cli import main
from hmnumba.h2matrix import GeneralH2Matrix


def _weights(m=200, n=150, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    s, t = rng.random(m), rng.random(n)
    return (1.0 / (1.0 + 8.0 * np.abs(s[:, None] - t[None, :]))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tol", [1e-2, 1e-5])
def test_h2_format_meets_tol_and_reports_attributes(dtype, tol):
    W = _weights(dtype=dtype)
    comp = HMatrixCompressor(tol=tol, format="h2", random_state=0).fit(W)
    H = comp.hmatrix_
    assert isinstance(H, GeneralH2Matrix)
    exact = np.linalg.norm(H.to_dense() - W.astype(np.float64)) / np.linalg.norm(W)
    assert comp.error_bound_ == comp.relative_error_ == pytest.approx(exact, rel=1e-6, abs=1e-15)
    assert comp.error_bound_ <= tol
    assert comp.nbytes_ == H.nbytes and comp.compression_ratio_ > 1
    assert np.array_equal(comp.ranks_, H.ranks) and comp.block_errors_.shape == (1,)
    X = np.random.default_rng(1).standard_normal((6, W.shape[1])).astype(dtype)
    Z = comp.transform(X)
    assert Z.dtype == dtype and Z.shape == (6, W.shape[0])
    assert np.allclose(Z, X.astype(np.float64) @ H.to_dense().T, rtol=1e-5 if dtype == np.float32
                       else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)
    Y = np.random.default_rng(2).standard_normal((4, W.shape[0]))
    assert np.allclose(comp.adjoint_transform(Y), Y @ H.to_dense())
    assert comp.reconstruct().dtype == dtype


def test_h2_format_stores_less_than_h_on_a_shared_basis_operator():
    W = _weights(384, 320)
    h = HMatrixCompressor(tol=1e-4, random_state=0, structure="hierarchical").fit(W)
    h2 = HMatrixCompressor(tol=1e-4, random_state=0, format="h2").fit(W)
    assert h2.relative_error_ <= 1e-4
    assert h2.nbytes_ < h.nbytes_


def test_h2_compressor_clones_pickles_and_saves(tmp_path):
    comp = HMatrixCompressor(tol=1e-4, format="h2", random_state=0)
    assert clone(comp).get_params()["format"] == "h2"
    comp.fit(_weights())
    again = pickle.loads(pickle.dumps(comp))
    X = np.random.default_rng(0).standard_normal((3, 150))
    assert np.array_equal(again.transform(X), comp.transform(X))
    comp.hmatrix_.save(tmp_path / "w.hmz")
    assert np.array_equal(load(tmp_path / "w.hmz").matmat(X.T), comp.hmatrix_.matmat(X.T))


@pytest.mark.parametrize("params, match", [
    ({"format": "h3"}, "format"),
    ({"format": "h2", "factor_dtype": "float16"}, "factor_dtype"),
    ({"format": "h2", "outliers": 3}, "outliers"),
])
def test_bad_h2_options_are_named_at_fit(params, match):
    with pytest.raises(ValueError, match=match):
        HMatrixCompressor(**params).fit(np.ones((8, 8)))


def test_h2_compressor_warns_when_larger_than_dense():
    rng = np.random.default_rng(0)
    with pytest.warns(Warning, match="stores more than the dense"):
        HMatrixCompressor(tol=1e-9, format="h2").fit(rng.standard_normal((40, 40)))


# ------------------------------------------------------------------ command line
def test_cli_compress_h2_info_apply(tmp_path, capsys):
    W = _weights()
    np.save(tmp_path / "W.npy", W)
    X = np.random.default_rng(3).standard_normal((5, 150))
    np.save(tmp_path / "X.npy", X)
    assert main(["compress", str(tmp_path / "W.npy"), "-o", str(tmp_path / "W.hmz"), "--tol",
                 "1e-5", "--format", "h2"]) == 0
    assert "h2" in capsys.readouterr().out
    H = load(tmp_path / "W.hmz")
    assert isinstance(H, GeneralH2Matrix) and H.error <= 1e-5
    assert main(["info", str(tmp_path / "W.hmz")]) == 0
    assert "H2Matrix 200x150" in capsys.readouterr().out
    assert main(["apply", str(tmp_path / "W.hmz"), str(tmp_path / "X.npy"), "-o",
                 str(tmp_path / "Y.npy")]) == 0
    Y = np.load(tmp_path / "Y.npy")
    assert np.allclose(Y, X @ H.to_dense().T)
    assert main(["apply", str(tmp_path / "W.hmz"), str(tmp_path / "Y.npy"), "-o",
                 str(tmp_path / "Z.npy"), "--transpose"]) == 0
    assert np.allclose(np.load(tmp_path / "Z.npy"), Y @ H.to_dense())


def test_cli_compress_h2_npz_and_refused_options(tmp_path, capsys):
    np.savez(tmp_path / "layers.npz", a=_weights(60, 40), b=_weights(30, 50, 1, np.float32))
    assert main(["compress", str(tmp_path / "layers.npz"), "-o", str(tmp_path / "out"),
                 "--format", "h2", "--tol", "1e-3"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.hmz", "b.hmz"]
    assert load(tmp_path / "out" / "b.hmz").dtype == np.float32
    capsys.readouterr()
    assert main(["compress", str(tmp_path / "layers.npz"), "-o", str(tmp_path / "o2"),
                 "--format", "h2", "--outliers", "3"]) == 2
    assert "--outliers" in capsys.readouterr().err


def test_cli_info_of_a_kernel_h2_file(tmp_path, capsys):
    X = np.random.default_rng(0).random((300, 3))
    from hmnumba.kernels import laplace
    H2Matrix.from_kernel(laplace, X, mode="on-the-fly").save(tmp_path / "k.hmz")
    assert main(["info", str(tmp_path / "k.hmz")]) == 0
    assert "on-the-fly" in capsys.readouterr().out
