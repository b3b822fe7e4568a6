"""H^2 products on the device: the CUDA twin of
:mod:`hmnumba.kernels.h2_products` (symmetric kernel matrices, modes
``"stored"`` and ``"on-the-fly"``) and of :mod:`hmnumba.kernels.h2_general`
(general matrices, from dense arrays).

:func:`to_device` copies a matrix's arrays to the device once; :func:`apply`
runs one product in cluster order with the passes of the CPU code:

* upward, one launch per tree level from the leaves: one thread block per
  node, each thread one of its coefficients;
* block products of a kernel matrix in two phases, as on the CPU: phase one
  (one thread block per block) writes the block's own temporary slots (a
  symmetric block, stored once, both ``B x_s`` for ``t`` and ``B^T x_t`` for
  ``s``), phase two (one thread block per output node) sums the node's slots
  in the CSR order of the CPU schedule (``H2Matrix._c_ptr`` / ``_c_slot``,
  ``_n_ptr`` / ``_n_slot``). A general matrix lists its blocks per output
  node already (``c_ptr`` ..., ``c_tptr`` ... for the transpose; a
  symmetric one lists each mirrored block under both nodes, the second
  entry flipped, and is its own transpose): one phase;
* downward, one launch per level from the root: each thread owns one entry
  of a child's coefficients (or of the output), which one node writes.

Every output entry is written by one thread and its sums run in a fixed
order: no atomics, the same bits in every run. Entries stored in float32 are
widened, every sum is float64. On-the-fly entries are evaluated in float64
by the device formulas of :mod:`hmnumba.kernels.compress_cuda`; the CPU
evaluates 3-D Laplace entries in float32 when the storage is float32 (a
vectorisation trick), so the two products differ there by about 1e-7
relative, under the tolerance that allowed float32.
"""
import numpy as np
from numba import cuda, float64

from hmnumba.kernels.common_cuda import THREADS_ELEMENTWISE
# kernel_entry calls no cuda intrinsic, so it may live in another file (see
# common_cuda on the simulator's module swap).
from hmnumba.kernels.compress_cuda import kernel_entry

# Threads of every kernel here: each thread block works on one node or one
# block, its threads on that node's or block's entries.
THREADS = THREADS_ELEMENTWISE
# Right-hand sides a thread of the block products accumulates at once (its
# local array): one evaluation of an on-the-fly entry serves all of them.
RHS_CHUNK = 8


# ---------------------------------------------------------------------------
# Kernel matrices (the layout of hmnumba.h2matrix.H2Matrix)
# ---------------------------------------------------------------------------


@cuda.jit
def _kernel_up_level(first, children, start, piv_ptr, piv, T_ptr, T, vec_ptr, x,
                     xh):  # pragma: no cover - CUDA device code
    """Node ``t = first + block``: ``xh[t] = z[skel] + T z[rest]`` with ``z``
    its rows of ``x`` (a leaf) or its children's coefficients."""
    t = first + cuda.blockIdx.x
    k = vec_ptr[t + 1] - vec_ptr[t]
    r = x.shape[1]
    p0 = piv_ptr[t]
    w = piv_ptr[t + 1] - p0 - k
    o = T_ptr[t]
    leaf = children[t, 0] < 0
    z = x if leaf else xh
    base = start[t] if leaf else vec_ptr[children[t, 0]]
    for e in range(cuda.threadIdx.x, k * r, cuda.blockDim.x):
        a = e // r
        q = e - a * r
        acc = z[base + piv[p0 + a], q]
        for b in range(w):
            acc += T[o + a * w + b] * z[base + piv[p0 + k + b], q]
        xh[vec_ptr[t] + a, q] = acc


@cuda.jit
def _kernel_down_level(first, children, start, piv_ptr, piv, T_ptr, T, vec_ptr, yh,
                       y):  # pragma: no cover - CUDA device code
    """Node ``t = first + block`` adds ``yh[t]`` to ``z[skel]`` and ``T^T
    yh[t]`` to ``z[rest]`` (``z``: its rows of ``y`` or its children's
    coefficients); the pivots are a permutation, so each entry of ``z`` has
    one thread."""
    t = first + cuda.blockIdx.x
    k = vec_ptr[t + 1] - vec_ptr[t]
    if k == 0:
        return
    r = y.shape[1]
    p0 = piv_ptr[t]
    m = piv_ptr[t + 1] - p0
    w = m - k
    o = T_ptr[t]
    src = vec_ptr[t]
    leaf = children[t, 0] < 0
    z = y if leaf else yh
    base = start[t] if leaf else vec_ptr[children[t, 0]]
    for e in range(cuda.threadIdx.x, m * r, cuda.blockDim.x):
        i = e // r
        q = e - i * r
        if i < k:
            v = yh[src + i, q]
        else:
            v = 0.0
            for a in range(k):
                v += T[o + a * w + i - k] * yh[src + a, q]
        z[base + piv[p0 + i], q] += v


@cuda.jit
def _block_products(stored, data, off, code, length_scale, pts, pt0, bt, bs, do1, lo, hi, x, tmp,
                    tmp0, tmp1):  # pragma: no cover - CUDA device code
    """Phase one over dense blocks, one thread block per block ``b`` (rows of
    node ``bt[b]``, columns of ``bs[b]``; node ``u`` owns rows ``lo[u]:hi[u]``
    of ``x``): ``tmp[tmp0[b]:] = B x_s`` and, where ``do1[b]``, ``tmp[tmp1[b]:]
    = B^T x_t``.

    ``B`` is read row-major at ``data[off[b]:]`` when ``stored``, else it is
    the kernel ``code`` between the points ``pts[:, pt0[t] + i]`` and
    ``pts[:, pt0[s] + j]``. Each thread computes one row of ``B x_s`` or of
    ``B^T x_t``, up to :data:`RHS_CHUNK` right-hand sides per sweep, so an
    on-the-fly entry is evaluated once per side and chunk (twice in all for
    a matvec, which costs less than a reduction across threads would).
    """
    acc = cuda.local.array(RHS_CHUNK, float64)
    b = cuda.blockIdx.x
    t = bt[b]
    s = bs[b]
    m = hi[t] - lo[t]
    n = hi[s] - lo[s]
    r = x.shape[1]
    o = off[b]
    rows = m + n if do1[b] else m
    for e in range(cuda.threadIdx.x, rows, cuda.blockDim.x):
        # row i of B x_s (e < m) or row j of B^T x_t: the other index runs
        # over `length` entries, the operand starts at row `x0` of x
        first = e < m
        i = e if first else 0
        j = 0 if first else e - m
        length = n if first else m
        x0 = lo[s] if first else lo[t]
        out = tmp0[b] + i if first else tmp1[b] + j
        for q0 in range(0, r, RHS_CHUNK):
            width = min(RHS_CHUNK, r - q0)
            for q in range(width):
                acc[q] = 0.0
            for h in range(length):
                if first:
                    j = h
                else:
                    i = h
                if stored:
                    v = data[o + i * n + j]
                else:
                    v = kernel_entry(code, length_scale, pts, pts, pt0[t] + i, pt0[s] + j)
                for q in range(width):
                    acc[q] += v * x[x0 + h, q0 + q]
            for q in range(width):
                tmp[out, q0 + q] = acc[q]


@cuda.jit
def _lowrank_products(L, l_off, l_rank, bt, bs, lo, hi, x, w, w_off, tmp, tmp0,
                      tmp1):  # pragma: no cover - CUDA device code
    """Phase one over couplings stored as factors ``B = U V^T`` (``U (m, k)``
    then ``V (n, k)``, column-major at ``L[l_off[b]:]``), one thread block per
    block: ``w = [V^T x_s; U^T x_t]`` into the block's rows of ``w``, then
    ``tmp[tmp0[b]:] = U w[:k]`` and ``tmp[tmp1[b]:] = V w[k:]``."""
    b = cuda.blockIdx.x
    t = bt[b]
    s = bs[b]
    m = hi[t] - lo[t]
    n = hi[s] - lo[s]
    k = l_rank[b]
    ou = l_off[b]
    ov = ou + k * m
    wo = w_off[b]
    r = x.shape[1]
    for e in range(cuda.threadIdx.x, 2 * k * r, cuda.blockDim.x):
        side = e // (k * r)
        l = (e - side * k * r) // r
        q = e - side * k * r - l * r
        acc = 0.0
        if side == 0:
            for j in range(n):
                acc += L[ov + l * n + j] * x[lo[s] + j, q]
        else:
            for i in range(m):
                acc += L[ou + l * m + i] * x[lo[t] + i, q]
        w[wo + side * k + l, q] = acc
    # The block's writes to w (global memory) are visible to all its threads
    # after the barrier.
    cuda.syncthreads()
    for e in range(cuda.threadIdx.x, (m + n) * r, cuda.blockDim.x):
        acc = 0.0
        if e < m * r:
            i = e // r
            q = e - i * r
            for l in range(k):
                acc += L[ou + l * m + i] * w[wo + l, q]
            tmp[tmp0[b] + i, q] = acc
        else:
            j = (e - m * r) // r
            q = e - m * r - j * r
            for l in range(k):
                acc += L[ov + l * n + j] * w[wo + k + l, q]
            tmp[tmp1[b] + j, q] = acc


@cuda.jit
def _gather_slots(out_lo, out_hi, slot_ptr, slot, tmp, out):  # pragma: no cover - CUDA device code
    """Phase two, one thread block per output node ``u``: ``out[out_lo[u]:
    out_hi[u]] = sum of its slots`` (slot ``p`` starts at row ``slot[p]`` of
    ``tmp``), in CSR order."""
    u = cuda.blockIdx.x
    lo = out_lo[u]
    r = out.shape[1]
    for e in range(cuda.threadIdx.x, (out_hi[u] - lo) * r, cuda.blockDim.x):
        i = e // r
        q = e - i * r
        acc = 0.0
        for p in range(slot_ptr[u], slot_ptr[u + 1]):
            acc += tmp[slot[p] + i, q]
        out[lo + i, q] = acc


# ---------------------------------------------------------------------------
# General matrices (the layout of hmnumba.h2dense)
# ---------------------------------------------------------------------------


@cuda.jit
def _general_up_level(first, children, start, stop, vp, boff, basis, x,
                      xh):  # pragma: no cover - CUDA device code
    """Node ``t = first + block``: ``xh[t] = U_t^T x_t`` (a leaf) or ``E^T
    [xh[c0]; xh[c1]]`` (its stacked transfer matrices)."""
    t = first + cuda.blockIdx.x
    k = vp[t + 1] - vp[t]
    o = boff[t]
    r = x.shape[1]
    for e in range(cuda.threadIdx.x, k * r, cuda.blockDim.x):
        j = e // r
        q = e - j * r
        acc = 0.0
        if children[t, 0] < 0:
            s0 = start[t]
            for i in range(stop[t] - s0):
                acc += basis[o + i * k + j] * x[s0 + i, q]
        else:
            i0 = 0
            for h in range(2):
                c = children[t, h]
                kc = vp[c + 1] - vp[c]
                for i in range(kc):
                    acc += basis[o + (i0 + i) * k + j] * xh[vp[c] + i, q]
                i0 += kc
        xh[vp[t] + j, q] = acc


@cuda.jit
def _general_down_level(first, children, start, stop, vp, boff, basis, yh,
                        y):  # pragma: no cover - CUDA device code
    """Node ``t = first + block``: ``y[t] += U_t yh[t]`` (a leaf) or
    ``yh[c] += E_c yh[t]`` for its children; each thread owns one entry."""
    t = first + cuda.blockIdx.x
    k = vp[t + 1] - vp[t]
    if k == 0:
        return
    o = boff[t]
    r = y.shape[1]
    leaf = children[t, 0] < 0
    c0 = children[t, 0]
    c1 = children[t, 1]
    k0 = 0 if leaf else vp[c0 + 1] - vp[c0]
    rows = stop[t] - start[t] if leaf else k0 + vp[c1 + 1] - vp[c1]
    for e in range(cuda.threadIdx.x, rows * r, cuda.blockDim.x):
        i = e // r
        q = e - i * r
        acc = 0.0
        for j in range(k):
            acc += basis[o + i * k + j] * yh[vp[t] + j, q]
        if leaf:
            y[start[t] + i, q] += acc
        elif i < k0:
            yh[vp[c0] + i, q] += acc
        else:
            yh[vp[c1] + i - k0, q] += acc


@cuda.jit
def _general_blocks(nodes, ptr, other, off, flip, flipped, data, trans, lo_out, hi_out, lo_in,
                    hi_in, x, y):  # pragma: no cover - CUDA device code
    """One thread block per output node ``u = nodes[block]``: ``y[u] = sum_b
    A_b x[other_b]`` over its CSR list, in list order (``A_b`` row-major at
    ``data[off_b:]``, its transpose read when ``trans`` differs from
    ``flip[b]``; ``flip`` is read only when ``flipped``: a general matrix
    has none, and its empty array travels as one unread element)."""
    u = nodes[cuda.blockIdx.x]
    o = lo_out[u]
    m = hi_out[u] - o
    r = x.shape[1]
    for e in range(cuda.threadIdx.x, m * r, cuda.blockDim.x):
        i = e // r
        q = e - i * r
        acc = 0.0
        for p in range(ptr[u], ptr[u + 1]):
            s = other[p]
            i0 = lo_in[s]
            n = hi_in[s] - i0
            b = off[p]
            transposed = trans != (flipped and flip[p] != 0)
            for j in range(n):
                if transposed:
                    v = data[b + j * m + i]
                else:
                    v = data[b + i * n + j]
                acc += v * x[i0 + j, q]
        y[o + i, q] = acc


# ---------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------


def _to_device(a):
    """A device copy of ``a`` (C-contiguous); an empty array travels as one
    element of its dtype, which no kernel reads."""
    a = np.ascontiguousarray(a)
    return cuda.to_device(a if a.size else np.zeros((1,) * a.ndim, a.dtype))


def _levels(level_ptr):
    """``(first node, node count)`` of each non-empty tree level, root first."""
    lp = np.asarray(level_ptr, np.int64)
    return [(int(lp[v]), int(lp[v + 1] - lp[v])) for v in range(lp.size - 1)
            if lp[v + 1] > lp[v]]


def _exclusive_cumsum(sizes):
    out = np.zeros(sizes.size, np.int64)
    np.cumsum(sizes[:-1], out=out[1:])
    return out


def to_device(H):
    """Copy the arrays of an H^2 matrix's product to the device once.

    Parameters
    ----------
    H : H2Matrix or GeneralH2Matrix
        A kernel matrix (mode ``"stored"`` or ``"on-the-fly"``: bases,
        couplings, near field or points, and the two-phase schedule) or a
        general one (:meth:`H2Matrix.from_dense <hmnumba.H2Matrix.from_dense>`;
        a symmetric one of :meth:`~hmnumba.H2Matrix.from_hmatrix` too).

    Returns
    -------
    dict
        Device arrays, argument tuples of the kernels and the sizes the host
        needs; :func:`apply` reads it. :meth:`hmnumba.H2Matrix.to` keeps it.

    Raises
    ------
    ValueError
        A general matrix whose near-field blocks are not all between leaves
        (the one-phase near-field product writes each leaf's rows once).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import H2Matrix
    >>> from hmnumba.kernels import laplace
    >>> from hmnumba.kernels.h2_products_cuda import apply, to_device
    >>> X = np.random.default_rng(0).random((80, 2))
    >>> H = H2Matrix.from_kernel(laplace, X, tol=1e-8, leaf_size=16)
    >>> yp = apply(to_device(H), np.ones((80, 1)))       # in cluster order
    >>> bool(np.allclose(np.sort(yp[:, 0]), np.sort(H @ np.ones(80)), rtol=1e-12, atol=0))
    True
    """
    if "row_vp" in H._a:
        return _general_to_device(H._a)
    return _kernel_to_device(H)


def _kernel_to_device(H):
    a = H._a
    d = _to_device
    vp = a["vec_ptr"]
    lo, hi = d(vp[:-1]), d(vp[1:])
    leaves = H._leaves
    dev = {"kind": "kernel", "n": int(a["n"]), "n_coef": int(vp[-1]),
           "levels": _levels(a["level_ptr"]), "c_ntmp": int(H._c_ntmp),
           "n_ntmp": int(H._n_ntmp), "n_nodes": int(vp.size - 1), "n_leaves": int(leaves.size)}
    dev["tree"] = tuple(d(a[k]) for k in ("children", "start", "piv_ptr", "piv", "T_ptr", "T",
                                          "vec_ptr"))
    code, length_scale = int(a["code"]), float(a["length_scale"])
    stored = H.mode == "stored"
    if stored:
        c_data, c_off, n_data, n_off = (d(a[k]) for k in ("B", "c_off", "D", "n_off"))
        c_pts = n_pts = d(np.zeros((1, 1)))
    else:
        c_data = n_data = d(np.zeros(1))
        c_off, n_off = d(a["cb_t"]), d(a["nb_t"])        # unread: the entries are computed
        c_pts, n_pts = d(a["skel_xyz"]), d(a["xyz"])
    # (stored, data, off, code, length_scale, pts, pt0, bt, bs, do1, lo, hi) of
    # _block_products: couplings act on coefficients (node t's rows
    # vec_ptr[t]:vec_ptr[t + 1], skeleton points at the same positions), the
    # near field on the input (rows start[t]:stop[t], points alike).
    start, stop = d(a["start"]), d(a["stop"])
    dev["n_dense"] = int(a["cb_t"].size)
    dev["dense"] = (stored, c_data, c_off, code, length_scale, c_pts, lo, d(a["cb_t"]),
                    d(a["cb_s"]), d(np.ones(a["cb_t"].size, np.bool_)), lo, hi)
    dev["dense_slots"] = (d(H._c_tmp0), d(H._c_tmp1))
    l_rank = a["l_rank"]
    dev["n_lowrank"] = int(l_rank.size)
    dev["n_w"] = int(2 * l_rank.sum())
    dev["lowrank"] = (d(a["L"]), d(a["l_off"]), d(l_rank), d(a["lb_t"]), d(a["lb_s"]), lo, hi)
    dev["lowrank_slots"] = (d(2 * _exclusive_cumsum(l_rank)), d(H._l_tmp0), d(H._l_tmp1))
    dev["coupling_gather"] = (lo, hi, d(H._c_ptr), d(H._c_slot))
    dev["n_near"] = int(a["nb_t"].size)
    dev["near"] = (stored, n_data, n_off, code, length_scale, n_pts, start, d(a["nb_t"]),
                   d(a["nb_s"]), d(H._n_do1), start, stop)
    dev["near_slots"] = (d(H._n_tmp0), d(H._n_tmp1))
    dev["near_gather"] = (d(a["start"][leaves]), d(a["stop"][leaves]), d(H._n_ptr),
                          d(H._n_slot))
    return dev


def _general_to_device(a):
    d = _to_device
    # A symmetric matrix (one tree, mirrored blocks stored once and listed
    # under both nodes, flipped) has no column side and no transposed lists:
    # H^T = H, so apply() runs its forward product for trans=True too.
    symmetric = "c_flip" in a
    dev = {"kind": "general", "symmetric": symmetric}
    for side in ("row",) if symmetric else ("row", "col"):
        children, vp = a[side + "_children"], a[side + "_vp"]
        leaves = np.flatnonzero(children[:, 0] < 0).astype(np.int64)
        near_count = np.diff(a["n_ptr"] if side == "row" else a["n_tptr"])
        if np.any(near_count[children[:, 0] >= 0]):
            raise ValueError("the near field of this H^2 matrix has blocks between inner "
                             "nodes; the device product needs leaf pairs")
        dev[side] = {
            "tree": tuple(d(a[side + k]) for k in ("_children", "_start", "_stop", "_vp",
                                                    "_boff", "_basis")),
            "levels": _levels(a[side + "_level_ptr"]), "n_coef": int(vp[-1]),
            "size": int(a[side + "_stop"][0]), "n_nodes": int(children.shape[0]),
            "nodes": d(np.arange(children.shape[0], dtype=np.int64)), "leaves": d(leaves),
            "n_leaves": int(leaves.size), "lo": d(vp[:-1]), "hi": d(vp[1:]),
            "start": d(a[side + "_start"]), "stop": d(a[side + "_stop"])}
    if symmetric:
        dev["col"] = dev["row"]
    for name in ("c", "n"):
        data = d(a[name + "_data"])
        # (ptr, other, off, flip, flipped, data) by output row node, and by
        # column node for the transpose of a general matrix (which reads the
        # same data)
        if symmetric:
            dev[name] = (d(a[name + "_ptr"]), d(a[name + "_other"]), d(a[name + "_off"]),
                         d(a[name + "_flip"]), True, data)
            continue
        no_flip = d(np.zeros(0, np.int64))
        dev[name] = (d(a[name + "_ptr"]), d(a[name + "_other"]), d(a[name + "_off"]), no_flip,
                     False, data)
        dev[name + "_t"] = (d(a[name + "_tptr"]), d(a[name + "_tother"]), d(a[name + "_toff"]),
                            no_flip, False, data)
    return dev


def apply(dev, xp, trans=False):
    """One product on the device, in cluster order.

    Parameters
    ----------
    dev : dict
        From :func:`to_device`.
    xp : ndarray of shape (n_in, r)
        The operand in the matrix's cluster order (float64).
    trans : bool, default=False
        ``H^T xp`` (general matrices; a kernel matrix and a symmetric
        general one give ``H xp``).

    Returns
    -------
    ndarray of shape (n_out, r)
        ``H xp`` (or ``H^T xp``) in cluster order, float64.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import H2Matrix
    >>> from hmnumba.kernels.h2_products_cuda import apply, to_device
    >>> W = np.add.outer(np.arange(40.0), np.arange(30.0)) ** 0.5
    >>> G = H2Matrix.from_dense(W, tol=1e-6, leaf_size=8, storage="float64")
    >>> yp = apply(to_device(G), np.ones((40, 2)), trans=True)   # in cluster order
    >>> bool(np.allclose(np.sort(yp, axis=0), np.sort(G.rmatmat(np.ones((40, 2))), axis=0),
    ...                  rtol=1e-12, atol=0))
    True
    """
    x = cuda.to_device(np.ascontiguousarray(xp, dtype=np.float64))
    if dev["kind"] == "general":
        y = _apply_general(dev, x, trans)
    else:
        y = _apply_kernel(dev, x)
    return y.copy_to_host()


def _apply_kernel(dev, x):
    r = x.shape[1]
    tree = dev["tree"]
    xh = cuda.device_array((max(dev["n_coef"], 1), r))
    for first, count in reversed(dev["levels"]):      # children before parents
        _kernel_up_level[count, THREADS](first, *tree, x, xh)
    tmp = cuda.device_array((max(dev["c_ntmp"], 1), r))
    if dev["n_dense"]:
        _block_products[dev["n_dense"], THREADS](*dev["dense"], xh, tmp, *dev["dense_slots"])
    if dev["n_lowrank"]:
        w = cuda.device_array((max(dev["n_w"], 1), r))
        w_off, tmp0, tmp1 = dev["lowrank_slots"]
        _lowrank_products[dev["n_lowrank"], THREADS](*dev["lowrank"], xh, w, w_off, tmp, tmp0,
                                                     tmp1)
    yh = cuda.device_array((max(dev["n_coef"], 1), r))
    _gather_slots[dev["n_nodes"], THREADS](*dev["coupling_gather"], tmp, yh)
    tmp = cuda.device_array((max(dev["n_ntmp"], 1), r))
    if dev["n_near"]:
        _block_products[dev["n_near"], THREADS](*dev["near"], x, tmp, *dev["near_slots"])
    y = cuda.device_array((dev["n"], r))
    _gather_slots[dev["n_leaves"], THREADS](*dev["near_gather"], tmp, y)
    for first, count in dev["levels"]:                 # parents before children
        _kernel_down_level[count, THREADS](first, *tree, yh, y)
    return y


def _apply_general(dev, x, trans):
    trans = trans and not dev["symmetric"]
    src, dst = (dev["row"], dev["col"]) if trans else (dev["col"], dev["row"])
    r = x.shape[1]
    xh = cuda.device_array((max(src["n_coef"], 1), r))
    for first, count in reversed(src["levels"]):
        _general_up_level[count, THREADS](first, *src["tree"], x, xh)
    suffix = "_t" if trans else ""
    yh = cuda.device_array((max(dst["n_coef"], 1), r))
    _general_blocks[dst["n_nodes"], THREADS](dst["nodes"], *dev["c" + suffix], trans, dst["lo"],
                                             dst["hi"], src["lo"], src["hi"], xh, yh)
    # Near-field blocks join leaves only, and the leaves cover the rows once:
    # every entry of y is written here before the downward pass adds to it.
    y = cuda.device_array((dst["size"], r))
    _general_blocks[dst["n_leaves"], THREADS](dst["leaves"], *dev["n" + suffix], trans,
                                              dst["start"], dst["stop"], src["start"],
                                              src["stop"], x, y)
    for first, count in dst["levels"]:
        _general_down_level[count, THREADS](first, *dst["tree"], yh, y)
    return y
