"""The ``hmnumba`` command line (``python -m hmnumba ...``).

Subcommands
-----------
``--version``
    Print ``hmnumba <version>`` and exit.
``demo``
    Compress the standard kernel problem (3-D Laplace, points uniform in the
    unit cube) and a permuted weight-like matrix; print build time,
    compression ratio, error bound and matvec speed-up against dense numpy;
    then run ``reproduce --quick`` into ``--out`` (``./hmnumba-reproduce``;
    ``--no-reproduce`` skips it).
``reproduce [--quick] [--problem P] [--out DIR] [--no-figures]``
    The paper's six figures, its NTK claim and its theorems' bounds on trained PINNs,
    and the compression study over four network families
    (:mod:`hmnumba.experiments`): ``DIR/report.md``, ``DIR/results.json`` and
    one PNG per result (the PNGs need matplotlib, the ``plot`` extra; without
    it they are skipped).
``warmup [--only GROUP ...]``
    Compile every numba kernel group ahead of time (:mod:`hmnumba.warmup`),
    one line per group; later runs load them from numba's cache.
``compress W.npy -o W.hmz`` / ``compress weights.npz -o DIR``
    Compress a weight array (rows = outputs, columns = inputs) into an
    H-matrix file; for an ``.npz`` archive, one ``DIR/<name>.hmz`` per array.
    Array names that are not plain file names (a path separator, ``..``, an
    absolute path, a control character) are refused before anything is
    written: files are written only inside ``DIR``. ``--format h2`` writes
    H^2 matrices (nested bases, :meth:`hmnumba.H2Matrix.from_dense`) instead.
``info W.hmz`` (or a directory of them)
    Blocks, ranks, bytes, compression ratio and error bound (H and H^2 files).
``apply W.hmz X.npy -o Y.npy``
    ``Y = X @ W_hat.T`` for samples ``X (n_samples, n_in)``, as
    :meth:`hmnumba.HMatrixCompressor.transform` does; ``--transpose`` gives
    ``X @ W_hat`` for ``X (n_samples, n_out)``.

Exit status 0 on success and 2 with a one-line message on bad input (missing
or unreadable files, corrupted ``.hmz`` files, wrong shapes, bad options).
"""
import argparse
import sys
import time
from pathlib import Path


def _demo(args):
    import numpy as np

    from hmnumba import HMatrix
    from hmnumba.kernels import assemble_dense, laplace
    from hmnumba.warmup import announce, warmup

    rng = np.random.default_rng(args.seed)
    n = args.n
    points = rng.random((n, 3))
    x = rng.uniform(-0.5, 0.5, n)

    # Compile (or load) every kernel it uses first, so no timing below
    # includes it (the H^2 kernels are not used).
    groups = ("build", "kernels", "products", "pinn")
    announce(sys.stdout, groups)
    t = time.perf_counter()
    warmup(groups, out=False)
    print(f"numba kernels compiled or loaded from the cache in {time.perf_counter() - t:.1f} s "
          "(not counted below)\n")
    print(f"hmnumba demo: 3-D Laplace kernel 1/r, {n} points uniform in the unit cube, "
          f"tol {args.tol:g}, leaf 32, strong admissibility eta 2")
    HMatrix.from_kernel(laplace, points[:1000], tol=args.tol)
    t = time.perf_counter()
    H = HMatrix.from_kernel(laplace, points, tol=args.tol)
    build = time.perf_counter() - t
    t = time.perf_counter()
    A = assemble_dense(laplace, points)
    assembly = time.perf_counter() - t
    H @ x
    mv_h = _median_time(lambda: H @ x)
    mv_d = _median_time(lambda: A @ x)
    err = np.linalg.norm(H @ x - A @ x) / np.linalg.norm(A @ x)
    print(f"  H-matrix build                                   {build:8.2f} s "
          f"(dense assembly with numba {assembly:.2f} s)")
    print(f"  storage                                          {H.nbytes / 1e6:8.1f} MB "
          f"(dense {H.dense_nbytes / 1e6:.1f} MB), compression ratio {H.compression_ratio:.2f}")
    print(f"  error bound (ACA estimates)                      {H.error_bound:8.1e} "
          f"(probe {H.estimate_error(random_state=0):.1e}, matvec vs dense {err:.1e})")
    print(f"  matvec                                           {1e3 * mv_h:8.1f} ms "
          f"(dense numpy {1e3 * mv_d:.1f} ms): speed-up {mv_d / mv_h:.2f}x")
    del A

    m = 1024
    s = np.sort(rng.random(m))
    W = np.exp(-8.0 * np.abs(s[:, None] - s[None, :])) + 1e-3 * rng.standard_normal((m, m)) / m
    W = W[rng.permutation(m)][:, rng.permutation(m)]
    print(f"\nweight-like {m} x {m} matrix (smooth kernel, rows and columns shuffled, "
          f"small noise), tol 1e-3, PCA clustering")
    t = time.perf_counter()
    Hw = HMatrix.from_dense(W, tol=1e-3, random_state=args.seed)
    print(f"  build {time.perf_counter() - t:.2f} s, compression ratio "
          f"{Hw.compression_ratio:.2f}, error bound {Hw.error_bound:.2e} (exact), true error "
          f"{np.linalg.norm(Hw.to_dense() - W) / np.linalg.norm(W):.2e}")
    if args.no_reproduce:
        return 0
    print(f"\nhmnumba reproduce --quick --out {args.out}")
    args.quick, args.problem, args.only, args.no_figures = True, None, None, False
    return _reproduce(args)


def _warmup(args):
    from hmnumba.warmup import announce, warmup
    announce(sys.stdout, args.only)
    print("numba kernels, compiled or loaded from the cache, per group:")
    warmup(args.only)
    return 0


def _reproduce(args):
    import shlex

    from hmnumba.experiments import reproduce
    command = "hmnumba " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []))
    reproduce(args.out, quick=args.quick, problem=args.problem, seed=args.seed,
              command=command, experiments=args.only,
              figures=False if args.no_figures else None)
    return 0


def _compress(args):
    import numpy as np

    from hmnumba import HMatrix
    from hmnumba.io import save

    from hmnumba.warmup import announce

    path = Path(args.weights)
    arrays = _read_weights(path)
    # on standard error, only when numba's cache looks cold
    announce(groups=("build", "h2") if args.format == "h2" else ("build",))
    out = Path(args.output)
    if path.suffix == ".npz":
        # Member names come from the archive, which may be hostile: each must
        # be a plain file name, so that every file is written inside ``out``.
        from hmnumba._validation import check_member_name
        for name in arrays:
            check_member_name(name, f"{path}: array")
        out.mkdir(parents=True, exist_ok=True)
        targets = {name: out / f"{name}.hmz" for name in arrays}
        root = out.resolve()
        for name, target in targets.items():
            if target.resolve().parent != root:   # e.g. a symlink planted in out
                raise ValueError(f"{path}: array {name!r} would be written outside {out}")
    else:
        targets = {None: out}
    if args.format == "h2" and (args.factor_dtype != "none" or args.outliers is not None):
        raise ValueError("--format h2 stores full-precision bases: --factor-dtype and "
                         "--outliers are not available with it")
    for name, W in arrays.items():
        label = f"{path}[{name}]" if name is not None else str(path)
        if np.asarray(W).dtype.kind in "iub":
            W = np.asarray(W, dtype=np.float64)
        if np.ndim(W) != 2:
            raise ValueError(f"{label}: expected a 2-D weight array, got shape {np.shape(W)}")
        if args.format == "h2":
            _compress_h2(W, args, label, targets[name])
            continue
        H = HMatrix.from_dense(W, tol=args.tol, leaf_size=args.leaf_size, method=args.method,
                               cluster=args.cluster, random_state=args.seed,
                               structure=args.structure,
                               factor_dtype=None if args.factor_dtype == "none"
                               else args.factor_dtype, outliers=args.outliers)
        save(H, targets[name])
        print(f"{label} {W.shape[0]}x{W.shape[1]} -> {targets[name]}: ratio "
              f"{H.compression_ratio:.2f}, error bound {H.error_bound:.2e}, "
              f"{H.params.get('stored_as', 'hierarchical')}, "
              f"{H.encoding.kind if H.encoding is not None else H.dtype.name} numbers, "
              f"{H.outliers.nnz if H.outliers is not None else 0} outliers, "
              f"{H.params['build_seconds']:.2f} s")
    return 0


def _compress_h2(W, args, label, target):
    from hmnumba import H2Matrix
    started = time.perf_counter()
    H = H2Matrix.from_dense(W, tol=args.tol, leaf_size=args.leaf_size, cluster=args.cluster,
                            random_state=args.seed)
    seconds = time.perf_counter() - started
    H.save(target)
    print(f"{label} {W.shape[0]}x{W.shape[1]} -> {target}: ratio {H.compression_ratio:.2f}, "
          f"error {H.error:.2e} (exact), h2, {H._a['row_basis'].dtype.name} numbers, "
          f"{seconds:.2f} s")


def _outlier_count(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count, got {text!r}") from None


def _read_weights(path):
    import numpy as np
    from hmnumba.io import _open_regular
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: expected a .npy or .npz file")
    try:   # a FIFO or device is refused instead of blocking the command
        f = _open_regular(path, str(path), f"a regular {path.suffix} file")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with f:
        try:
            loaded = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable NumPy file ({exc})") from None
        if path.suffix == ".npz":
            with loaded:
                arrays = {name: loaded[name] for name in loaded.files}
            if not arrays:
                raise ValueError(f"{path}: the archive holds no arrays")
            return arrays
    return {None: loaded}


def _hmz_files(path):
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.hmz"))
        if not files:
            raise ValueError(f"{path}: directory holds no .hmz files")
        return files
    return [path]


def _info(args):
    from hmnumba.loading import load
    for i, file in enumerate(_hmz_files(args.file)):
        H = load(file)
        print(("\n" if i else "") + f"{file}\n{H.summary()}")
    return 0


def _apply(args):
    import numpy as np

    from hmnumba.loading import load
    from hmnumba.io import _save_npy
    H = load(args.file)
    X = _read_weights(Path(args.samples))
    if None not in X:
        raise ValueError(f"{args.samples}: expected a .npy file of samples")
    X = X[None]
    if X.dtype.kind in "iub":
        X = X.astype(np.float64)
    if X.ndim not in (1, 2):
        raise ValueError(f"{args.samples}: samples must be 1-D or 2-D, got shape {X.shape}")
    squeeze = X.ndim == 1
    X2 = X[None, :] if squeeze else X
    n_in = H.shape[0] if args.transpose else H.shape[1]
    if X2.shape[1] != n_in:
        raise ValueError(f"{args.samples}: samples have {X2.shape[1]} features but the "
                         f"operator expects {n_in}")
    Y = (H.rmatmat(X2.T) if args.transpose else H.matmat(X2.T)).T
    Y = np.ascontiguousarray(Y[0] if squeeze else Y)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _save_npy(output, Y)
    print(f"{args.output}: {Y.shape} {Y.dtype}")
    return 0


def _median_time(fn, repeats=7):
    import numpy as np
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (argparse's convention)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    """The ``argparse`` parser of the ``hmnumba`` command and its subcommands.

    Returns
    -------
    argparse.ArgumentParser
        Usage errors exit with status 2 and a one-line message.

    Examples
    --------
    >>> from hmnumba.cli import build_parser
    >>> args = build_parser().parse_args(["compress", "W.npy", "-o", "W.hmz", "--tol", "1e-4"])
    >>> args.command, args.weights, args.output, args.tol, args.method
    ('compress', 'W.npy', 'W.hmz', 0.0001, 'aca')
    """
    from hmnumba import __version__
    parser = _Parser(
        prog="hmnumba",
        description="Adaptive, error-bounded hierarchical matrices with Numba.")
    parser.add_argument("--version", action="version", version=f"hmnumba {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="compress the standard problems and report figures",
        description="Compress the 3-D Laplace kernel matrix of N points in the unit cube and "
                    "a shuffled weight-like 1024 x 1024 matrix; print the build time, "
                    "compression ratio, error bound and matvec speed-up over dense numpy; "
                    "then run `hmnumba reproduce --quick --out DIR` (needs matplotlib: pip "
                    "install 'hmnumba[plot]'; --no-reproduce skips it).")
    demo.add_argument("--n", type=int, default=12000,
                      help="number of points of the kernel problem (default 12000)")
    demo.add_argument("--tol", type=float, default=1e-6,
                      help="relative tolerance (default 1e-6)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", default="hmnumba-reproduce",
                      help="output directory of the quick reproduction (default "
                           "./hmnumba-reproduce)")
    demo.add_argument("--no-reproduce", action="store_true",
                      help="only the kernel figures, skip `reproduce --quick`")
    demo.set_defaults(func=_demo)

    warm = sub.add_parser(
        "warmup", help="compile every numba kernel ahead of time (fills the cache)",
        description="Compile (or load from numba's on-disk cache) every kernel group with "
                    "one small call each, printing one line per group. The first run takes "
                    "minutes on 2 cores; later runs seconds.")
    from hmnumba.warmup import GROUPS
    warm.add_argument("--only", nargs="+", default=None, metavar="GROUP", choices=GROUPS,
                      help=f"only these groups ({' '.join(GROUPS)})")
    warm.set_defaults(func=_warmup)

    repro = sub.add_parser(
        "reproduce", help="reproduce the paper's results (figures, results.json, report.md)",
        description="Train PINNs, compress them by H-matrix, SVD, pruning and quantization "
                    "and write the paper's results and checks to DIR: report.md, results.json "
                    "and one PNG per result (the PNGs need matplotlib: pip install "
                    "'hmnumba[plot]'; without it they are skipped). The `study` result "
                    "compares every method on four network families (PINNs, learned "
                    "solution operators, a digits classifier, a random control) over 3 "
                    "seeds.")
    repro.add_argument("--quick", action="store_true",
                       help="small settings, under 5 minutes on 2 cores once numba's cache is "
                            "warm (Poisson 1-D by default)")
    repro.add_argument("--problem", default=None,
                       help="PDE of the trained PINN: poisson1d, poisson2d, helmholtz2d or "
                            "heat1d (default poisson1d with --quick, poisson2d otherwise)")
    repro.add_argument("--out", default="hmnumba-reproduce",
                       help="output directory (default ./hmnumba-reproduce)")
    repro.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    repro.add_argument("--only", nargs="+", default=None, metavar="NAME",
                       help="run only these results (tradeoff heatmaps dynamic "
                            "generalisation speed propagation ntk conditioning adversarial "
                            "refinement study)")
    repro.add_argument("--no-figures", action="store_true",
                       help="write report.md and results.json without PNGs")
    repro.set_defaults(func=_reproduce)

    comp = sub.add_parser(
        "compress", help="compress a weight array (.npy) or every array of an .npz",
        description="Compress weight arrays (rows = outputs, columns = inputs) into "
                    "H-matrix files with ||W - H||_F <= tol ||W||_F.")
    comp.add_argument("weights", help="W.npy (one array) or weights.npz (one H-matrix per array)")
    comp.add_argument("-o", "--output", required=True,
                      help="output .hmz file for .npy input; output directory for .npz input "
                           "(one <name>.hmz per array)")
    comp.add_argument("--tol", type=float, default=1e-3,
                      help="relative Frobenius tolerance, 0 < tol < 1 (default 1e-3)")
    comp.add_argument("--method", choices=("aca", "svd", "rsvd"), default="aca",
                      help="low-rank approximation of a block (default aca)")
    comp.add_argument("--cluster", choices=("pca", "index"), default="pca",
                      help="row/column clustering (default pca)")
    comp.add_argument("--leaf-size", type=int, default=32,
                      help="largest cluster that is not split (default 32)")
    comp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    comp.add_argument("--structure", choices=("auto", "hierarchical"), default="auto",
                      help="auto: the cheapest of the adaptive tree, one global low-rank "
                           "block and one dense block; hierarchical: the tree only "
                           "(default auto)")
    comp.add_argument("--factor-dtype", choices=("none", "float16", "int8", "auto"),
                      default="none",
                      help="store factors and dense blocks as float16 or int8 codes with "
                           "per-column scales, the rounding inside the error bound; auto: "
                           "the cheapest of these and full precision (default none)")
    comp.add_argument("--outliers", type=_outlier_count, default=None,
                      help="store W = S + H with the largest entries in a sparse part S: "
                           "a count, or auto for the count that stores fewest bytes; with "
                           "--factor-dtype auto, the cheapest of every storage option "
                           "(default none)")
    comp.add_argument("--format", choices=("h", "h2"), default="h",
                      help="h: H-matrix; h2: H^2 matrix with nested row and column bases, "
                           "the same bound (default h)")
    comp.set_defaults(func=_compress)

    info = sub.add_parser("info", help="describe an .hmz file (or a directory of them)",
                          description="Print blocks, ranks, bytes, compression ratio and "
                                      "error bound of H-matrix files.")
    info.add_argument("file", help="an .hmz file or a directory of .hmz files")
    info.set_defaults(func=_info)

    apply = sub.add_parser("apply", help="apply an .hmz operator to samples",
                           description="Y = X @ W_hat.T for samples X of shape "
                                       "(n_samples, n_in), written to a .npy file.")
    apply.add_argument("file", help="the .hmz file of W (n_out x n_in)")
    apply.add_argument("samples", help="X.npy, shape (n_samples, n_in) or (n_in,)")
    apply.add_argument("-o", "--output", required=True, help="output .npy file for Y")
    apply.add_argument("--transpose", action="store_true",
                       help="compute X @ W_hat instead, for X of shape (n_samples, n_out)")
    apply.set_defaults(func=_apply)
    return parser


def main(argv=None):
    """Run the ``hmnumba`` command line (the console script and ``python -m hmnumba``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``hmnumba``; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        Exit status: 0 on success, 2 with a one-line message on standard
        error for bad input (missing or corrupted files, wrong shapes).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from hmnumba.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     W = os.path.join(d, "W.npy")
    ...     np.save(W, np.outer(np.arange(1.0, 65.0), np.ones(40)))
    ...     print(main(["compress", W, "-o", os.path.join(d, "W.hmz")]) == 0)
    ...     print(main(["info", os.path.join(d, "missing.hmz")]))  # doctest: +ELLIPSIS
    /.../W.npy 64x40 -> /.../W.hmz: ratio ..., error bound ..., ... s
    True
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"hmnumba: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
