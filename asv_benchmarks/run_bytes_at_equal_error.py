"""Bytes at equal error: every compressor on four weight arrays, one table.

For each array ``W`` and each target relative error ``e`` (Frobenius,
``||W - W_hat||_F / ||W||_F``), every method stores ``W`` as cheaply as it
can while reaching ``e``:

* ``H auto``: ``HMatrix.from_dense(W, tol=e)`` (the cheaper of the adaptive
  tree and one global low-rank block, the default);
* ``H tree``: the same with ``structure="hierarchical"`` (the tree alone);
* ``H f16``, ``H int8``: ``H auto`` with ``factor_dtype="float16"`` /
  ``"int8"`` (factors and dense blocks in low precision, the rounding
  inside the bound; full precision where that cannot meet ``e``);
* ``H outl``: ``H auto`` with ``outliers="auto"`` (``W = S + H``);
* ``H best``: ``factor_dtype="auto", outliers="auto"``, the cheapest of all;
* ``SVD``: ``SVDCompressor(tol=e)``;
* ``pruning``: ``PruningCompressor`` at the largest sparsity whose error is
  at most ``e`` (from the sorted magnitudes), CSR bytes;
* ``int8``, ``int4``: ``QuantizationCompressor(bits)``, per-row scales; its
  error is what it is, so it counts only at the levels it reaches;
* ``float16``: a cast, ``2`` bytes an entry, same rule.

A cell is kilobytes, ``-`` where the method cannot reach ``e``; the
smallest of a row is starred. Every error is measured from the
reconstruction, not taken from a method's own bound.

The arrays:

1. ``rank48``: a rank-48 768 x 512 product of Gaussians (the dominance
   issue's example);
2. ``pinn``: the middle hidden layer (128 x 128) of a PINN on 2-D Poisson
   (``[2, 128 x 5, 1]``, full-rank Glorot start, 300 L-BFGS iterations on
   1,000 collocation points);
3. ``operator4096``: the transform benchmark's 4096 x 4096 operator
   (:func:`benchmarks.transform.weight_operator`);
4. ``digits512``: the first layer (512 x 64, ``coefs_[0].T``) of
   ``MLPClassifier(hidden_layer_sizes=(512,))`` trained on scikit-learn's
   digits (its test accuracy is printed).

Run from the repository root::

    python asv_benchmarks/run_bytes_at_equal_error.py [--only NAME ...]

Takes a few minutes on 2 cores (the 4096 x 4096 SVDs dominate).
"""
import argparse
import os
import sys
import time

import numpy as np

from hmnumba import HMatrix
from hmnumba.baselines import PruningCompressor, QuantizationCompressor, SVDCompressor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LEVELS = (1e-1, 1e-2, 1e-3)
H_OPTIONS = {"H auto": {}, "H tree": {"structure": "hierarchical"},
             "H f16": {"factor_dtype": "float16"}, "H int8": {"factor_dtype": "int8"},
             "H outl": {"outliers": "auto"},
             "H best": {"factor_dtype": "auto", "outliers": "auto"}}
METHODS = (*H_OPTIONS, "SVD", "pruning", "int8", "int4", "float16")


def rank48():
    rng = np.random.default_rng(0)
    return rng.standard_normal((768, 48)) @ rng.standard_normal((48, 512))


def pinn():
    from hmnumba.pinn import PINN, Poisson2D, train
    model = PINN([2] + [128] * 5 + [1], init_rank=None, random_state=0)
    train(model, Poisson2D(), epochs=300, optimizer="lbfgs", n_collocation=1000,
          n_boundary=200, random_state=0)
    return model.layers[len(model.layers) // 2].W.copy()


def operator4096():
    from benchmarks.transform import weight_operator
    return weight_operator()


def digits512():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(512,), max_iter=300, random_state=0)
    clf.fit(X_tr, y_tr)
    print(f"# digits512: MLPClassifier test accuracy {clf.score(X_te, y_te):.3f}")
    return np.ascontiguousarray(clf.coefs_[0].T)


ARRAYS = {"rank48": rank48, "pinn": pinn, "operator4096": operator4096,
          "digits512": digits512}


def _rel(W, W_hat, norm):
    return float(np.linalg.norm(W - W_hat) / norm)


def pruning_sparsity(W, e):
    """Largest sparsity whose pruning error is at most ``e ||W||_F``."""
    sq = np.sort(np.abs(W).ravel()) ** 2
    dropped = np.cumsum(sq)
    n_drop = int(np.searchsorted(dropped, (e * np.linalg.norm(W)) ** 2, side="right"))
    # PruningCompressor removes round(sparsity * size) entries.
    return min(n_drop, W.size - 1) / W.size


def measure(W, e, quant):
    """``{method: (bytes, error)}`` at target ``e`` (None where unreachable)."""
    norm = np.linalg.norm(W)
    out = {}
    for name, options in H_OPTIONS.items():
        H = HMatrix.from_dense(W, tol=e, random_state=0, **options)
        out[name] = (H.nbytes, _rel(W, H.to_dense(), norm))
    svd = SVDCompressor(tol=e).fit(W)
    out["SVD"] = (svd.nbytes_, _rel(W, svd.reconstruct(), norm))
    pr = PruningCompressor(sparsity=pruning_sparsity(W, e)).fit(W)
    out["pruning"] = (pr.nbytes_, _rel(W, pr.reconstruct(), norm))
    for name, (nbytes, err) in quant.items():
        out[name] = (nbytes, err) if err <= e else None
    return out


def quantized(W):
    norm = np.linalg.norm(W)
    res = {}
    for bits in (8, 4):
        q = QuantizationCompressor(bits=bits).fit(W)
        res[f"int{bits}"] = (q.nbytes_, _rel(W, q.reconstruct(), norm))
    res["float16"] = (W.size * 2, _rel(W, W.astype(np.float16).astype(W.dtype), norm))
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(ARRAYS), default=tuple(ARRAYS))
    parser.add_argument("--levels", nargs="+", type=float, default=LEVELS,
                        help="target relative errors (default 0.1 0.01 0.001)")
    args = parser.parse_args(argv)
    print("| array | e | " + " | ".join(METHODS) + " | H won by |")
    print("|---|---|" + "---|" * (len(METHODS) + 1))
    for name in args.only:
        t = time.perf_counter()
        W = np.asarray(ARRAYS[name](), np.float64)
        quant = quantized(W)
        for e in args.levels:
            res = measure(W, e, quant)
            for method, r in res.items():   # every reported error meets its target
                assert r is None or r[1] <= e * (1 + 1e-9), (name, e, method, r)
            reached = {m: r[0] for m, r in res.items() if r is not None}
            best = min(reached.values())
            cells = [("-" if m not in reached else
                      f"{reached[m] / 1e3:.1f}" + ("*" if reached[m] == best else ""))
                     for m in METHODS]
            others = [v for m, v in reached.items() if not m.startswith("H")]
            margin = min(others) / reached["H best"]
            print(f"| {name} {W.shape[0]}x{W.shape[1]} | {e:g} | " + " | ".join(cells)
                  + f" | {margin:.2f}x |", flush=True)
        print(f"# {name}: {time.perf_counter() - t:.0f} s; int8 error {quant['int8'][1]:.2e}, "
              f"int4 {quant['int4'][1]:.2e}, float16 {quant['float16'][1]:.2e}", flush=True)


if __name__ == "__main__":
    main()
