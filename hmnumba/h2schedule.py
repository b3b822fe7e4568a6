"""Schedules of the H^2 products (plain numpy, computed once per matrix):
the split of a cluster tree into a few top nodes and subtrees, so that an
upward or downward pass is one parallel region, and the temporary slots of
the two-phase block products with, per output node, the CSR of its slots.
Used by the kernel H^2 matrix (:mod:`hmnumba.h2matrix`) and the symmetric
general one (:mod:`hmnumba.h2dense`).

Examples
--------
>>> import numpy as np
>>> from hmnumba.h2schedule import gather_csr, slots
>>> tmp0, tmp1, n_tmp = slots(np.array([2, 3]), np.array([4, 1]))
>>> tmp0.tolist(), tmp1.tolist(), n_tmp
([0, 6], [2, 9], 10)
>>> [a.tolist() for a in gather_csr(2, np.array([0, 1]), tmp0, np.array([1, 0]), tmp1)]
[[0, 2, 4], [0, 9, 2, 6]]
"""
import numpy as np


def subtrees(children, level_ptr, min_subtrees=32):
    """Split the tree for one-region passes: the ``top`` nodes (levels above
    the first level with at least ``min_subtrees`` nodes, breadth-first) and
    the subtrees below, each listed children first (CSR ``sub_ptr``,
    ``sub_nodes``)."""
    n_nodes = children.shape[0]
    counts = np.diff(level_ptr)
    cut = int(np.argmax(counts >= min_subtrees)) if np.any(counts >= min_subtrees) else \
        counts.size - 1
    top = np.arange(level_ptr[cut], dtype=np.int64)
    root = np.full(n_nodes, -1, np.int64)
    roots = np.arange(level_ptr[cut], level_ptr[cut + 1])
    root[roots] = np.arange(roots.size)
    for t in range(level_ptr[cut], n_nodes):        # breadth-first: parents first
        if children[t, 0] >= 0:
            root[children[t]] = root[t]
    below = np.arange(level_ptr[cut], n_nodes)
    sub_nodes = below[np.lexsort((-below, root[below]))]
    sub_ptr = np.zeros(roots.size + 1, np.int64)
    np.cumsum(np.bincount(root[below], minlength=roots.size), out=sub_ptr[1:])
    return top, sub_ptr, sub_nodes.astype(np.int64)


def slots(m, n):
    """Temporary slots of the two-phase block product: block ``b`` owns rows
    ``tmp0[b]:tmp0[b] + m[b]`` (``B x_s``, for ``t``) and ``tmp1[b]:tmp1[b] +
    n[b]`` (``B^T x_t``, for ``s``)."""
    sizes = np.stack([m, n], axis=1).ravel()
    offs = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=offs[1:])
    return offs[0:-1:2].copy(), offs[1::2].copy(), int(offs[-1])


def leaf_index(children):
    """``(leaves, leaf_of)``: the leaves in node order and each node's
    position among them (-1 for an inner node)."""
    leaves = np.flatnonzero(children[:, 0] < 0)
    leaf_of = np.full(children.shape[0], -1, np.int64)
    leaf_of[leaves] = np.arange(leaves.size)
    return leaves, leaf_of


def two_phase(sizes, bt, bs, key_of, n_out):
    """The two-phase schedule of the blocks ``(bt, bs)`` of a symmetric
    matrix, each stored once: block ``b`` is ``sizes[bt[b]] x
    sizes[bs[b]]``, applied as stored for ``bt`` and, off the diagonal
    (``mirror``), transposed for ``bs``; output node ``t`` is
    ``key_of[t]`` of ``n_out``. Returns ``(tmp0, tmp1, n_tmp, mirror, ptr,
    slot)`` (:func:`slots`, :func:`gather_csr`)."""
    mirror = bt != bs
    tmp0, tmp1, n_tmp = slots(sizes[bt], sizes[bs])
    ptr, slot = gather_csr(n_out, key_of[bt], tmp0, key_of[bs[mirror]], tmp1[mirror])
    return tmp0, tmp1, n_tmp, mirror, ptr, slot


def gather_csr(n_out, key0, slot0, key1, slot1):
    """CSR over ``n_out`` output nodes of the slots ``slot0`` (of node
    ``key0``) and ``slot1`` (of ``key1``), each node's slots in slot order."""
    keys = np.concatenate((key0, key1)).astype(np.int64)
    slots = np.concatenate((slot0, slot1)).astype(np.int64)
    order = np.lexsort((slots, keys))
    ptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n_out), out=ptr[1:])
    return ptr, slots[order]
