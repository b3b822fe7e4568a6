"""Block partitions (:mod:`hmnumba.blocks`): tiling, admissibility, splitting."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import cdist, pdist

from hmnumba import HMatrix
from hmnumba.blocks import initial_partition, split_pairs
from hmnumba.cluster import ClusterTree


def coverage(row_tree, col_tree, row_node, col_node):
    """How many blocks cover each (i, j) of the (cluster-ordered) matrix."""
    count = np.zeros((row_tree.size, col_tree.size), np.int64)
    for t, s in zip(row_node, col_node):
        count[row_tree.start[t]:row_tree.stop[t], col_tree.start[s]:col_tree.stop[s]] += 1
    return count


def trees(kind, m, n, leaf_size, seed, dim=2):
    """Row and column trees of one kind, and the points (geometric only)."""
    rng = np.random.default_rng(seed)
    if kind == "geometric":
        X, Y = rng.random((m, dim)), rng.random((n, dim))
        return ClusterTree.from_points(X, leaf_size), ClusterTree.from_points(Y, leaf_size), X, Y
    if kind == "index":
        rows, cols = ClusterTree.from_index(m, leaf_size), ClusterTree.from_index(n, leaf_size)
        return rows, cols, None, None
    A = rng.standard_normal((m, n))
    return (ClusterTree.from_matrix(A, 0, "pca", leaf_size, 0),
            ClusterTree.from_matrix(A, 1, "pca", leaf_size, 0), None, None)


@given(m=st.integers(1, 120), n=st.integers(1, 120), leaf_size=st.integers(1, 16),
       seed=st.integers(0, 2**32 - 1), eta=st.floats(0.1, 4.0),
       admissibility=st.sampled_from(["strong", "weak", "adaptive"]),
       kind=st.sampled_from(["geometric", "index", "pca"]))
def test_initial_partition_tiles_the_matrix_exactly(m, n, leaf_size, seed, eta, admissibility,
                                                    kind):
    if admissibility == "strong" and kind == "pca":
        kind = "geometric"  # strong needs boxes (tested separately below)
    rows, cols, _, _ = trees(kind, m, n, leaf_size, seed)
    t, s, cand = initial_partition(rows, cols, admissibility, eta)
    assert t.shape == s.shape == cand.shape
    assert cand.dtype == np.bool_
    assert np.all(coverage(rows, cols, t, s) == 1)
    # a block that is not a candidate is a pair of leaves (stored dense)
    assert np.all(rows.children[t[~cand], 0] < 0)
    assert np.all(cols.children[s[~cand], 0] < 0)


def test_adaptive_partition_starts_with_the_whole_matrix():
    rows, cols, _, _ = trees("pca", 50, 40, 8, 0)
    t, s, cand = initial_partition(rows, cols, "adaptive")
    assert t.tolist() == [0] and s.tolist() == [0] and cand.tolist() == [True]


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_strong_admissible_blocks_satisfy_the_criterion(eta, dim):
    rows, cols, X, Y = trees("geometric", 300, 250, 8, seed=dim, dim=dim)
    t, s, cand = initial_partition(rows, cols, "strong", eta)
    assert cand.any()
    for a, b in zip(t[cand], s[cand]):
        # on the bounding boxes used by the partition ...
        diam_t = np.linalg.norm(rows.box_hi[a] - rows.box_lo[a])
        diam_s = np.linalg.norm(cols.box_hi[b] - cols.box_lo[b])
        gap = np.maximum(0.0, np.maximum(cols.box_lo[b] - rows.box_hi[a],
                                         rows.box_lo[a] - cols.box_hi[b]))
        dist = np.linalg.norm(gap)
        assert dist > 0.0
        assert min(diam_t, diam_s) <= eta * dist * (1 + 1e-12)
        # ... and therefore on the point sets themselves
        P = X[rows.perm[rows.start[a]:rows.stop[a]]]
        Q = Y[cols.perm[cols.start[b]:cols.stop[b]]]
        pdiam = min(pdist(P).max(initial=0.0), pdist(Q).max(initial=0.0))
        assert pdiam <= eta * cdist(P, Q).min() * (1 + 1e-12)


def test_strong_partition_of_a_kernel_matrix_has_far_field_blocks():
    rows, cols, _, _ = trees("geometric", 1000, 1000, 16, seed=0)
    t, s, cand = initial_partition(rows, cols, "strong", 2.0)
    sizes = (rows.stop[t] - rows.start[t]) * (cols.stop[s] - cols.start[s])
    assert sizes[cand].sum() > 0.5 * 1000 * 1000  # most of the matrix is far field


def test_weak_candidates_lie_off_the_diagonal():
    rows, cols, _, _ = trees("index", 200, 200, 8, 0)
    t, s, cand = initial_partition(rows, cols, "weak")
    for a, b in zip(t[cand], s[cand]):
        r0, r1 = rows.start[a], rows.stop[a]
        c0, c1 = cols.start[b], cols.stop[b]
        assert r1 <= c0 or c1 <= r0  # no diagonal entry in a candidate
    # the dense blocks are exactly the diagonal leaf pairs
    assert np.array_equal(t[~cand], s[~cand])


def test_strong_admissibility_with_pca_trees_raises():
    rows, cols, _, _ = trees("pca", 60, 60, 8, 0)
    with pytest.raises(ValueError, match="strong"):
        initial_partition(rows, cols, "strong", 2.0)
    A = np.random.default_rng(0).standard_normal((60, 60))
    with pytest.raises(ValueError, match="strong"):
        HMatrix.from_dense(A, admissibility="strong", cluster="pca")


def test_strong_admissibility_with_points_of_different_dimension_raises():
    rows = ClusterTree.from_points(np.random.default_rng(0).random((50, 2)), 8)
    cols = ClusterTree.from_points(np.random.default_rng(1).random((50, 3)), 8)
    with pytest.raises(ValueError, match="dimension"):
        initial_partition(rows, cols, "strong", 2.0)


def test_unknown_admissibility_raises():
    rows, cols, _, _ = trees("index", 20, 20, 4, 0)
    with pytest.raises(ValueError, match="admissibility"):
        initial_partition(rows, cols, "hodlr")


@pytest.mark.parametrize("kind", ["geometric", "pca"])
def test_split_pairs_children_tile_their_parent(kind):
    rows, cols, _, _ = trees(kind, 90, 70, 6, 0)
    # pairs at several levels, including leaf pairs and one-sided leaves
    pairs = [(0, 0), (rows.children[0, 0], 0), (rows.leaves[0], cols.leaves[0]),
             (rows.leaves[1], 0), (0, cols.leaves[-1])]
    rn = np.array([p[0] for p in pairs], np.int64)
    cn = np.array([p[1] for p in pairs], np.int64)
    ch_r, ch_c, ch_p, lf_r, lf_c, lf_p = split_pairs(rows, cols, rn, cn)
    for k, (a, b) in enumerate(pairs):
        sub_r = np.concatenate([ch_r[ch_p == k], lf_r[lf_p == k]])
        sub_c = np.concatenate([ch_c[ch_p == k], lf_c[lf_p == k]])
        count = coverage(rows, cols, sub_r, sub_c)
        inside = np.zeros_like(count)
        inside[rows.start[a]:rows.stop[a], cols.start[b]:cols.stop[b]] = 1
        assert np.array_equal(count, inside)
    # a pair of two leaves cannot be split: it comes back as a leaf pair
    assert list(lf_p) == [2]


@pytest.mark.parametrize("admissibility", ["strong", "weak", "adaptive"])
def test_final_hmatrix_blocks_tile_the_matrix_exactly(admissibility):
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(150))
    y = np.sort(rng.random(110))
    A = 1.0 / (0.02 + np.abs(x[:, None] - y[None, :]))
    H = HMatrix.from_dense(A, tol=1e-6, admissibility=admissibility, leaf_size=8,
                           cluster="geometric", points=x, col_points=y)
    count = np.zeros(H.shape, np.int64)
    for b in range(H.n_blocks):
        count[H.row_start[b]:H.row_stop[b], H.col_start[b]:H.col_stop[b]] += 1
    assert np.all(count == 1)
