"""Cluster trees: a permutation of indices and a binary tree of index ranges.

A :class:`ClusterTree` is a handful of flat arrays (no node objects), so it
passes into numba code, pickles and persists as it is. Three ways to build one:

* ``"geometric"`` (:meth:`ClusterTree.from_points`): bisect the bounding box of
  the points along its longest side (the H2Lib ``build_adaptive_cluster``
  rule); for kernel matrices.
* ``"pca"`` (:meth:`ClusterTree.from_matrix`): the rows (or columns) of a
  matrix are the points; each cluster is split at the median of its
  projections on the principal direction, which groups similar neurons so
  that off-diagonal blocks of a weight matrix become low rank.
* ``"index"``: contiguous halves, keeping the natural order.
"""
import numpy as np

from hmnumba._threads import one_blas_thread
from hmnumba._validation import check_choice, check_points, check_positive_int, check_random_state
from hmnumba.kernels import trees

CLUSTER_METHODS = ("pca", "index", "geometric")


class ClusterTree:
    """Binary cluster tree over ``n`` indices, stored as flat arrays.

    Attributes
    ----------
    perm : ndarray of int64, shape (n,)
        ``perm[p]`` is the original index at cluster-order position ``p``.
    start, stop : ndarray of int64, shape (n_nodes,)
        Node ``t`` holds positions ``start[t]:stop[t]`` of ``perm``.
    children : ndarray of int64, shape (n_nodes, 2)
        Child node ids, ``-1`` for leaves. Node 0 is the root; nodes are in
        breadth-first order.
    level : ndarray of int64, shape (n_nodes,)
    box_lo, box_hi : ndarray of float64, shape (n_nodes, dim) or None
        Bounding boxes (geometric and index trees), used by strong
        admissibility.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.cluster import ClusterTree
    >>> tree = ClusterTree.from_points(np.random.default_rng(0).random((100, 2)), leaf_size=16)
    >>> int(tree.size), bool(np.all(tree.stop[tree.leaves] - tree.start[tree.leaves] <= 16))
    (100, True)
    """

    def __init__(self, perm, start, stop, children, level, box_lo=None, box_hi=None,
                 method="geometric"):
        self.perm = perm
        self.start = start
        self.stop = stop
        self.children = children
        self.level = level
        self.box_lo = box_lo
        self.box_hi = box_hi
        self.method = method

    @property
    def size(self):
        """Number of indices."""
        return self.perm.shape[0]

    @property
    def n_nodes(self):
        return self.start.shape[0]

    @property
    def leaves(self):
        """Ids of the leaf nodes."""
        return np.flatnonzero(self.children[:, 0] < 0)

    @property
    def depth(self):
        return int(self.level.max())

    @property
    def nbytes(self):
        arrays = [self.perm, self.start, self.stop, self.children, self.level]
        arrays += [a for a in (self.box_lo, self.box_hi) if a is not None]
        return sum(a.nbytes for a in arrays)

    @classmethod
    def from_points(cls, points, leaf_size=32):
        """Geometric tree: bisect bounding boxes at the midpoint of the longest side.

        Parameters
        ----------
        points : array-like of shape (n, dim)
        leaf_size : int, default=32
            Leaves hold at most this many points.
        """
        points = check_points(points, "points")
        leaf_size = check_positive_int(leaf_size, "leaf_size")
        return cls(*trees.build_geometric_tree(points, leaf_size), method="geometric")

    @classmethod
    def from_index(cls, n, leaf_size=32):
        """Contiguous halves of ``range(n)`` (the natural order is kept)."""
        n = check_positive_int(n, "n")
        leaf_size = check_positive_int(leaf_size, "leaf_size")
        coords = np.arange(n, dtype=np.float64)[:, None]
        return cls(*trees.build_geometric_tree(coords, leaf_size), method="index")

    @classmethod
    def from_matrix(cls, A, axis=0, method="pca", leaf_size=32, random_state=None):
        """Cluster the rows (``axis=0``) or columns (``axis=1``) of ``A``.

        Parameters
        ----------
        A : ndarray of shape (m, n)
            Validated float array.
        axis : {0, 1}
        method : {"pca", "index"}
        leaf_size : int, default=32
        random_state : int or None
            Seeds the power iteration of ``"pca"`` (results are deterministic
            for a given seed).
        """
        method = check_choice(method, "cluster", ("pca", "index"))
        leaf_size = check_positive_int(leaf_size, "leaf_size")
        n_points = A.shape[axis]
        if method == "index":
            return cls.from_index(n_points, leaf_size)
        P = A if axis == 0 else A.T
        # Single-threaded BLAS: after a numba parallel region, OpenBLAS
        # threads compete with numba's and small products run ~20x slower.
        with one_blas_thread():
            return cls._pca_tree(P, leaf_size, check_random_state(random_state))

    @classmethod
    def _pca_tree(cls, P, leaf_size, seed):
        n = P.shape[0]
        rng = np.random.default_rng(seed)
        # A working copy whose rows are reordered with the permutation, so the
        # points of every node are a contiguous slice (no gathers).
        work = np.array(P, dtype=np.float64, order="C")
        perm = np.arange(n)
        start, stop, level = [0], [n], [0]
        children = []
        head = 0
        while head < len(start):
            t = head
            head += 1
            s, e = start[t], stop[t]
            children.append([-1, -1])
            if e - s <= leaf_size:
                continue
            X = work[s:e]
            mean = X.mean(axis=0)
            proj = X @ _principal_direction(X, mean, rng)
            order = np.argsort(proj, kind="stable")
            perm[s:e] = perm[s:e][order]
            work[s:e] = X[order]
            split = (s + e) // 2  # the median: balanced halves
            for c, (a, b) in enumerate(((s, split), (split, e))):
                children[t][c] = len(start)
                start.append(a)
                stop.append(b)
                level.append(level[t] + 1)
        as64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        return cls(perm.astype(np.int64), as64(start), as64(stop),
                   as64(children).reshape(-1, 2), as64(level), method="pca")


def _principal_direction(X, mean, rng, n_sketch=8):
    """Top right singular vector of the centred points ``X - mean``.

    Randomized range finder with one power iteration (four passes over
    ``X``; the centring is applied implicitly, without a copy). Splitting only
    needs a good direction, not an exact one, and a plain power iteration
    needs many more passes over memory.
    """
    m, d = X.shape
    p = min(n_sketch, m, d)
    ones = np.ones(m)

    def times(v):        # (X - 1 mean^T) v
        return X @ v - np.outer(ones, mean @ v)

    def times_t(y):      # (X - 1 mean^T)^T y
        return X.T @ y - np.outer(mean, ones @ y)

    Y = times(rng.standard_normal((d, p)))
    Y = times(times_t(np.linalg.qr(Y)[0]))
    Q = np.linalg.qr(Y)[0]
    B = times_t(Q).T
    _, _, vt = np.linalg.svd(B, full_matrices=False)
    return vt[0]


def build_cluster_trees(A_shape, cluster, leaf_size, A=None, points=None, col_points=None,
                        random_state=None):
    """Row and column trees for an ``A_shape`` matrix (shared if symmetric points).

    Parameters
    ----------
    A_shape : tuple of int
        ``(m, n)``, the shape of the matrix.
    cluster : {"pca", "index", "geometric"}
        ``"geometric"`` clusters ``points`` / ``col_points``; the others
        cluster the rows and columns of ``A``.
    leaf_size : int
    A : ndarray of shape (m, n), optional
        Needed for ``"pca"``.
    points, col_points : ndarray of shape (m, d) / (n, d), optional
        Coordinates for ``"geometric"``; without ``col_points`` a square
        matrix shares one tree for rows and columns.
    random_state : int or None

    Returns
    -------
    row_tree, col_tree : ClusterTree

    Raises
    ------
    ValueError
        ``"geometric"`` without points, or points that do not match the shape.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.cluster import build_cluster_trees
    >>> A = np.random.default_rng(0).standard_normal((100, 60))
    >>> rows, cols = build_cluster_trees(A.shape, "pca", 16, A=A, random_state=0)
    >>> rows.size, cols.size, sorted(rows.perm.tolist()) == list(range(100))
    (100, 60, True)
    >>> x = np.linspace(0, 1, 64)[:, None]
    >>> rows, cols = build_cluster_trees((64, 64), "geometric", 8, points=x)
    >>> rows is cols
    True
    """
    cluster = check_choice(cluster, "cluster", CLUSTER_METHODS)
    m, n = A_shape
    if cluster == "geometric":
        if points is None:
            raise ValueError("cluster='geometric' needs points (row coordinates); weight "
                             "matrices have none: use cluster='pca' or 'index'")
        row_tree = ClusterTree.from_points(points, leaf_size)
        if row_tree.size != m:
            raise ValueError(f"points has {row_tree.size} rows but the matrix has {m} rows")
        if col_points is None:
            if m != n:
                raise ValueError("col_points is required for a non-square matrix")
            return row_tree, row_tree
        col_tree = ClusterTree.from_points(col_points, leaf_size)
        if col_tree.size != n:
            raise ValueError(f"col_points has {col_tree.size} rows but the matrix has {n} columns")
        return row_tree, col_tree
    row_tree = ClusterTree.from_matrix(A, 0, cluster, leaf_size, random_state)
    col_tree = ClusterTree.from_matrix(A, 1, cluster, leaf_size, random_state)
    return row_tree, col_tree
