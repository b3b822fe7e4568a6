"""The symmetric-form matrix-vector kernel (:mod:`hmnumba.kernels.symmetric`)
on block lists built by hand: against a dense reference assembled in numpy,
bit for bit across thread counts and calls, and the slab cuts."""
import numba
import numpy as np
import pytest

from hmnumba.blocks import BLOCK_OVERHEAD, SYMMETRIC_SLABS, symmetric_slabs
from hmnumba.kernels.symmetric import symmetric_hmatvec


# ---------------------------------------------------------------- block lists


def _split(lo, hi, leaf, rng):
    """A random binary cluster tree of ``[lo, hi)``: nested ``(lo, hi, children)``."""
    if hi - lo <= leaf:
        return (lo, hi, ())
    mid = int(rng.integers(lo + 1, hi))         # uneven cuts, every part non-empty
    return (lo, hi, (_split(lo, mid, leaf, rng), _split(mid, hi, leaf, rng)))


def _offdiagonal(a, b, rng, blocks, p_split):
    """Blocks tiling ``a x b`` (``a`` entirely before ``b``): strictly upper."""
    if a[2] and b[2] and rng.random() < p_split:
        for ca in a[2]:
            for cb in b[2]:
                _offdiagonal(ca, cb, rng, blocks, p_split)
        return
    m, n = a[1] - a[0], b[1] - b[0]
    u = rng.random()
    kind = -1 if u < 0.25 else (0 if u < 0.35 else int(rng.integers(1, min(m, n) + 1)))
    blocks.append((a[0], a[1], b[0], b[1], kind))


def _symmetric_blocks(node, rng, blocks, p_split, p_lowrank_diag):
    lo, hi, children = node
    if not children:
        m = hi - lo
        kind = int(rng.integers(1, m + 1)) if rng.random() < p_lowrank_diag else -1
        blocks.append((lo, hi, lo, hi, kind))
        return
    first, second = children
    _symmetric_blocks(first, rng, blocks, p_split, p_lowrank_diag)
    _symmetric_blocks(second, rng, blocks, p_split, p_lowrank_diag)
    _offdiagonal(first, second, rng, blocks, p_split)


def random_symmetric_form(N, seed, leaf=6, p_split=0.5, p_lowrank_diag=0.2,
                          dtype=np.float64, symmetric_diagonal=True):
    """Random symmetric-form block arrays of an ``N x N`` matrix.

    Blocks are shuffled (storage order is arbitrary) and their data laid out
    in another random order, with gaps, so that only ``offset`` says where a
    block lives. Diagonal blocks are symmetric (dense ``(D + D^T) / 2``,
    low-rank ``U U^T``) unless ``symmetric_diagonal`` is false: the kernel
    must use a diagonal block as stored, which only a non-symmetric one
    checks. Returns ``(data, r0, r1, c0, c1, rank, offset)``.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    _symmetric_blocks(_split(0, N, leaf, rng), rng, blocks, p_split, p_lowrank_diag)
    blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    r0, r1, c0, c1, rank = (np.array(col, dtype=np.int64) for col in zip(*blocks))
    m, n = r1 - r0, c1 - c0
    size = np.where(rank < 0, m * n, np.maximum(rank, 0) * (m + n))
    offset = np.empty(len(blocks), dtype=np.int64)
    pos = 0
    for b in rng.permutation(len(blocks)):
        offset[b] = pos
        pos += size[b] + int(rng.integers(0, 3))
    data = np.full(pos, np.nan)                 # a kernel that read a gap would say so
    for b in range(len(blocks)):
        values = rng.standard_normal(size[b])
        if symmetric_diagonal and r0[b] == c0[b]:
            if rank[b] < 0:
                D = values.reshape(m[b], m[b])
                values = ((D + D.T) / 2).ravel()
            else:
                values[rank[b] * m[b]:] = values[:rank[b] * m[b]]      # Vt = Ut
        data[offset[b]:offset[b] + size[b]] = values
    return data.astype(dtype), r0, r1, c0, c1, rank, offset


def dense_reference(data, r0, r1, c0, c1, rank, offset, N):
    """The ``N x N`` matrix in float64: stored blocks plus mirrors of the upper ones."""
    A = np.zeros((N, N))
    count = np.zeros((N, N), dtype=np.int64)
    for b in range(rank.shape[0]):
        m, n, k, off = r1[b] - r0[b], c1[b] - c0[b], rank[b], offset[b]
        d = data.astype(np.float64)
        if k < 0:
            B = d[off:off + m * n].reshape(m, n)
        elif k == 0:
            B = np.zeros((m, n))
        else:
            Ut = d[off:off + k * m].reshape(k, m)
            Vt = d[off + k * m:off + k * (m + n)].reshape(k, n)
            B = Ut.T @ Vt
        A[r0[b]:r1[b], c0[b]:c1[b]] += B
        count[r0[b]:r1[b], c0[b]:c1[b]] += 1
        if r1[b] <= c0[b]:
            A[c0[b]:c1[b], r0[b]:r1[b]] += B.T
            count[c0[b]:c1[b], r0[b]:r1[b]] += 1
        else:
            assert r0[b] == c0[b] and r1[b] == c1[b], "neither diagonal nor strictly upper"
    assert (count == 1).all(), "stored blocks and mirrors must tile the matrix"
    return A


def product(data, r0, r1, c0, c1, rank, offset, x, n_slabs=SYMMETRIC_SLABS):
    slabs = symmetric_slabs(r0, r1, c0, c1, rank, n_slabs)
    return symmetric_hmatvec(data, r0, r1, c0, c1, rank, offset, slabs, x)


def relative_error(y, A, x):
    scale = (np.abs(A) @ np.abs(x)).max()
    return np.abs(y - A @ x).max() / scale if scale > 0 else np.abs(y).max()


@pytest.fixture
def restore_threads():
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


# ---------------------------------------------------------------- products


@pytest.mark.parametrize("N, seed", [(2, 0), (7, 1), (13, 2), (50, 3), (97, 4), (300, 5)])
@pytest.mark.parametrize("n_slabs", [1, 3, SYMMETRIC_SLABS, 1000])
def test_matches_dense_reference_float64(N, seed, n_slabs):
    arrays = random_symmetric_form(N, seed)
    A = dense_reference(*arrays, N)
    np.testing.assert_array_equal(A, A.T)
    x = np.random.default_rng(seed + 100).standard_normal(N)
    y = product(*arrays, x, n_slabs)
    assert y.dtype == np.float64 and y.shape == (N,)
    assert relative_error(y, A, x) < 1e-12


@pytest.mark.parametrize("N, seed", [(1, 0), (13, 2), (120, 6)])
def test_diagonal_blocks_used_as_stored(N, seed):
    """Non-symmetric diagonal blocks: ``y_r += A_rr x_r``, not ``A_rr^T x_r``."""
    arrays = random_symmetric_form(N, seed, p_lowrank_diag=0.5, symmetric_diagonal=False)
    A = dense_reference(*arrays, N)
    x = np.random.default_rng(seed).standard_normal(N)
    assert relative_error(product(*arrays, x, 4), A, x) < 1e-12


@pytest.mark.parametrize("N, seed", [(7, 1), (97, 4), (300, 5)])
def test_matches_dense_reference_float32(N, seed):
    arrays64 = random_symmetric_form(N, seed)
    arrays32 = random_symmetric_form(N, seed, dtype=np.float32)
    assert arrays32[0].dtype == np.float32
    x = np.random.default_rng(seed + 100).standard_normal(N)
    y = product(*arrays32, x)
    assert y.dtype == np.float64
    # float64 accumulation: exact up to float64 rounding for the stored values ...
    assert relative_error(y, dense_reference(*arrays32, N), x) < 1e-12
    # ... and float32 rounding of the data against the float64 matrix.
    assert relative_error(y, dense_reference(*arrays64, N), x) < 1e-5


def test_one_by_one():
    data = np.array([3.0])
    one = np.array([0])
    end = np.array([1])
    y = product(data, one, end, one, end, np.array([-1]), one, np.array([2.0]))
    np.testing.assert_array_equal(y, [6.0])


def test_no_blocks():
    empty = np.zeros(0, dtype=np.int64)
    y = product(np.zeros(0), empty, empty, empty, empty, empty, empty, np.zeros(0))
    assert y.shape == (0,)


def test_single_lowrank_diagonal_block():
    rng = np.random.default_rng(7)
    N, k = 9, 3
    U = rng.standard_normal((N, k))
    data = np.concatenate([U.T.ravel(), U.T.ravel()])      # A = U U^T, stored Ut then Vt
    z = np.array([0])
    x = rng.standard_normal(N)
    y = product(data, z, np.array([N]), z, np.array([N]), np.array([k]), z, x)
    np.testing.assert_allclose(y, U @ (U.T @ x), rtol=1e-13, atol=1e-13)


def test_two_by_two_blocks_by_hand():
    """Diagonal 1 x 1 blocks and one strictly upper dense block and its mirror."""
    r0, r1 = np.array([0, 0, 1]), np.array([1, 1, 2])
    c0, c1 = np.array([0, 1, 1]), np.array([1, 2, 2])
    data = np.array([2.0, 5.0, 3.0])
    offset = np.array([0, 1, 2])
    for rank in (np.array([-1, -1, -1]), np.array([-1, 0, -1])):
        y = product(data, r0, r1, c0, c1, rank, offset, np.array([1.0, 10.0]))
        b = 5.0 if rank[1] < 0 else 0.0
        np.testing.assert_array_equal(y, [2.0 + 10 * b, b + 30.0])


def test_rank_zero_and_dense_only_slabs():
    """All upper blocks zero: only the diagonal acts (a slab may hold no low-rank block)."""
    data, r0, r1, c0, c1, rank, offset = random_symmetric_form(60, 11)
    rank = np.where(r1 <= c0, 0, -1)
    diag = rank < 0
    size = (r1 - r0) * (c1 - c0)
    offset = np.where(diag, np.concatenate([[0], np.cumsum(np.where(diag, size, 0))[:-1]]), 0)
    data = np.random.default_rng(1).standard_normal(int(size[diag].sum()))
    x = np.random.default_rng(2).standard_normal(60)
    A = dense_reference(data, r0, r1, c0, c1, rank, offset, 60)
    assert relative_error(product(data, r0, r1, c0, c1, rank, offset, x, 5), A, x) < 1e-12


def test_bit_identical_across_threads_and_calls(restore_threads):
    arrays = random_symmetric_form(400, 21)
    x = np.random.default_rng(0).standard_normal(400)
    slabs = symmetric_slabs(*arrays[1:6], 8)
    assert slabs.shape[0] - 1 == 8
    results = []
    for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS),
                           numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        for _ in range(3):
            results.append(symmetric_hmatvec(*arrays, slabs, x))
    for y in results[1:]:
        assert y.tobytes() == results[0].tobytes()
    A = dense_reference(*arrays, 400)
    assert relative_error(results[0], A, x) < 1e-12


def test_input_arrays_untouched():
    arrays = random_symmetric_form(80, 3)
    x = np.random.default_rng(0).standard_normal(80)
    copies = [a.copy() for a in arrays] + [x.copy()]
    product(*arrays, x)
    for a, b in zip(list(arrays) + [x], copies):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- slabs


def _costs(r0, r1, c0, c1, rank):
    m, n = r1 - r0, c1 - c0
    return np.where(rank < 0, m * n, np.maximum(rank, 0) * (m + n)) + BLOCK_OVERHEAD


@pytest.mark.parametrize("n_slabs", [1, 2, 5, 16, 64, 10_000])
@pytest.mark.parametrize("N, seed", [(1, 0), (50, 3), (500, 4)])
def test_slabs_cover_blocks_once(N, seed, n_slabs):
    _, r0, r1, c0, c1, rank, _ = random_symmetric_form(N, seed)
    n_blocks = rank.shape[0]
    ptr = symmetric_slabs(r0, r1, c0, c1, rank, n_slabs)
    assert ptr.dtype == np.int64
    assert ptr[0] == 0 and ptr[-1] == n_blocks
    assert (np.diff(ptr) > 0).all()                             # monotone, no empty slab
    assert len(ptr) - 1 == min(n_slabs, n_blocks)
    covered = np.concatenate([np.arange(ptr[s], ptr[s + 1]) for s in range(len(ptr) - 1)])
    np.testing.assert_array_equal(covered, np.arange(n_blocks))
    # About equal cost: no slab exceeds its share by more than two blocks.
    cost = _costs(r0, r1, c0, c1, rank)
    slab_cost = np.add.reduceat(cost, ptr[:-1])
    assert slab_cost.max() <= cost.sum() / (len(ptr) - 1) + 2 * cost.max()
    np.testing.assert_array_equal(ptr, symmetric_slabs(r0, r1, c0, c1, rank, n_slabs))


def test_slabs_more_than_blocks():
    z = np.zeros(3, dtype=np.int64)
    ptr = symmetric_slabs(z, z + 1, z, z + 1, z - 1, 50)
    np.testing.assert_array_equal(ptr, [0, 1, 2, 3])


def test_slabs_balance_unequal_blocks():
    """One huge block and many small ones: the huge one gets a slab of its own."""
    sizes = np.array([1000] + [10] * 100)
    r0 = np.zeros(101, dtype=np.int64)
    rank = -np.ones(101, dtype=np.int64)
    ptr = symmetric_slabs(r0, sizes, r0, sizes, rank, 4)
    assert ptr[1] == 1
    slab_cost = np.add.reduceat(_costs(r0, sizes, r0, sizes, rank), ptr[:-1])
    assert slab_cost[1:].max() - slab_cost[1:].min() <= 2 * (100 + BLOCK_OVERHEAD)


def test_slabs_empty_and_invalid():
    empty = np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(symmetric_slabs(empty, empty, empty, empty, empty, 4), [0])
    with pytest.raises(ValueError, match="n_slabs"):
        symmetric_slabs(empty, empty, empty, empty, empty, 0)
