"""Cluster trees (:mod:`hmnumba.cluster`): geometric, PCA and index."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmnumba.cluster import ClusterTree, build_cluster_trees


def check_tree_invariants(tree, n, leaf_size):
    """Permutation, leaf sizes, nesting of node ranges, levels."""
    assert tree.size == n
    assert tree.perm.dtype == np.int64
    assert np.array_equal(np.sort(tree.perm), np.arange(n))
    assert tree.start[0] == 0 and tree.stop[0] == n
    assert np.all(tree.start < tree.stop)  # no empty node
    leaves = tree.leaves
    assert np.all(tree.stop[leaves] - tree.start[leaves] <= leaf_size)
    for t in range(tree.n_nodes):
        c0, c1 = tree.children[t]
        assert (c0 < 0) == (c1 < 0)
        if c0 < 0:
            continue
        # the two children partition the parent's range, in order
        assert tree.start[c0] == tree.start[t]
        assert tree.stop[c0] == tree.start[c1]
        assert tree.stop[c1] == tree.stop[t]
        assert tree.level[c0] == tree.level[c1] == tree.level[t] + 1
        # only clusters larger than a leaf are split
        assert tree.stop[t] - tree.start[t] > leaf_size
    # the leaves partition 0..n
    order = np.argsort(tree.start[leaves])
    assert np.array_equal(tree.start[leaves][order][1:], tree.stop[leaves][order][:-1])
    assert tree.depth == tree.level.max()


def check_boxes_contain_points(tree, points):
    for t in range(tree.n_nodes):
        P = points[tree.perm[tree.start[t]:tree.stop[t]]]
        assert np.all(P >= tree.box_lo[t]) and np.all(P <= tree.box_hi[t])
        # and they are the tight bounding boxes
        assert np.array_equal(P.min(axis=0), tree.box_lo[t])
        assert np.array_equal(P.max(axis=0), tree.box_hi[t])


@given(n=st.integers(1, 400), dim=st.integers(1, 4), leaf_size=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-6, 1.0, 1e6]))
def test_geometric_tree_invariants(n, dim, leaf_size, seed, scale):
    points = np.random.default_rng(seed).random((n, dim)) * scale
    tree = ClusterTree.from_points(points, leaf_size)
    check_tree_invariants(tree, n, leaf_size)
    check_boxes_contain_points(tree, points)


def test_geometric_split_separates_two_distant_groups():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.random((50, 2)), rng.random((70, 2)) + 10.0])
    tree = ClusterTree.from_points(points, leaf_size=8)
    left, right = tree.children[0]
    groups = [set(tree.perm[tree.start[c]:tree.stop[c]]) for c in (left, right)]
    assert sorted(groups, key=len) == [set(range(50)), set(range(50, 120))]


@pytest.mark.parametrize("n,leaf_size", [(1, 1), (2, 1), (1000, 8), (1023, 1), (4096, 32)])
def test_duplicate_points_terminate_with_logarithmic_depth(n, leaf_size):
    points = np.full((n, 3), 0.25)
    tree = ClusterTree.from_points(points, leaf_size)
    check_tree_invariants(tree, n, leaf_size)
    assert tree.depth <= int(np.ceil(np.log2(max(n, 2))))


def test_two_groups_of_duplicates_terminate():
    points = np.vstack([np.zeros((300, 2)), np.ones((200, 2))])
    tree = ClusterTree.from_points(points, leaf_size=4)
    check_tree_invariants(tree, 500, 4)
    check_boxes_contain_points(tree, points)
    assert tree.depth <= 2 + int(np.ceil(np.log2(500)))


@pytest.mark.parametrize("dim", [2, 3])
def test_collinear_points_terminate_with_bounded_depth(dim):
    n = 2000
    direction = np.arange(1.0, dim + 1.0)
    even = np.linspace(0.0, 1.0, n)[:, None] * direction
    tree = ClusterTree.from_points(even, leaf_size=16)
    check_tree_invariants(tree, n, 16)
    check_boxes_contain_points(tree, even)
    assert tree.depth <= int(np.ceil(np.log2(n)))
    rand = np.random.default_rng(1).random(n)[:, None] * direction
    tree = ClusterTree.from_points(rand, leaf_size=16)
    check_tree_invariants(tree, n, 16)
    assert tree.depth <= 2 * int(np.ceil(np.log2(n)))


def test_geometric_tree_of_one_dimensional_points():
    x = np.random.default_rng(2).random(300)
    tree = ClusterTree.from_points(x, leaf_size=10)
    check_tree_invariants(tree, 300, 10)
    # in 1-D, bisection keeps every leaf an interval: leaves are sorted blocks
    leaves = tree.leaves[np.argsort(tree.start[tree.leaves])]
    highs = [x[tree.perm[tree.start[t]:tree.stop[t]]].max() for t in leaves]
    lows = [x[tree.perm[tree.start[t]:tree.stop[t]]].min() for t in leaves]
    assert all(h < lo for h, lo in zip(highs[:-1], lows[1:]))


def test_pca_tree_separates_two_groups_of_rows_at_the_first_split():
    rng = np.random.default_rng(3)
    n_per, n_cols = 60, 40
    a, b = rng.standard_normal(n_cols), rng.standard_normal(n_cols)
    rows = np.vstack([a + 0.01 * rng.standard_normal((n_per, n_cols)),
                      b + 0.01 * rng.standard_normal((n_per, n_cols))])
    shuffle = rng.permutation(2 * n_per)
    A = rows[shuffle]
    group_a = set(np.flatnonzero(shuffle < n_per))
    group_b = set(np.flatnonzero(shuffle >= n_per))
    for axis, M in ((0, A), (1, np.ascontiguousarray(A.T))):
        tree = ClusterTree.from_matrix(M, axis=axis, method="pca", leaf_size=8, random_state=0)
        check_tree_invariants(tree, 2 * n_per, 8)
        left, right = tree.children[0]
        halves = [set(tree.perm[tree.start[c]:tree.stop[c]]) for c in (left, right)]
        assert halves in ([group_a, group_b], [group_b, group_a])


def test_pca_tree_on_a_large_matrix_uses_the_power_iteration_and_still_separates():
    rng = np.random.default_rng(4)
    n_per, n_cols = 300, 200
    a, b = rng.standard_normal(n_cols), rng.standard_normal(n_cols)
    A = np.vstack([a + 0.05 * rng.standard_normal((n_per, n_cols)),
                   b + 0.05 * rng.standard_normal((n_per, n_cols))])
    tree = ClusterTree.from_matrix(A, axis=0, method="pca", leaf_size=16, random_state=1)
    check_tree_invariants(tree, 2 * n_per, 16)
    left, _ = tree.children[0]
    first = set(tree.perm[tree.start[left]:tree.stop[left]])
    assert first in (set(range(n_per)), set(range(n_per, 2 * n_per)))


def test_pca_tree_is_deterministic_for_a_seed():
    A = np.random.default_rng(5).standard_normal((500, 150))
    t1 = ClusterTree.from_matrix(A, 0, "pca", 16, random_state=7)
    t2 = ClusterTree.from_matrix(A, 0, "pca", 16, random_state=7)
    assert np.array_equal(t1.perm, t2.perm)


@given(m=st.integers(1, 200), n=st.integers(1, 200), leaf_size=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1), equal_rows=st.booleans())
def test_pca_tree_invariants(m, n, leaf_size, seed, equal_rows):
    A = np.random.default_rng(seed).standard_normal((m, n))
    if equal_rows:
        A[:] = A[0]  # all rows equal: any split is as good, but it must be balanced
    for axis, size in ((0, m), (1, n)):
        tree = ClusterTree.from_matrix(A, axis=axis, method="pca", leaf_size=leaf_size,
                                       random_state=0)
        check_tree_invariants(tree, size, leaf_size)
        assert tree.depth <= int(np.ceil(np.log2(max(size, 2))))


@pytest.mark.parametrize("n,leaf_size", [(1, 4), (7, 3), (100, 8), (257, 16)])
def test_index_tree_nodes_are_contiguous_index_ranges(n, leaf_size):
    tree = ClusterTree.from_index(n, leaf_size)
    check_tree_invariants(tree, n, leaf_size)
    for t in range(tree.n_nodes):
        members = np.sort(tree.perm[tree.start[t]:tree.stop[t]])
        assert np.array_equal(members, np.arange(tree.start[t], tree.stop[t]))


@pytest.mark.parametrize("n,leaf_size", [(1, 4), (7, 3), (100, 8), (257, 16)])
def test_index_tree_keeps_natural_order(n, leaf_size):
    tree = ClusterTree.from_index(n, leaf_size)
    assert np.array_equal(tree.perm, np.arange(n))
    check_tree_invariants(tree, n, leaf_size)
    A = np.random.default_rng(6).standard_normal((n, 5))
    tree = ClusterTree.from_matrix(A, axis=0, method="index", leaf_size=leaf_size)
    assert np.array_equal(tree.perm, np.arange(n))
    assert tree.depth <= int(np.ceil(np.log2(max(n, 2))))


def test_build_cluster_trees_shares_the_tree_for_square_points():
    X = np.random.default_rng(7).random((100, 2))
    rows, cols = build_cluster_trees((100, 100), "geometric", 8, points=X)
    assert rows is cols
    Y = np.random.default_rng(8).random((60, 2))
    rows, cols = build_cluster_trees((100, 60), "geometric", 8, points=X, col_points=Y)
    assert rows.size == 100 and cols.size == 60


def test_build_cluster_trees_checks_point_counts():
    X = np.random.default_rng(9).random((100, 2))
    with pytest.raises(ValueError, match="points"):
        build_cluster_trees((90, 90), "geometric", 8, points=X)
    with pytest.raises(ValueError, match="col_points"):
        build_cluster_trees((100, 50), "geometric", 8, points=X)


def test_tree_nbytes_counts_its_arrays():
    tree = ClusterTree.from_points(np.random.default_rng(10).random((64, 3)), 8)
    expected = sum(a.nbytes for a in (tree.perm, tree.start, tree.stop, tree.children,
                                      tree.level, tree.box_lo, tree.box_hi))
    assert tree.nbytes == expected
