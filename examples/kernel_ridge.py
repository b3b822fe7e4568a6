"""Kernel ridge regression with an H-matrix and SciPy's conjugate gradients.

Fits ``(K + lam I) alpha = y`` for a Gaussian kernel matrix ``K`` of the
training points, never forming ``K``: ``HMatrix.from_kernel`` compresses it,
``H + lam * I`` is a SciPy ``LinearOperator`` and ``scipy.sparse.linalg.cg``
solves the system. Predictions ``K(X_test, X_train) @ alpha`` use a second,
rectangular H-matrix. The data are scikit-learn's swiss roll (3-D points, the
target is the position along the roll); the result is checked against
``sklearn.kernel_ridge.KernelRidge``, which forms the dense matrix.

Run::

    python3 examples/kernel_ridge.py [--n 4000]
"""
import argparse
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import aslinearoperator, cg
from sklearn.datasets import make_swiss_roll
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from hmnumba import HMatrix
from hmnumba.kernels import gaussian


def main(n=4000, length_scale=0.5, lam=0.1, tol=1e-6):
    X, y = make_swiss_roll(n_samples=n, noise=0.1, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    kernel = gaussian.with_length_scale(length_scale)

    t = time.perf_counter()
    K = HMatrix.from_kernel(kernel, X_train, tol=tol)
    system = K + lam * aslinearoperator(sp.identity(K.shape[0]))   # K + lam I, lazily
    alpha, info = cg(system, y_train, rtol=1e-10, maxiter=5000)
    K_test = HMatrix.from_kernel(kernel, X_test, col_points=X_train, tol=tol)
    pred = K_test @ alpha
    seconds = time.perf_counter() - t
    print(f"H-matrix: {K.shape[0]} training points, compression ratio "
          f"{K.compression_ratio:.1f}, cg info {info}, {seconds:.2f} s")

    t = time.perf_counter()
    ref = KernelRidge(alpha=lam, kernel="rbf", gamma=0.5 / length_scale**2)
    ref_pred = ref.fit(X_train, y_train).predict(X_test)
    print(f"dense KernelRidge: {time.perf_counter() - t:.2f} s")

    rmse = np.sqrt(np.mean((pred - y_test) ** 2))
    diff = np.linalg.norm(pred - ref_pred) / np.linalg.norm(ref_pred)
    print(f"test RMSE {rmse:.4f} (target spread {np.std(y_test):.2f}); relative difference "
          f"to KernelRidge's predictions {diff:.1e}")
    return rmse, diff


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="number of samples (default 4000)")
    main(parser.parse_args().n)
