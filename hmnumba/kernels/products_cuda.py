"""H-matrix products on the device: the CUDA twin of
:mod:`hmnumba.kernels.products`.

:func:`to_device` / :func:`apply` run ``y = A x`` (or ``A^T x``) over the
packed layout: phase one ``t_b = V_b^T x_b`` with one thread block per
low-rank H-block and a shared-memory reduction, phase two one thread block
per row-schedule segment, each thread owning its outputs (no atomics, a
fixed summation order).
"""
import numpy as np
from numba import cuda, float64

from hmnumba.kernels.common_cuda import (THREADS_ELEMENTWISE, THREADS_PER_BLOCK, grid,
                                         is_device_array)


# ---------------------------------------------------------------------------
# Block-wide reductions (every thread of the block must call them; see
# common_cuda for why they live in this file)
# ---------------------------------------------------------------------------


@cuda.jit(device=True)
def _block_sum(sh, tid, value):  # pragma: no cover - CUDA device code
    """Sum of ``value`` over the block; every thread gets the result."""
    sh[tid] = value
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


# The packed arrays a product reads, in the order the kernels take them.
_BLOCK_FIELDS = ("data", "row_start", "row_stop", "col_start", "col_stop", "rank", "offset",
                 "t_off")


def to_device(H):
    """Copy the packed arrays of ``H`` to the device once.

    Returns a dict of device arrays: the block arrays, the permutations, both
    schedules and the ids of the low-rank blocks (the phase-one grid).
    :meth:`hmnumba.HMatrix.to` calls it; :func:`apply` uses its result.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.kernels.products_cuda import apply, to_device
    >>> A = np.add.outer(np.arange(48.0), np.arange(40.0))
    >>> H = HMatrix.from_dense(A, tol=1e-10)
    >>> y = apply(to_device(H), H.shape, np.ones(40), False, np.dtype(np.float64))
    >>> bool(np.allclose(y, A.sum(axis=1)))
    True
    """
    dev = {name: cuda.to_device(np.ascontiguousarray(getattr(H, name)))
           for name in _BLOCK_FIELDS + ("row_perm", "col_perm")}
    for side in ("row_sched", "col_sched"):
        dev[side] = tuple(cuda.to_device(a) for a in getattr(H, side))
    lowrank = np.flatnonzero(H.rank > 0).astype(np.int64)
    dev["n_lowrank"] = int(lowrank.size)
    dev["n_t"] = int(H.t_off[-1])
    dev["lowrank"] = cuda.to_device(lowrank if lowrank.size else np.zeros(1, np.int64))
    return dev


@cuda.jit
def _gather_rows(x, perm, out):  # pragma: no cover - CUDA device code
    """``out[p, :] = x[perm[p], :]`` (with a cast to ``out``'s dtype)."""
    e = cuda.grid(1)
    p_rhs = x.shape[1]
    if e < out.shape[0] * p_rhs:
        p = e // p_rhs
        q = e - p * p_rhs
        out[p, q] = x[perm[p], q]


@cuda.jit
def _scatter_rows(y, perm, out):  # pragma: no cover - CUDA device code
    """``out[perm[p], :] = y[p, :]`` (with a cast to ``out``'s dtype)."""
    e = cuda.grid(1)
    p_rhs = y.shape[1]
    if e < y.shape[0] * p_rhs:
        p = e // p_rhs
        q = e - p * p_rhs
        out[perm[p], q] = y[p, q]


@cuda.jit
def _phase_one(data, r0, r1, c0, c1, rank, offset, t_off, lowrank, X, T,
               trans):  # pragma: no cover - CUDA device code
    """``T[t_off[b] + l, :] = V_b[:, l]^T X[c0:c1, :]`` (``U_b`` against
    ``X[r0:r1]`` when ``trans``), one thread block per low-rank block, each
    sum by a shared-memory reduction in float64."""
    sh = cuda.shared.array(THREADS_PER_BLOCK, float64)
    b = lowrank[cuda.blockIdx.x]
    tid = cuda.threadIdx.x
    k = rank[b]
    m = r1[b] - r0[b]
    n = c1[b] - c0[b]
    if trans:
        base = offset[b]
        lo = r0[b]
        length = m
    else:
        base = offset[b] + k * m
        lo = c0[b]
        length = n
    for l in range(k):
        row = base + l * length
        for q in range(X.shape[1]):
            acc = 0.0
            for j in range(tid, length, THREADS_PER_BLOCK):
                acc += data[row + j] * X[lo + j, q]
            acc = _block_sum(sh, tid, acc)
            if tid == 0:
                T[t_off[b] + l, q] = acc


@cuda.jit
def _phase_two(data, r0, r1, c0, c1, rank, offset, t_off, seg, ptr, blk, X, T, Y,
               trans):  # pragma: no cover - CUDA device code
    """One thread block per output segment; each thread owns outputs
    ``(i, q)`` of the segment and adds, in schedule order, its dense-block
    products and ``U_b t_b`` (``V_b t_b`` when ``trans``) terms."""
    s = cuda.blockIdx.x
    lo = seg[s]
    width = seg[s + 1] - lo
    p_rhs = X.shape[1]
    for e in range(cuda.threadIdx.x, width * p_rhs, cuda.blockDim.x):
        i = lo + e // p_rhs
        q = e - (e // p_rhs) * p_rhs
        acc = 0.0
        for p in range(ptr[s], ptr[s + 1]):
            b = blk[p]
            k = rank[b]
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            if k < 0:
                if trans:  # column i - c0 of the dense block against X[r0:r1]
                    col = offset[b] + i - c0[b]
                    for r in range(m):
                        acc += data[col + r * n] * X[r0[b] + r, q]
                else:
                    row = offset[b] + (i - r0[b]) * n
                    for j in range(n):
                        acc += data[row + j] * X[c0[b] + j, q]
            elif k > 0:
                if trans:
                    entry = offset[b] + k * m + i - c0[b]
                    length = n
                else:
                    entry = offset[b] + i - r0[b]
                    length = m
                for l in range(k):
                    acc += data[entry + l * length] * T[t_off[b] + l, q]
        Y[i, q] = acc


def apply(dev, shape, x, trans, out_dtype):
    """``A @ x`` (``A^T @ x`` when ``trans``) on the device.

    Parameters
    ----------
    dev : dict
        From :func:`to_device`.
    shape : tuple of int
        Shape of ``A``.
    x : ndarray or device array, shape (n,) or (n, p)
        Already validated by the caller.
    trans : bool
    out_dtype : numpy dtype

    Returns
    -------
    ndarray, or a device array when ``x`` is one.
    """
    on_device = is_device_array(x)
    n_in, n_out = (shape[0], shape[1]) if trans else (shape[1], shape[0])
    vector = x.ndim == 1
    p_rhs = 1 if vector else x.shape[1]
    if on_device:
        x2 = x.reshape((n_in, p_rhs))
    else:
        x2 = cuda.to_device(np.ascontiguousarray(x).reshape((n_in, p_rhs)))
    in_perm, out_perm = ((dev["row_perm"], dev["col_perm"]) if trans
                         else (dev["col_perm"], dev["row_perm"]))
    seg, ptr, blk = dev["col_sched"] if trans else dev["row_sched"]
    blocks = tuple(dev[name] for name in _BLOCK_FIELDS)
    data = dev["data"]
    xp = cuda.device_array((n_in, p_rhs), data.dtype)
    _gather_rows[grid(n_in * p_rhs, THREADS_ELEMENTWISE), THREADS_ELEMENTWISE](
        x2, in_perm, xp)
    T = cuda.device_array((max(dev["n_t"], 1), p_rhs), np.float64)
    if dev["n_lowrank"]:
        _phase_one[dev["n_lowrank"], THREADS_PER_BLOCK](*blocks, dev["lowrank"], xp, T, trans)
    yp = cuda.device_array((n_out, p_rhs), np.float64)
    _phase_two[seg.shape[0] - 1, THREADS_ELEMENTWISE](*blocks, seg, ptr, blk, xp, T, yp, trans)
    out = cuda.device_array((n_out, p_rhs), out_dtype)
    _scatter_rows[grid(n_out * p_rhs, THREADS_ELEMENTWISE), THREADS_ELEMENTWISE](
        yp, out_perm, out)
    if vector:
        out = out.reshape((n_out,))
    return out if on_device else out.copy_to_host()
