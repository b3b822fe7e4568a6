"""The attempt tree of the adaptive build (``hmnumba.construct``) and its
passes in ``hmnumba.kernels.trees``, against obviously-correct references."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmnumba import HMatrix, construct
from hmnumba.cluster import ClusterTree
from hmnumba.kernels import trees


@st.composite
def attempt_trees(draw):
    """A random attempt tree: ``parent[a] < a`` (-1 at the top), dense
    leaves below any attempt or below -1, own costs (inf: not accepted)."""
    n = draw(st.integers(0, 30))
    parent = np.array([draw(st.integers(-1, a - 1)) for a in range(n)], np.int64)
    n_dense = draw(st.integers(0, 30))
    dense_parent = np.array([draw(st.integers(-1, n - 1)) for _ in range(n_dense)], np.int64)
    cost = st.one_of(st.just(np.inf), st.integers(1, 50).map(float))
    own = np.array([draw(cost) for _ in range(n)], np.float64)
    dense_cost = np.array([float(draw(st.integers(1, 50))) for _ in range(n_dense)])
    flags = np.array([draw(st.booleans()) for _ in range(n)], np.bool_)
    return parent, own, flags, dense_parent, dense_cost


def _children(parent, dense_parent, a):
    return np.flatnonzero(parent == a), np.flatnonzero(dense_parent == a)


def _reference_best(parent, own, expanded, dense_parent, dense_cost, a):
    """Storage of attempt ``a`` at its best, by recursion over its subtree."""
    if not expanded[a]:
        return own[a]
    kids, leaves = _children(parent, dense_parent, a)
    sub = dense_cost[leaves].sum() + sum(_reference_best(parent, own, expanded, dense_parent,
                                                         dense_cost, c) for c in kids)
    return min(own[a], sub)


def _ancestors(parent, a):
    while parent[a] >= 0:
        a = parent[a]
        yield a


@given(attempt_trees())
def test_cheaper_representation_keeps_own_factors_where_they_store_no_more(tree):
    parent, own, expanded, dense_parent, dense_cost = tree
    use_own = trees.cheaper_representation(parent, own, expanded, dense_parent, dense_cost)
    for a in range(parent.size):
        if not expanded[a]:
            assert use_own[a]
            continue
        kids, leaves = _children(parent, dense_parent, a)
        sub = dense_cost[leaves].sum() + sum(
            _reference_best(parent, own, expanded, dense_parent, dense_cost, c) for c in kids)
        assert use_own[a] == (own[a] <= sub)


@given(attempt_trees())
def test_below_marked_finds_every_marked_ancestor(tree):
    parent, _, mark, _, _ = tree
    below = trees.below_marked(parent, mark)
    for a in range(parent.size):
        assert below[a] == any(mark[p] for p in _ancestors(parent, a))


@given(attempt_trees())
def test_dense_subtrees_are_refined_attempts_with_only_dense_descendants(tree):
    parent, _, refined, dense_parent, _ = tree
    is_dense = trees.dense_subtrees(parent, refined, dense_parent)

    def all_dense(a):
        kids, leaves = _children(parent, dense_parent, a)
        return (refined[a] and kids.size + leaves.size > 0
                and all(all_dense(c) for c in kids))

    for a in range(parent.size):
        assert is_dense[a] == all_dense(a)


def test_attempt_tree_numbers_children_after_their_parents():
    tree = ClusterTree.from_points(np.arange(64.0)[:, None], 16)
    att = construct._AttemptTree(tree, tree, False, np.zeros(0, np.int64),
                                 np.zeros(0, np.int64))
    root = att.add(np.array([0]), np.array([0]), np.array([-1]))
    ids, rows, cols, _ = att.expand(root, np.array([0]), np.array([0]), root, root[:0])
    assert ids.tolist() == [1, 2, 3, 4]
    kids, k_rows, k_cols, k_parent = att.expand(ids, rows, cols, ids[:2], ids[2:])
    assert kids.tolist() == list(range(5, 21)) and np.all(k_parent == np.repeat(range(4), 4))
    # Pairs of two 16-point leaf clusters split into themselves, as dense leaves.
    none, _, _, _ = att.expand(kids, k_rows, k_cols, kids, kids[:0])
    assert none.size == 0
    att.accept(np.array([2]), np.array([3]), np.array([0.5]), np.array([2.0]), np.array([7]))
    done = att.finish()
    assert done.row.size == 21 and np.all(done.parent < np.arange(21))
    assert done.parent[kids].tolist() == np.repeat(ids, 4).tolist()
    assert np.array_equal(done.dense_row, k_rows) and np.array_equal(done.dense_parent, kids)
    assert done.refined.tolist() == [0, 1, 2] + list(range(5, 21))
    assert done.tentative.tolist() == [3, 4]
    assert (done.accepted.tolist(), done.rank.tolist(), done.offset.tolist()) == ([2], [3], [7])
    empty = construct._AttemptTree(tree, tree, True, np.zeros(0, np.int64),
                                   np.zeros(0, np.int64)).finish()
    assert all(a.size == 0 for a in empty)


@pytest.mark.parametrize("admissibility", ["adaptive", "weak"])
def test_look_ahead_never_stores_more_than_accepting_at_once(admissibility, monkeypatch):
    # The look-ahead of LOOKAHEAD_RATIO's comment, small: a smooth operator
    # plus noise, whose large blocks are accepted at a poor ratio. Truncated
    # SVD makes each block's rank depend on the block alone.
    rng = np.random.default_rng(0)
    s, t = rng.random(256), rng.random(256)
    W = 1.0 / (1.0 + 10.0 * np.abs(s[:, None] - t[None, :]))
    W += 1e-4 * np.linalg.norm(W) / 256 * rng.standard_normal(W.shape)
    opts = dict(tol=1e-3, leaf_size=16, admissibility=admissibility, method="svd",
                structure="hierarchical", random_state=0)
    H = HMatrix.from_dense(W, **opts)
    monkeypatch.setattr(construct, "LOOKAHEAD_RATIO", 0.0)
    H0 = HMatrix.from_dense(W, **opts)
    assert H.data.size < H0.data.size
    for G in (H, H0):
        assert np.linalg.norm(G.to_dense() - W) <= 1e-3 * np.linalg.norm(W)
