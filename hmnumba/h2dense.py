"""H^2 matrices of dense (weight) arrays, with the exact Frobenius bound.

:func:`build_dense_h2` compresses a general ``m x n`` array ``W``:

1. row and column cluster trees of ``W`` itself (:mod:`hmnumba.cluster`,
   ``"pca"`` or ``"index"``) and the weak (HODLR) block partition of
   :mod:`hmnumba.blocks`: off-diagonal children of diagonal pairs are far
   field, diagonal leaf pairs the dense near field;
2. algebraic nested bases, from the leaves up: the basis of a row cluster
   ``t`` is an orthonormal basis of ``W[t, F(t)]``, ``F(t)`` the columns of
   the far-field blocks of ``t`` and of its ancestors. A leaf takes the
   leading left singular vectors of ``W[t, F(t)]``; an inner node those of
   ``[U_c0^T W[c0, F(t)]; U_c1^T W[c1, F(t)]]``, which are its transfer
   matrices. The same on ``W^T`` gives the column bases;
3. couplings ``S_b = U_t^T W_b V_s`` and dense near-field blocks.

Error control: with orthonormal bases, ``||W_b - U_t U_t^T W_b V_s V_s^T||^2
<= ||(I - U_t U_t^T) W_b||^2 + ||W_b (I - V_s V_s^T)||^2``, and the row part
summed over all blocks is at most the sum of the squared singular values
discarded at every row node (the far-field columns of a node and its
ancestors are disjoint blocks). Each node discards at most the fraction
``tau`` of its own ``||W[t, F(t)]||^2`` with ``tau`` chosen so that both sums
stay within half the budget ``tol^2 ||W||_F^2``. The result (in its storage
dtype) is then multiplied out and ``||W - H||_F`` computed exactly; a miss
tightens ``tau`` and builds again, so ``||W - H||_F <= tol ||W||_F`` holds
for the matrix returned.
"""
import numpy as np

from hmnumba._pages import with_small_pages
from hmnumba._threads import one_blas_thread, serial_if_unsafe
from hmnumba.cluster import build_cluster_trees
from hmnumba.construct import global_low_rank
from hmnumba.h2build import FLOAT32_MIN_TOL, level_pointer
from hmnumba.h2schedule import leaf_index, subtrees, two_phase
from hmnumba.kernels import h2_general as kg
from hmnumba.kernels import h2_products as kp
from hmnumba.kernels import trees
from hmnumba.storage import Packed

# First try keeps this fraction of the budget for the bases; the rest covers
# rounding to the storage dtype.
FIRST_BUDGET = 0.9
MAX_TRIES = 8
# Adaptive partition: a block is far field when its factors at tol would
# store at most this fraction of its entries.
ADAPTIVE_SAVING = 0.5
# After the first success, tau is relaxed at most RELAX_STEPS times towards
# RELAX_MARGIN of the room the exact error leaves (error ~ sqrt(tau)).
RELAX_STEPS = 4
# Adaptive partitions tried (the smallest result is kept): (saving, number of
# top levels always split). On the shuffled 2-D Poisson operator (1024) at
# tol 1e-1 the root block alone needs nested ranks up to 321 (4.0 MB), three
# forced levels and saving 0.25 store 0.35 MB; at 1e-2 (0.5, 3) is best.
PARTITIONS = ((0.5, 0), (0.5, 3), (0.25, 3))
RELAX_MARGIN = 0.8


def _far_columns(row_tree, col_tree, bt, bs):
    """For each row node, the (cluster-ordered) column indices of its far
    field and of its ancestors' far fields."""
    own = [[] for _ in range(row_tree.n_nodes)]
    for t, s in zip(bt.tolist(), bs.tolist()):
        own[t].append(np.arange(col_tree.start[s], col_tree.stop[s]))
    far = [None] * row_tree.n_nodes
    lp = level_pointer(row_tree.level)
    parent = _parents(row_tree.children)
    for t in range(lp[-1]):          # breadth-first: parents first
        parts = list(own[t])
        if parent[t] >= 0:
            parts.append(far[parent[t]])
        far[t] = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return far


def _parents(children):
    parent = np.full(children.shape[0], -1, np.int64)
    inner = np.flatnonzero(children[:, 0] >= 0)
    parent[children[inner, 0]] = inner
    parent[children[inner, 1]] = inner
    return parent


def _dense_far(Wp, far):
    """``far_rows(t, a, b)``: rows ``a:b`` of ``Wp`` in the far-field columns
    ``far[t]`` of node ``t`` (None where there are none)."""
    return lambda t, a, b: Wp[a:b][:, far[t]] if far[t].size else None


def _energy(far_rows, tree):
    """``sum_t ||W[t, F(t)]||_F^2`` over the nodes of ``tree``."""
    total = 0.0
    for t in range(tree.n_nodes):
        M = far_rows(t, tree.start[t], tree.stop[t])
        total += 0.0 if M is None else float(np.square(M).sum())
    return total


def _truncation(sv, allowed):
    """Smallest rank whose discarded squared singular values are at most ``allowed``."""
    tail = np.concatenate((np.cumsum((sv * sv)[::-1])[::-1], [0.0]))
    return int(np.argmax(tail <= allowed))


def _nested_bases(far_rows, tree, tau):
    """Orthonormal nested bases of the row clusters of a matrix whose far
    field ``far_rows(t, a, b)`` gives (rows ``a:b`` of node ``t``'s far-field
    columns, or any matrix with the same Gram matrix; None: no far field):
    explicit ``U_t`` (for the couplings) and the stored matrices (leaf bases
    / stacked transfers)."""
    n_nodes = tree.n_nodes
    U = [None] * n_nodes
    stored = [None] * n_nodes
    lp = level_pointer(tree.level)
    for t in range(lp[-1] - 1, -1, -1):       # children before parents
        a, b = tree.start[t], tree.stop[t]
        leaf = tree.children[t, 0] < 0
        if far_rows(t, a, a) is None:
            U[t] = np.zeros((b - a, 0))
            stored[t] = np.zeros((b - a if leaf else 0, 0))
            continue
        if leaf:
            M = far_rows(t, a, b)
        else:
            c0, c1 = tree.children[t]
            M = np.vstack([U[c].T @ far_rows(t, tree.start[c], tree.stop[c]) for c in (c0, c1)])
        Q, sv, _ = np.linalg.svd(M, full_matrices=False)
        k = _truncation(sv, tau * float(np.square(M).sum()))
        R = np.ascontiguousarray(Q[:, :k])
        stored[t] = R
        if leaf:
            U[t] = R
        else:
            k0 = U[c0].shape[1]
            U[t] = np.vstack((U[c0] @ R[:k0], U[c1] @ R[k0:]))
    return U, stored


def _flat(mats, dtype):
    sizes = np.array([m.size for m in mats], np.int64)
    off = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=off[1:])
    data = np.empty(off[-1], dtype)
    for m, o in zip(mats, off[:-1]):
        data[o:o + m.size] = m.ravel()
    return off[:-1].copy(), data


def _csr(n_out, key, other):
    order = np.lexsort((other, key)) if key.size else np.zeros(0, np.int64)
    ptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(key, minlength=n_out), out=ptr[1:])
    return ptr, order.astype(np.int64)


def _tree_arrays(tree, U_stored, dtype):
    rank = np.array([s.shape[1] for s in U_stored], np.int64)
    vp = np.zeros(rank.size + 1, np.int64)
    np.cumsum(rank, out=vp[1:])
    boff, basis = _flat(U_stored, dtype)
    return dict(perm=np.asarray(tree.perm, np.int64), children=np.asarray(tree.children, np.int64),
                start=np.asarray(tree.start, np.int64), stop=np.asarray(tree.stop, np.int64),
                level_ptr=level_pointer(tree.level), vp=vp, boff=boff, basis=basis)


def _symmetric_csr(n_nodes, t, s, off):
    """CSR lists of a symmetric matrix's blocks, each stored once as ``(t,
    s)`` at ``off``: listed under ``t`` (flip 0) and, off the diagonal, under
    ``s`` (flip 1: read transposed). Returns ``(ptr, other, off, flip)``."""
    mirror = t != s
    key = np.concatenate((t, s[mirror]))
    other = np.concatenate((s, t[mirror]))
    offs = np.concatenate((off, off[mirror]))
    flip = np.concatenate((np.zeros(t.size, np.int64), np.ones(int(mirror.sum()), np.int64)))
    ptr, order = _csr(n_nodes, key, other)
    return ptr, other[order], offs[order], flip[order]


def _assemble(row_far, col_far, coupling, near, row_tree, col_tree, bt, bs, nt, ns, tau,
              dtype, symmetric=False):
    """The arrays of a general H^2 matrix: nested bases of the far fields
    ``row_far`` / ``col_far`` (see :func:`_nested_bases`), couplings
    ``coupling(i, U_t, V_s)`` of the far-field blocks ``(bt, bs)`` and dense
    blocks ``near(i)`` of ``(nt, ns)``.

    ``symmetric``: one tree and one set of bases (``col_*`` are the ``row_*``
    arrays), and ``(bt, bs)``, ``(nt, ns)`` hold one block of each mirrored
    pair (see :func:`_symmetric_csr`; the layout of
    :mod:`hmnumba.kernels.h2_general`)."""
    U, ru = _nested_bases(row_far, row_tree, tau)
    V, cv = (U, ru) if symmetric else _nested_bases(col_far, col_tree, tau)
    S = [coupling(i, U[t], V[s]) for i, (t, s) in enumerate(zip(bt, bs))]
    D = [near(i) for i in range(len(nt))]
    if symmetric:
        return _symmetric_arrays(row_tree, ru, S, D, bt, bs, nt, ns, dtype)
    return _general_arrays(row_tree, col_tree, ru, cv, S, D, bt, bs, nt, ns, dtype)


def _symmetric_arrays(tree, ru, S, D, bt, bs, nt, ns, dtype):
    """The arrays of a symmetric general H^2 matrix: one tree and its stored
    bases ``ru`` (the ``row_*`` arrays; :class:`_GeneralH2Products` aliases
    the ``col_*`` names to them), and one block of each mirrored pair,
    couplings ``S`` of ``(bt, bs)`` and dense blocks ``D`` of ``(nt, ns)``,
    listed under both nodes (:func:`_symmetric_csr`)."""
    a = {"row_" + k: v for k, v in _tree_arrays(tree, ru, dtype).items()}
    for name, t, s, mats in (("c", bt, bs, S), ("n", nt, ns, D)):
        off, data = _flat(mats, dtype)
        (a[name + "_ptr"], a[name + "_other"], a[name + "_off"],
         a[name + "_flip"]) = _symmetric_csr(tree.n_nodes, np.asarray(t, np.int64),
                                             np.asarray(s, np.int64), off)
        a[name + "_data"] = data
    return a


def _general_arrays(row_tree, col_tree, ru, cv, S, D, bt, bs, nt, ns, dtype):
    """The arrays of a general H^2 matrix from its stored bases ``ru`` /
    ``cv`` (per node: the leaf basis or the stacked transfers), couplings
    ``S`` of the far-field blocks ``(bt, bs)`` and dense blocks ``D`` of
    ``(nt, ns)``."""
    a = {"row_" + k: v for k, v in _tree_arrays(row_tree, ru, dtype).items()}
    a.update({"col_" + k: v for k, v in _tree_arrays(col_tree, cv, dtype).items()})
    for name, t, s, mats in (("c", bt, bs, S), ("n", nt, ns, D)):
        t = np.asarray(t, np.int64)
        s = np.asarray(s, np.int64)
        off, data = _flat(mats, dtype)
        ptr, order = _csr(row_tree.n_nodes, t, s)
        a[name + "_ptr"], a[name + "_other"], a[name + "_off"] = ptr, s[order], off[order]
        ptr, order = _csr(col_tree.n_nodes, s, t)
        a[name + "_tptr"], a[name + "_tother"], a[name + "_toff"] = ptr, t[order], off[order]
        a[name + "_data"] = data
    return a


def adaptive_partition(Wp, row_tree, col_tree, tol, saving=ADAPTIVE_SAVING, min_level=0):
    """Blocks from the root pair down: a pair is far field when its rank at
    relative tolerance ``tol`` stores at most ``saving`` of its dense size as
    factors (``k (m + n) <= saving m n``), two leaves are near field, any
    other pair is split into its children's pairs.

    Returns ``(row_node, col_node, admissible)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.cluster import ClusterTree
    >>> from hmnumba.h2dense import adaptive_partition
    >>> tree = ClusterTree.from_index(64, leaf_size=8)
    >>> t, s, adm = adaptive_partition(np.ones((64, 64)), tree, tree, 1e-3)
    >>> t.tolist(), s.tolist(), adm.tolist()      # rank 1: the whole matrix is far field
    ([0], [0], [True])
    """
    out_t, out_s, out_a = [], [], []
    stack = [(0, 0)]
    rc, cc = row_tree.children, col_tree.children
    while stack:
        t, s = stack.pop()
        a, b, c, d = row_tree.start[t], row_tree.stop[t], col_tree.start[s], col_tree.stop[s]
        m, n = b - a, d - c
        sv = np.linalg.svd(Wp[a:b, c:d], compute_uv=False)
        k = _truncation(sv, tol * tol * float((sv * sv).sum()))
        top = row_tree.level[t] < min_level and rc[t, 0] >= 0 and cc[s, 0] >= 0
        if not top and k * (m + n) <= saving * m * n:
            out_t.append(t), out_s.append(s), out_a.append(True)
        elif rc[t, 0] < 0 and cc[s, 0] < 0:
            out_t.append(t), out_s.append(s), out_a.append(False)
        else:
            ts = rc[t] if rc[t, 0] >= 0 else [t]
            ss = cc[s] if cc[s, 0] >= 0 else [s]
            stack.extend((int(x), int(y)) for x in ts[::-1] for y in ss[::-1])
    return np.array(out_t, np.int64), np.array(out_s, np.int64), np.array(out_a, bool)


@with_small_pages     # the stored numbers go to fresh memory (hmnumba._pages)
def build_dense_h2(cls, W, tol, leaf_size, cluster, random_state, admissibility="adaptive",
                   storage="auto", symmetric=False):
    """A ``cls`` (:class:`~hmnumba.h2matrix.GeneralH2Matrix`) with
    ``||W - H||_F <= tol ||W||_F``: for
    ``"adaptive"`` admissibility, the smallest of the partitions
    :data:`PARTITIONS` (each with the bound verified). ``symmetric`` (``W ==
    W.T``, checked by the caller): the row tree serves the columns too, and
    each partition keeps its blocks on and above the diagonal (their mirrors
    complete it) in symmetric storage."""
    e = scale_exponent(np.max(np.abs(W)) if W.size else 0.0)
    if storage == "float32" and e:
        raise ValueError(f"storage='float32' cannot keep entries of magnitude "
                         f"{float(np.max(np.abs(W))):.1e} accurately; use 'auto' or 'float64'")
    Ws = W if e == 0 else np.ldexp(np.asarray(W, np.float64), -e)
    with one_blas_thread():
        row_tree, col_tree = build_cluster_trees(W.shape, cluster, leaf_size, A=Ws,
                                                 random_state=random_state)
        if symmetric:
            col_tree = row_tree
        Wp = np.ascontiguousarray(Ws[row_tree.perm][:, col_tree.perm], dtype=np.float64)
        if e:      # float64 storage: scaled back, float32 could not hold the entries
            storage = "float64"
        if admissibility == "weak":
            parts = [trees.weak_partition(row_tree.children, col_tree.children)]
        else:
            parts = [adaptive_partition(Wp, row_tree, col_tree, tol, saving, min_level)
                     for saving, min_level in PARTITIONS]
        best = None
        for bt, bs, adm in parts:
            if symmetric:   # the upper blocks; a decision below the diagonal may differ by
                upper = row_tree.start[bt] <= row_tree.start[bs]    # rounding: mirrors instead
                bt, bs, adm = bt[upper], bs[upper], adm[upper]
            H = _build_partition(cls, W, Wp, row_tree, col_tree, bt, bs, adm, tol, storage,
                                 symmetric)
            if best is None or H.nbytes < best.nbytes:
                best = H
        if not symmetric and admissibility != "weak":    # "weak" asks for HODLR itself
            H = _global_h2(cls, W, Ws, tol, _storage_dtype(W, tol, storage), best.nbytes,
                           random_state)
            if H is not None and H.nbytes < best.nbytes:
                best = H
        return rescale(best, e)


def _storage_dtype(W, tol, storage):
    """The dtype of the stored numbers: ``storage``, or for ``"auto"``
    float32 where the input is float32 or ``tol`` allows it."""
    if storage == "auto":
        return np.float32 if (W.dtype == np.float32 or tol >= FLOAT32_MIN_TOL) else np.float64
    return np.dtype(storage).type


def _one_node_tree(size):
    """The tree whose root is its only leaf (rows in their own order)."""
    return RangeTree(np.arange(size, dtype=np.int64), np.zeros(1, np.int64),
                     np.array([size], np.int64), np.full((1, 2), -1, np.int64),
                     np.zeros(1, np.int64))


def _global_h2(cls, W, Ws, tol, dtype, max_bytes, random_state):
    """The whole matrix as one coupling between one-node trees: ``Ws ~= U
    I V^T`` with the optimal rank at ``tol`` (Eckart-Young, the truncated
    SVD of :func:`hmnumba.construct.global_low_rank`, its exact error
    checked in ``dtype``), or None when it would not store fewer than
    ``max_bytes``.

    The H^2 counterpart of the H-matrix's global low-rank candidate: on a
    weight array whose rank is low everywhere, nested bases over a deep tree
    store transfers a truncated SVD does not need (the shuffled 1-D Poisson
    operator of the study, 1024 x 1024 at tol 1e-2: 2.08 MB as a tree,
    rank 38 as one block, ``python asv_benchmarks/run_h2_dense.py --family
    1024``)."""
    m, n = Ws.shape
    itemsize = np.dtype(dtype).itemsize
    seed = int(random_state) if isinstance(random_state, (int, np.integer)) else 0
    got = global_low_rank(Ws, tol, None, dtype, max_bytes // itemsize, seed)
    if got is None:
        return None
    U, V, err2, norm2 = got
    k = U.shape[1]
    a = _general_arrays(_one_node_tree(m), _one_node_tree(n), [U], [V],
                        [np.eye(k, dtype=dtype)], [], np.zeros(1, np.int64),
                        np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        dtype)
    a.update(shape=(m, n), tol=tol, dtype=np.dtype(W.dtype))
    H = cls(a)
    H.error = float(np.sqrt(err2 / norm2)) if norm2 > 0 else 0.0
    return H


# Inputs whose largest entry lies outside [2^-SCALE_LIMIT, 2^SCALE_LIMIT]
# are built scaled by a power of two (exact), so that no squared norm or
# SVD under- or overflows, and scaled back in float64 storage.
SCALE_LIMIT = 100


def scale_exponent(max_abs):
    """0 for ordinary magnitudes, else ``e`` with ``max_abs 2^-e`` in ``[0.5, 1)``."""
    if not np.isfinite(max_abs) or max_abs == 0:
        return 0
    e = int(np.frexp(max_abs)[1])
    return e if abs(e) > SCALE_LIMIT else 0


def rescale(H, e):
    """``H`` built from ``W 2^-e`` made an approximation of ``W``: couplings
    and near field times ``2^e`` (exact; the bases are orthonormal)."""
    if e:
        for key in ("c_data", "n_data"):
            H._a[key] = np.ldexp(H._a[key].astype(np.float64), e)
    return H


def _build_partition(cls, W, Wp, row_tree, col_tree, bt, bs, adm, tol, storage,
                     symmetric=False):
    m, n = W.shape
    bt, bs, adm = np.asarray(bt, np.int64), np.asarray(bs, np.int64), np.asarray(adm, bool)
    nt, ns = bt[~adm], bs[~adm]
    bt, bs = bt[adm], bs[adm]
    norm2 = float(np.square(Wp).sum())
    rs, rp, cs, cp = row_tree.start, row_tree.stop, col_tree.start, col_tree.stop
    if symmetric:     # a row's far field: its upper blocks and the mirrors of the others
        mirror = bt != bs
        far = _far_columns(row_tree, row_tree, np.concatenate((bt, bs[mirror])),
                           np.concatenate((bs, bt[mirror])))
        row_far = col_far = _dense_far(Wp, far)
    else:
        row_far = _dense_far(Wp, _far_columns(row_tree, col_tree, bt, bs))
        col_far = _dense_far(Wp.T, _far_columns(col_tree, row_tree, bs, bt))

    def coupling(i, Ut, Vs):
        return Ut.T @ Wp[rs[bt[i]]:rp[bt[i]], cs[bs[i]]:cp[bs[i]]] @ Vs

    def near(i):
        return Wp[rs[nt[i]]:rp[nt[i]], cs[ns[i]]:cp[ns[i]]]

    dtype = _storage_dtype(W, tol, storage)

    def attempt(tau, dtype):
        a = _assemble(row_far, col_far, coupling, near, row_tree, col_tree, bt, bs, nt, ns, tau,
                      dtype, symmetric)
        a.update(shape=(m, n), tol=tol, dtype=np.dtype(W.dtype))
        H = cls(a)
        H.error = float(np.linalg.norm(H._to_dense_permuted() - Wp))
        return H

    H = _fit_bases(attempt, row_far, col_far, row_tree, col_tree, tol, norm2, dtype,
                   storage == "auto")
    H.error = H.error / np.sqrt(norm2) if norm2 > 0 else 0.0
    return H


def _fit_bases(attempt, row_far, col_far, row_tree, col_tree, tol, norm2, dtype, fallback):
    """The H^2 matrix ``attempt(tau, dtype)`` (its ``.error`` absolute) with
    the largest truncation ``tau`` tried whose error is at most ``tol
    sqrt(norm2)``: ``tau`` starts from the a priori split (each side's
    discarded energy within half the budget), is tightened on a miss (and
    the storage moved to float64 when ``fallback`` allows) and relaxed while
    the error leaves room and storage drops."""
    bound = tol * np.sqrt(norm2)
    e_row, e_col = _energy(row_far, row_tree), _energy(col_far, col_tree)
    share = FIRST_BUDGET * 0.5 * tol * tol * norm2
    tau = min(share / e_row if e_row > 0 else 1.0, share / e_col if e_col > 0 else 1.0)
    for i in range(MAX_TRIES + 1):
        if i == MAX_TRIES:     # last resort: full ranks, float64
            tau, dtype = 0.0, np.float64
        H = attempt(tau, dtype)
        if H.error <= bound:
            break
        tau *= 0.5 * min(1.0, (bound / H.error) ** 2)
        if dtype == np.float32 and i >= 2 and fallback:
            dtype = np.float64
    # The a priori split is pessimistic (every level gets the same share):
    # relax tau while the exact error leaves room and storage drops.
    for _ in range(RELAX_STEPS):
        if H.error <= 0 or tau <= 0:
            break
        relaxed = min(1.0, tau * RELAX_MARGIN * (bound / H.error) ** 2)
        if relaxed <= 1.05 * tau:
            break
        H2 = attempt(relaxed, dtype)
        if H2.error > bound or H2.nbytes >= H.nbytes:
            break
        H, tau = H2, relaxed
    return H


def _symmetric_schedule(a):
    """The two-phase schedule of a symmetric matrix's products, for the
    couplings and the near field: the stored blocks ``(bt, bs)`` in storage
    order (a slab of the products reads contiguous entries) with their
    offsets, whether each is applied as stored (always) and transposed too
    (off the diagonal), the temporary slots of each side, their count, the
    output nodes (every node for the couplings, the leaves for the near
    field) and per output node the CSR of its slots."""
    n_nodes = a["row_children"].shape[0]
    nodes = np.arange(n_nodes)
    leaves, leaf_of = leaf_index(a["row_children"])
    rank, size = np.diff(a["row_vp"]), a["row_stop"] - a["row_start"]
    out = []
    for name, sizes, key_of, outs in (("c", rank, nodes, nodes), ("n", size, leaf_of, leaves)):
        stored = np.flatnonzero(a[name + "_flip"] == 0)
        stored = stored[np.argsort(a[name + "_off"][stored], kind="stable")]
        bt = np.repeat(nodes, np.diff(a[name + "_ptr"]))[stored]
        bs = a[name + "_other"][stored]
        tmp0, tmp1, n_tmp, mirror, ptr, slot = two_phase(sizes, bt, bs, key_of, outs.size)
        out.append((bt, bs, a[name + "_off"][stored], np.ones(bt.size, np.bool_), mirror, tmp0,
                    tmp1, np.array([n_tmp], np.int64), outs, ptr, slot))
    return tuple(out)


def _ndim(x, ndim, name):
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return x


class _GeneralH2Products:
    """Storage and products of a general H^2 matrix (the layout of this
    module); :class:`hmnumba.h2matrix.GeneralH2Matrix` puts them on
    :class:`~hmnumba.H2Matrix`."""

    def __init__(self, arrays):     # noqa: D107 - the layout of hmnumba.h2dense
        self._a = dict(arrays)
        if "c_flip" in self._a:     # symmetric: the column tree and bases are the row ones
            self._a.update({"col_" + k[4:]: v for k, v in arrays.items()
                            if k.startswith("row_")})
        self._schedule = _symmetric_schedule(self._a) if "c_flip" in self._a else ()
        # the one-region split of each tree for the upward and downward passes
        self._split = {"row": subtrees(self._a["row_children"], self._a["row_level_ptr"])}
        self._split["col"] = (self._split["row"] if self._a["col_children"] is
                              self._a["row_children"] else
                              subtrees(self._a["col_children"], self._a["col_level_ptr"]))
        self.tol = self._a["tol"]
        self.mode = "stored"
        self.error = None
        self._shape = tuple(int(v) for v in self._a["shape"])
        self._device_arrays = None    # after H2Matrix.to("cuda")

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return np.dtype(self._a["dtype"])

    @property
    def T(self):
        """The transpose, as an operator (``H.T @ x`` is ``H.rmatvec(x)``)."""
        return self.aslinearoperator().T

    @property
    def symmetric(self):
        """True when one tree and one set of bases serve rows and columns
        and each mirrored pair of blocks is stored once (converted from a
        symmetric :class:`~hmnumba.HMatrix`)."""
        return "c_flip" in self._a

    @property
    def ranks(self):
        """Ranks of the row cluster bases (0: no far field)."""
        return np.diff(self._a["row_vp"])

    @property
    def col_ranks(self):
        """Ranks of the column cluster bases."""
        return np.diff(self._a["col_vp"])

    def _arrays(self):
        # each array once: a symmetric matrix's column side aliases its rows
        unique = {id(v): v for v in self._a.values() if isinstance(v, np.ndarray)}
        for part in self._schedule + tuple(self._split.values()):
            unique.update((id(v), v) for v in part)
        return list(unique.values())

    def _mirrored(self, name):
        """Per entry of the CSR list ``name`` (``"c"`` or ``"n"``): 1 where it
        reads its mirror's stored block transposed (a symmetric matrix's
        second listing), else 0 (every entry of a general matrix)."""
        a = self._a
        return a[name + "_flip"] if self.symmetric else np.zeros(a[name + "_other"].size, np.int64)

    def _block(self, name, q, m, n):
        """Block ``q`` of the CSR list ``name`` (``"c"`` or ``"n"``) as its
        output node sees it, ``m x n`` float64 (a flipped entry of a
        symmetric matrix reads its mirror's stored block transposed)."""
        a = self._a
        o = a[name + "_off"][q]
        if self._mirrored(name)[q]:
            return a[name + "_data"][o:o + m * n].reshape(n, m).T.astype(np.float64)
        return a[name + "_data"][o:o + m * n].reshape(m, n).astype(np.float64)

    @property
    def compression_ratio(self):
        """Dense bytes (``m n`` times the item size of the input) over :attr:`nbytes`."""
        m, n = self._shape
        return m * n * self.dtype.itemsize / self.nbytes

    def summary(self):
        """One line: shape, blocks, ranks and storage."""
        a = self._a
        r = np.concatenate((self.ranks, self.col_ranks))
        m, n = self._shape
        kind = "symmetric" if self.symmetric else "from dense"
        stored = lambda name: int(np.sum(self._mirrored(name) == 0))     # noqa: E731
        return (f"H2Matrix {m}x{n} ({kind}, {a['row_basis'].dtype} storage): "
                f"{stored('c')} couplings, {stored('n')} near-field blocks, "
                f"ranks max {int(r.max(initial=0))}, {self.nbytes / 1e6:.3f} MB")

    def _side(self, name):
        """The arguments of the upward and downward passes over one tree."""
        a = self._a
        return self._split[name] + (a[name + "_children"], a[name + "_start"], a[name + "_stop"],
                                    a[name + "_vp"], a[name + "_boff"], a[name + "_basis"])

    def _apply_permuted(self, xp, trans):
        """``H xp`` (or ``H^T xp``) in cluster order, ``xp`` of shape ``(n, r)``."""
        if self._device_arrays is not None:
            from hmnumba.kernels import h2_products_cuda
            return h2_products_cuda.apply(self._device_arrays, xp, trans)
        if self.symmetric:      # H^T = H
            return self._apply_symmetric(xp)
        a = self._a
        ins, outs = ("row", "col") if trans else ("col", "row")
        r = xp.shape[1]
        vin, vout = a[ins + "_vp"], a[outs + "_vp"]
        xh = np.empty((vin[-1], r))
        kg.upward(*self._side(ins), xp, xh)
        yh = np.zeros((vout[-1], r))
        pfx = "_t" if trans else "_"
        yp = np.zeros((a[outs + "_stop"][0], r))
        kg.blocks(a["c" + pfx + "ptr"], a["c" + pfx + "other"], a["c" + pfx + "off"],
                  a["c_data"], trans, vout[:-1], vout[1:], vin[:-1], vin[1:], xh, yh)
        kg.blocks(a["n" + pfx + "ptr"], a["n" + pfx + "other"], a["n" + pfx + "off"],
                  a["n_data"], trans, a[outs + "_start"], a[outs + "_stop"], a[ins + "_start"],
                  a[ins + "_stop"], xp, yp)
        kg.downward(*self._side(outs), yh, yp)
        return yp

    def _apply_symmetric(self, xp):
        """``H xp`` of a symmetric matrix in cluster order: each stored block
        is read once and applied both ways (the two-phase products of the
        kernel H^2 matrix, :mod:`hmnumba.kernels.h2_products`); the CSR
        lists with flips serve the device and the conversions."""
        a = self._a
        r = xp.shape[1]
        vp, st, sp = a["row_vp"], a["row_start"], a["row_stop"]
        tree = self._side("row")
        xh = np.empty((vp[-1], r))
        kg.upward(*tree, xp, xh)
        yh = np.empty((vp[-1], r))
        yp = np.empty_like(xp)
        for (bt, bs, off, do0, do1, tmp0, tmp1, n_tmp, out, ptr, slot), data, lo, hi, x, y in (
                (self._schedule[0], a["c_data"], vp[:-1], vp[1:], xh, yh),
                (self._schedule[1], a["n_data"], st, sp, xp, yp)):
            tmp = np.empty((n_tmp[0], r))
            kp.phase_one(data, off, bt, bs, do0, do1, lo, hi, x, tmp, tmp0, tmp1)
            kp.gather_slots(lo[out], hi[out], ptr, slot, tmp, y)
        kg.downward(*tree, yh, yp)
        return yp

    def _product(self, X, trans):
        m, n = self._shape
        n_in = m if trans else n
        from hmnumba._validation import check_operand
        X = check_operand(X, n_in, np.float64, "X", dim="rows")
        vec = X.ndim == 1
        X2 = X[:, None] if vec else X
        if X2.ndim != 2:
            raise ValueError(f"X must be 1-D or 2-D, got shape {X.shape}")
        a = self._a
        pin, pout = (a["row_perm"], a["col_perm"]) if trans else (a["col_perm"], a["row_perm"])
        xp = np.ascontiguousarray(X2[pin], dtype=np.float64)
        with serial_if_unsafe():
            yp = self._apply_permuted(xp, trans)
        Y = np.empty_like(yp)
        Y[pout] = yp
        return Y[:, 0] if vec else Y

    def _to_dense_permuted(self):
        return self._apply_permuted(np.eye(self._shape[1]), False)

    def matmat(self, X):
        """``H @ X`` for ``X`` of shape ``(n, k)``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> W = np.add.outer(np.arange(40.0), np.arange(30.0))
        >>> H2Matrix.from_dense(W, leaf_size=8).matmat(np.ones((30, 2))).shape
        (40, 2)
        """
        return self._product(_ndim(X, 2, "X"), False)

    def matvec(self, x):
        """``H @ x`` for ``x`` of shape ``(n,)``."""
        return self._product(_ndim(x, 1, "x"), False)

    def rmatvec(self, x):
        """``H^T @ x`` for ``x`` of shape ``(m,)``."""
        return self._product(_ndim(x, 1, "x"), True)

    def rmatmat(self, X):
        """``H^T @ X`` for ``X`` of shape ``(m, k)``."""
        return self._product(_ndim(X, 2, "X"), True)

    def to_dense(self):
        """The full ``(m, n)`` matrix (``H @ I``)."""
        return self.matmat(np.eye(self._shape[1]))

    def _explicit_bases(self):
        """``(U, V)``: the row and column bases ``U_t`` (cluster order,
        float64) of every node; the same list twice for a symmetric matrix."""
        U = self._explicit_side("row")
        return (U, U) if self.symmetric else (U, self._explicit_side("col"))

    def _explicit_side(self, side):
        """``U_t`` (cluster order, float64) of every node of one tree."""
        a = self._a
        ch, st, sp, lp, vp, boff, basis = (a[side + k] for k in (
            "_children", "_start", "_stop", "_level_ptr", "_vp", "_boff", "_basis"))
        U = [None] * (lp[-1])
        for t in range(lp[-1] - 1, -1, -1):
            k = vp[t + 1] - vp[t]
            if ch[t, 0] < 0:
                m = sp[t] - st[t]
                U[t] = basis[boff[t]:boff[t] + m * k].reshape(m, k).astype(np.float64)
            elif k == 0:
                U[t] = np.zeros((sp[t] - st[t], 0))
            else:
                c0, c1 = ch[t]
                k0, k1 = vp[c0 + 1] - vp[c0], vp[c1 + 1] - vp[c1]
                R = basis[boff[t]:boff[t] + (k0 + k1) * k].reshape(k0 + k1, k).astype(np.float64)
                U[t] = np.vstack((U[c0] @ R[:k0], U[c1] @ R[k0:]))
        return U

    def _hmatrix_storage(self):
        """The storage value of :meth:`~hmnumba.H2Matrix.to_hmatrix` (float64):
        each coupling becomes the low-rank block ``(U_t S_b) V_s^T`` (or ``U_t
        (V_s S_b^T)^T``, whichever rank is smaller), the near field stays
        dense. Exact up to float64 rounding."""
        a = self._a
        U, V = self._explicit_bases()
        rs, rp, cs, cp = a["row_start"], a["row_stop"], a["col_start"], a["col_stop"]
        # a symmetric matrix gives a symmetric H-matrix: its stored blocks only
        mirror, near_mirror = self._mirrored("c"), self._mirrored("n")
        blocks = []
        for t in range(a["c_ptr"].size - 1):
            for q in range(a["c_ptr"][t], a["c_ptr"][t + 1]):
                if mirror[q]:
                    continue
                s = a["c_other"][q]
                kt, ks = U[t].shape[1], V[s].shape[1]
                S = self._block("c", q, kt, ks)
                L, R = (U[t] @ S, V[s]) if ks <= kt else (U[t], V[s] @ S.T)
                blocks.append((rs[t], rp[t], cs[s], cp[s], L, R))
            for q in range(a["n_ptr"][t], a["n_ptr"][t + 1]):
                if near_mirror[q]:
                    continue
                s = a["n_other"][q]
                D = self._block("n", q, rp[t] - rs[t], cp[s] - cs[s])
                blocks.append((rs[t], rp[t], cs[s], cp[s], D, None))
        return pack_hmatrix(self._shape, a["row_perm"], a["col_perm"], blocks,
                            symmetric=self.symmetric)

    def estimate_error(self, *args, **kwargs):
        """Not defined for weight arrays: :attr:`error` is the exact
        ``||W - H||_F / ||W||_F`` measured by the construction."""
        raise TypeError("estimate_error needs kernel points; an H2Matrix built from a dense "
                        "array carries its exact relative error in .error")


def pack_hmatrix(shape, row_perm, col_perm, blocks, symmetric=False):
    """The H-matrix storage value (float64, checked as a loaded file is) of
    ``blocks``, each ``(r0, r1, c0, c1, L, R)`` in cluster order: the
    low-rank block ``L R^T``, or the dense block ``L`` when ``R`` is None.
    Block errors are 0 (the blocks are taken as they are)."""
    order = sorted(range(len(blocks)), key=lambda b: (blocks[b][0], blocks[b][2]))
    r0, r1, c0, c1, rank, offset, parts = [], [], [], [], [], [], []
    pos = 0
    for b in order:
        a0, a1, b0, b1, L, R = blocks[b]
        r0.append(a0), r1.append(a1), c0.append(b0), c1.append(b1)
        offset.append(pos)
        if R is None:
            rank.append(-1)
            parts.append(np.ravel(L))
        else:
            rank.append(L.shape[1])
            parts += [L.T.ravel(), R.T.ravel()]
        pos += parts[-1].size + (0 if R is None else parts[-2].size)
    data = np.concatenate(parts) if parts else np.zeros(0)
    as64 = lambda v: np.array(v, np.int64)     # noqa: E731
    return Packed.from_arrays(tuple(int(v) for v in shape), np.asarray(row_perm, np.int64),
                              np.asarray(col_perm, np.int64), as64(r0), as64(r1), as64(c0),
                              as64(c1), as64(rank), as64(offset),
                              np.ascontiguousarray(data, np.float64), np.zeros(len(order)),
                              np.zeros(len(order)), symmetric=symmetric)


# ---------------------------------------------------------------------------
# HMatrix -> H^2 (blockwise, never dense)
# ---------------------------------------------------------------------------


class RangeTree:
    """A breadth-first binary cluster tree over ``[0, size)`` (the fields
    :func:`build_dense_h2` reads from a :class:`~hmnumba.cluster.ClusterTree`)."""

    def __init__(self, perm, start, stop, children, level):
        self.perm, self.start, self.stop = perm, start, stop
        self.children, self.level = children, level
        self.n_nodes = start.size


def range_tree(size, lo, hi, perm):
    """The binary tree whose nodes include every range ``[lo_i, hi_i)`` (the
    block rows of an H-matrix, which nest like the cluster tree they came
    from): a range with more than two maximal sub-ranges, or gaps between
    them, gets gap leaves and balanced intermediate nodes.

    Returns ``(tree, node)`` with ``node[(lo, hi)]`` the node of a range.
    Raises ``ValueError`` if two ranges overlap without nesting.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.h2dense import range_tree
    >>> tree, node = range_tree(10, np.array([0, 5, 0, 2]), np.array([5, 10, 2, 5]),
    ...                         np.arange(10))
    >>> tree.start.tolist(), tree.stop.tolist(), node[(2, 5)]
    ([0, 0, 5, 0, 2], [10, 5, 10, 2, 5], 4)
    """
    ranges = sorted(set(zip(np.asarray(lo).tolist(), np.asarray(hi).tolist())) | {(0, size)},
                    key=lambda r: (r[0], -r[1]))
    kids = {r: [] for r in ranges}
    stack = []
    for r in ranges:
        while stack and stack[-1][1] <= r[0]:
            stack.pop()
        if stack:
            if r[1] > stack[-1][1]:
                raise ValueError(f"the block ranges {stack[-1]} and {r} overlap without nesting: "
                                 f"they do not come from a cluster tree")
            kids[stack[-1]].append(r)
        stack.append(r)

    def split(r):
        items, pos = [], r[0]
        for k in kids[r]:
            if k[0] > pos:
                items.append((pos, k[0]))
            items.append(k)
            pos = k[1]
        if items and pos < r[1]:
            items.append((pos, r[1]))
        if len(items) <= 2:
            return items
        h = len(items) // 2
        halves = []
        for part in (items[:h], items[h:]):
            new = (part[0][0], part[-1][1])
            if len(part) > 1:
                kids[new] = part
            halves.append(new)
        return halves

    nodes, children, level = [(0, size)], [], [0]
    i = 0
    while i < len(nodes):          # breadth-first: children are consecutive
        ch = split(nodes[i])
        if ch:
            children.append([len(nodes), len(nodes) + 1])
            nodes += ch
            level += [level[i] + 1] * 2
            for c in ch:
                kids.setdefault(c, [])
        else:
            children.append([-1, -1])
        i += 1
    node = {r: t for t, r in enumerate(nodes)}
    arr = np.array(nodes, np.int64).reshape(-1, 2)
    tree = RangeTree(np.asarray(perm, np.int64), arr[:, 0].copy(), arr[:, 1].copy(),
                     np.array(children, np.int64).reshape(-1, 2), np.array(level, np.int64))
    return tree, node


def _ancestor_lists(tree, own):
    """For each node, the items of ``own`` at the node and its ancestors."""
    out = [None] * tree.n_nodes
    parent = _parents(tree.children)
    for t in range(tree.n_nodes):             # breadth-first: parents first
        out[t] = (out[parent[t]] if parent[t] >= 0 else []) + own[t]
    return out


def _weighted_far(weights, first, tree, blocks_at):
    """``far_rows`` (see :func:`_nested_bases`) from the low-rank blocks of
    an H-matrix: block ``b = U V^T`` enters as ``U R^T`` (``V = Q R``), whose
    Gram matrix is that of ``U V^T``; ``first[b]`` is its first row."""
    own = [[] for _ in range(tree.n_nodes)]
    for t, b in blocks_at:
        own[t].append(b)
    far = _ancestor_lists(tree, own)

    def far_rows(t, a, b):
        parts = [weights[q][a - first[q]:b - first[q]] for q in far[t]]
        if not parts or sum(p.shape[1] for p in parts) == 0:
            return None
        return np.hstack(parts)
    return far_rows


def _norm_of_product(X, Y):
    """``||X Y^T||_F`` from the triangular factors of ``X`` and ``Y``."""
    if X.shape[1] == 0 or X.shape[0] == 0 or Y.shape[0] == 0:
        return 0.0
    return float(np.linalg.norm(np.linalg.qr(X, mode="r") @ np.linalg.qr(Y, mode="r").T))


@with_small_pages
def hmatrix_to_h2(cls, H, tol):
    """The H^2 matrix (``cls``, a :class:`~hmnumba.h2matrix.GeneralH2Matrix`)
    of an :class:`~hmnumba.HMatrix`, blockwise (Börm's H -> H^2 conversion):
    the cluster trees are the block rows and columns of ``H`` (completed to
    binary trees), the basis of a row cluster spans the stacked factors
    ``U_b R_b^T`` of the low-rank blocks of its own and its ancestors' block
    rows (columns alike), computed with nested truncated SVDs as in
    :func:`build_dense_h2`, and the couplings are ``(U_t^T U_b)(V_b^T V_s)``;
    dense blocks stay dense. Nothing of size ``m x n`` is formed.

    ``||H - H2||_F`` is computed exactly, block by block, from the stored
    arrays (``||X Y^T||_F`` through QR factors) and kept at most ``tol
    ||H||_F``; ``error`` of the result is ``H.error_bound + ||H - H2||_F /
    ||A||_F`` (triangle inequality: a bound on ``||A - H2||_F / ||A||_F``)."""
    if H.outliers is not None:
        raise ValueError("H2Matrix.from_hmatrix cannot convert an HMatrix with sparse outliers "
                         "(A = S + H); build it without outliers=")
    F = H.full_storage()
    m, n = F.shape
    r0, r1, c0, c1, rank, off = (np.asarray(getattr(F, k), np.int64) for k in (
        "row_start", "row_stop", "col_start", "col_stop", "rank", "offset"))
    data = np.asarray(F.data, np.float64)
    top = _largest_exponent(data, rank, off, r0, r1, c0, c1)
    e = top if top is not None and abs(top) > SCALE_LIMIT else 0
    with one_blas_thread():
        symmetric = bool(H.symmetric)
        row_tree, row_node = range_tree(m, r0, r1, F.row_perm)
        col_tree, col_node = ((row_tree, row_node) if symmetric
                              else range_tree(n, c0, c1, F.col_perm))
        bt_all = np.array([row_node[r] for r in zip(r0.tolist(), r1.tolist())], np.int64)
        bs_all = np.array([col_node[c] for c in zip(c0.tolist(), c1.tolist())], np.int64)
        lr = np.flatnonzero(rank >= 0)
        dn = np.flatnonzero(rank < 0)
        U, V, Uw, Vw = {}, {}, {}, {}
        norm2 = 0.0
        for b in lr.tolist():
            k, mb, nb, o = rank[b], r1[b] - r0[b], c1[b] - c0[b], off[b]
            U[b] = data[o:o + k * mb].reshape(k, mb).T
            V[b] = data[o + k * mb:o + k * (mb + nb)].reshape(k, nb).T
            if e and k:     # U V^T 2^-e with both factors of moderate size
                ev = int(np.frexp(np.max(np.abs(V[b])))[1])
                U[b], V[b] = np.ldexp(U[b], ev - e), np.ldexp(V[b], -ev)
            Ru = np.linalg.qr(U[b], mode="r") if k else np.zeros((0, 0))
            Rv = np.linalg.qr(V[b], mode="r") if k else np.zeros((0, 0))
            Uw[b], Vw[b] = U[b] @ Rv.T, V[b] @ Ru.T
            norm2 += float(np.square(Ru @ Rv.T).sum()) if k else 0.0
        # Dense blocks, split down to leaf pairs: the near-field product
        # writes each leaf's rows from one iteration only (race-free).
        row_leaves, col_leaves = _leaves_below(row_tree), _leaves_below(col_tree)
        nt, ns, D = [], [], []
        for b in dn.tolist():
            blk = np.ldexp(data[off[b]:off[b] + (r1[b] - r0[b]) * (c1[b] - c0[b])].reshape(
                r1[b] - r0[b], c1[b] - c0[b]), -e)
            for t in row_leaves[bt_all[b]]:
                for u in col_leaves[bs_all[b]]:
                    nt.append(t), ns.append(u)
                    D.append(blk[row_tree.start[t] - r0[b]:row_tree.stop[t] - r0[b],
                                 col_tree.start[u] - c0[b]:col_tree.stop[u] - c0[b]])
        nt, ns = np.array(nt, np.int64), np.array(ns, np.int64)
        norm2 += sum(float(np.square(d).sum()) for d in D)
        row_far = _weighted_far(Uw, r0, row_tree, zip(bt_all[lr].tolist(), lr.tolist()))
        bt, bs = bt_all[lr], bs_all[lr]
        # A symmetric H (mirrored blocks, one tree): one set of bases (a
        # row's far field is its column's, transposed) and the blocks with
        # start[t] <= start[s] stored, each mirror read through it.
        keep_c, keep_n = np.arange(bt.size), np.arange(nt.size)
        if not symmetric:
            col_far = _weighted_far(Vw, c0, col_tree, zip(bs_all[lr].tolist(), lr.tolist()))
        else:
            col_far = row_far
            keep_c = np.flatnonzero(row_tree.start[bt] <= row_tree.start[bs])
            keep_n = np.flatnonzero(row_tree.start[nt] <= row_tree.start[ns])

        def coupling(i, Ut, Vs):
            b = lr[keep_c[i]]
            return (Ut.T @ U[b]) @ (V[b].T @ Vs)

        def near(i):
            return D[keep_n[i]]

        dtype = np.float32 if F.dtype == np.float32 and e == 0 else np.float64

        def attempt(tau, dtype):
            a = _assemble(row_far, col_far, coupling, near, row_tree, col_tree, bt[keep_c],
                          bs[keep_c], nt[keep_n], ns[keep_n], tau, dtype, symmetric)
            a.update(shape=(m, n), tol=tol, dtype=np.dtype(F.dtype))
            G = cls(a)
            G.error = _conversion_error(G, U, V, D, lr, bt, bs, nt, ns)
            return G

        G = _fit_bases(attempt, row_far, col_far, row_tree, col_tree, tol, norm2, dtype, True)
    G.conversion_error = float(G.error / np.sqrt(norm2)) if norm2 > 0 else 0.0
    # ||A - G|| <= ||A - H|| + conv ||H||, ||H|| <= (1 + error_bound) ||A||
    G.error = float(H.error_bound + G.conversion_error * (1.0 + H.error_bound))
    return rescale(G, e)


def _largest_exponent(data, rank, off, r0, r1, c0, c1):
    """The binary exponent of an upper bound on the largest entry of an
    H-matrix (a dense block's entries, ``k max|U| max|V|`` of a low-rank
    block), computed without overflow; None for the zero matrix."""
    best = None
    for b in range(rank.size):
        k, o, mb, nb = rank[b], off[b], r1[b] - r0[b], c1[b] - c0[b]
        if k < 0:
            mx = float(np.max(np.abs(data[o:o + mb * nb])))
            exp = int(np.frexp(mx)[1]) if mx > 0 else None
        else:
            mu = float(np.max(np.abs(data[o:o + k * mb]))) if k else 0.0
            mv = float(np.max(np.abs(data[o + k * mb:o + k * (mb + nb)]))) if k else 0.0
            exp = (int(np.frexp(mu)[1] + np.frexp(mv)[1]) + int(np.ceil(np.log2(k)))
                   if mu > 0 and mv > 0 else None)
        if exp is not None and (best is None or exp > best):
            best = exp
    return best


def _leaves_below(tree):
    """For each node, the leaves below it (itself for a leaf), left to right."""
    out = [None] * tree.n_nodes
    for t in range(tree.n_nodes - 1, -1, -1):     # children first
        c0, c1 = tree.children[t]
        out[t] = [t] if c0 < 0 else out[c0] + out[c1]
    return out


def _conversion_error(G, U, V, D, lr, bt, bs, nt, ns):
    """``||H - G||_F``, block by block, from ``G``'s stored arrays. In a
    symmetric ``G`` a mirrored entry's error is its stored block's (both
    ``H``'s mirror and ``G``'s flipped entry are exact transposes), so each
    stored block off the diagonal counts twice and mirrors are skipped."""
    a = G._a
    Ub, Vb = G._explicit_bases()
    lr_of = {(t, s): b for t, s, b in zip(bt.tolist(), bs.tolist(), lr.tolist())}
    dn_of = {(t, s): i for i, (t, s) in enumerate(zip(nt.tolist(), ns.tolist()))}
    flip = {name: G._mirrored(name) for name in ("c", "n")}
    weight = 2.0 if G.symmetric else 1.0
    err2 = 0.0
    for t in range(a["c_ptr"].size - 1):
        for q in range(a["c_ptr"][t], a["c_ptr"][t + 1]):
            if flip["c"][q]:
                continue
            s = int(a["c_other"][q])
            b = lr_of[(t, s)]
            S = G._block("c", q, Ub[t].shape[1], Vb[s].shape[1])
            X = np.hstack((U[b], Ub[t] @ S))
            Y = np.hstack((V[b], -Vb[s]))
            err2 += weight * _norm_of_product(X, Y) ** 2
        for q in range(a["n_ptr"][t], a["n_ptr"][t + 1]):
            if flip["n"][q]:
                continue
            s = int(a["n_other"][q])
            d = D[dn_of[(t, s)]]
            err2 += ((weight if s != t else 1.0)
                     * float(np.square(d - G._block("n", q, *d.shape)).sum()))
    return float(np.sqrt(err2))
