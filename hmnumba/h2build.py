"""Construction of H^2 matrices (nested cluster bases) from kernels.

:func:`build_kernel_h2` returns the flat arrays of an :class:`~hmnumba.H2Matrix`
(a dict, see :class:`hmnumba.h2matrix.H2Storage`); it never forms the dense
matrix. The steps:

1. a geometric cluster tree (bounding-box bisection) and the strong block
   partition (``min(diam t, diam s) <= eta dist(t, s)``), shared with
   :class:`~hmnumba.HMatrix`;
2. for every node its far-field distance ``rmin``: the smallest box distance
   to an admissible partner of the node or of an ancestor (the far field a
   nested basis must represent); the root and nodes without far field get
   rank 0;
3. cluster bases from the leaves up (H2Pack's proxy-point method): the
   candidates of a node (its points, or its children's skeletons) are
   compressed by an interpolative decomposition of ``K(proxy, candidates)``
   at relative tolerance ``tol``, with proxy points on a sphere of radius
   ``h_min + rmin`` around the box (all far-field sources lie outside it);
4. couplings ``B_ts = K(skel_t, skel_s)`` for admissible pairs and dense
   near-field blocks, each symmetric pair stored once (``mode="stored"``), or
   nothing but the points (``mode="on-the-fly"``).
"""
import numpy as np

from hmnumba._pages import small_pages
from hmnumba._threads import one_blas_thread
from hmnumba.cluster import ClusterTree
from hmnumba.kernels import codes, compress, trees
from hmnumba.kernels.codes import LAPLACE
from hmnumba.kernels import h2_build
from hmnumba.kernels.h2_products import SLABS
from hmnumba.kernels.sources import builtin_source

# Proxy directions per sphere in 3-D (Fibonacci lattice): the far field seen
# from the proxy sphere needs more directions the more digits are asked for;
# 6 (log10 1/tol)^2 (216 at 1e-6) was measured on the cube problem to keep
# the error of the product below tol (100 directions at 1e-6 did not).
N_DIRS_PER_DIGIT2 = 6
N_DIRS_2D = 64
SHELL_RATIO = 1.6
# Shells only sample a non-harmonic far field (no representation theorem
# behind them), so its interpolative decompositions run at a quarter of the
# tolerance: the product then met tol on every kernel of tests/test_h2matrix.py
# (gaussian 2-D at 1e-6: 2.1e-6 with tol itself, 6.9e-7 with tol / 4).
NON_HARMONIC_TOL_FACTOR = 0.25
# Couplings stored as factors are truncated at this fraction of tol relative
# to each coupling. Measured on the 20k cube problem at tol 1e-6: 0.5 gave
# 197 MB and a product error of 2.1e-7, 1.0 gave 187 MB and 3.6e-7.
COUPLING_TOL_FACTOR = 1.0
# Transfer coefficients, couplings and near field are stored in float32 when tol allows: a rounding
# of 2^-24 relative per entry stays 16x below tol from 1e-6 on (mixed
# precision H^2; the product is computed in float64).
FLOAT32_MIN_TOL = 16 * 2.0 ** -24
MAX_SHELLS = 8


def n_proxy_directions(dim, tol):
    """Proxy directions per sphere for tolerance ``tol`` in dimension ``dim``."""
    digits = max(1.0, np.log10(1.0 / tol))
    if dim == 3:
        return int(np.clip(N_DIRS_PER_DIGIT2 * digits * digits, 64, 1024))
    return int(np.clip(4 * digits * digits, 16, 256)) * max(1, dim - 1)


def proxy_directions(dim, n_dirs=None):
    """Unit vectors ``(n, dim)``: a Fibonacci lattice in 3-D, a regular
    polygon in 2-D, ``+-1`` in 1-D, seeded Gaussian directions above.

    Examples
    --------
    >>> from hmnumba.h2build import proxy_directions
    >>> import numpy as np
    >>> D = proxy_directions(3, 50)
    >>> D.shape, bool(np.allclose(np.linalg.norm(D, axis=1), 1.0))
    ((50, 3), True)
    """
    if dim == 1:
        return np.array([[-1.0], [1.0]])
    if dim == 2:
        n = n_dirs or 64
        a = 2 * np.pi * (np.arange(n) + 0.5) / n
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if dim == 3:
        n = n_dirs or 216
        i = np.arange(n) + 0.5
        z = 1.0 - 2.0 * i / n
        rho = np.sqrt(1.0 - z * z)
        phi = np.pi * (1.0 + 5 ** 0.5) * i
        return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    n = n_dirs or 64 * dim
    G = np.random.default_rng(0).standard_normal((n, dim))
    return G / np.linalg.norm(G, axis=1, keepdims=True)


def _box_distance(lo1, hi1, lo2, hi2):
    gap = np.maximum(0.0, np.maximum(lo2 - hi1, lo1 - hi2))
    return np.sqrt((gap * gap).sum(axis=1))


def level_pointer(level):
    """Node ranges per level (nodes are in breadth-first order)."""
    if np.any(np.diff(level) < 0):   # pragma: no cover - the tree builders are breadth-first
        raise RuntimeError("cluster tree nodes are not in level order")
    return np.searchsorted(level, np.arange(level.max() + 2)).astype(np.int64)


def far_field_distance(tree, far_t, far_s):
    """``rmin[t]``: smallest box distance from ``t`` to an admissible partner
    of ``t`` or of one of its ancestors (``inf``: no far field)."""
    n_nodes = tree.n_nodes
    rmin = np.full(n_nodes, np.inf)
    dist = _box_distance(tree.box_lo[far_t], tree.box_hi[far_t],
                         tree.box_lo[far_s], tree.box_hi[far_s])
    np.minimum.at(rmin, far_t, dist)
    parent = np.full(n_nodes, -1, np.int64)
    inner = np.flatnonzero(tree.children[:, 0] >= 0)
    parent[tree.children[inner, 0]] = inner
    parent[tree.children[inner, 1]] = inner
    lp = level_pointer(tree.level)
    for lev in range(1, lp.size - 1):
        nodes = np.arange(lp[lev], lp[lev + 1])
        rmin[nodes] = np.minimum(rmin[nodes], rmin[parent[nodes]])
    return rmin


def proxy_radii(tree, rmin, harmonic):
    """Proxy shell radii per node (CSR): one sphere of radius ``h_min + rmin``
    for a harmonic kernel, else shells growing by ``SHELL_RATIO`` out to the
    far corner of the root box."""
    lo, hi = tree.box_lo, tree.box_hi
    half = 0.5 * (hi - lo)
    center = 0.5 * (lo + hi)
    r0 = half.min(axis=1) + rmin
    # Every far-field source lies outside the sphere of radius h_min + rmin;
    # a sphere that does not also enclose the box cannot represent the field
    # inside it, so the radius is at least the half-diagonal.
    r0 = np.maximum(r0, 1.0001 * np.sqrt((half * half).sum(axis=1)))
    corners = np.maximum(np.abs(center - lo[0]), np.abs(center - hi[0]))
    rmax = np.sqrt((corners * corners).sum(axis=1)) * 1.01
    radii, counts = [], np.zeros(tree.n_nodes, np.int64)
    for t in range(tree.n_nodes):
        if not np.isfinite(rmin[t]):
            continue
        shells = [r0[t]]
        if not harmonic:
            r = r0[t]
            while r < rmax[t] and len(shells) < MAX_SHELLS:
                r = min(r * SHELL_RATIO, rmax[t]) if len(shells) < MAX_SHELLS - 1 else rmax[t]
                shells.append(r)
        radii.extend(shells)
        counts[t] = len(shells)
    ptr = np.zeros(tree.n_nodes + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    return center, ptr, np.asarray(radii, np.float64)


def build_bases(tree, xyz_perm, code, length_scale, tol, rmin, harmonic):
    """Nested interpolative bases from the leaves up.

    Returns ``rank, piv_ptr, piv, T_ptr, T, skel_pos`` where ``skel_pos``
    concatenates each node's skeleton (positions in cluster order) at
    ``vec_ptr = cumsum(rank)``.
    """
    n_nodes = tree.n_nodes
    children = tree.children
    center, radius_ptr, radius = proxy_radii(tree, rmin, harmonic)
    dirs = proxy_directions(xyz_perm.shape[1], n_proxy_directions(xyz_perm.shape[1], tol))
    lp = level_pointer(tree.level)
    rank = np.zeros(n_nodes, np.int64)
    m_of = np.zeros(n_nodes, np.int64)
    piv_of = [None] * n_nodes
    T_of = [None] * n_nodes
    skel_of = [np.empty(0, np.int64)] * n_nodes
    for lev in range(lp.size - 2, -1, -1):
        nodes = np.arange(lp[lev], lp[lev + 1])
        nodes = nodes[np.isfinite(rmin[nodes])]
        if nodes.size == 0:
            continue
        cands = []
        for t in nodes:
            if children[t, 0] < 0:
                cands.append(np.arange(tree.start[t], tree.stop[t]))
            else:
                cands.append(np.concatenate((skel_of[children[t, 0]], skel_of[children[t, 1]])))
        sizes = np.array([c.size for c in cands], np.int64)
        cand_ptr = np.zeros(nodes.size + 1, np.int64)
        np.cumsum(sizes, out=cand_ptr[1:])
        cand = np.concatenate(cands).astype(np.int64)
        T_ptr = np.zeros(nodes.size + 1, np.int64)
        np.cumsum(sizes * sizes // 4 + 1, out=T_ptr[1:])
        rk = np.zeros(nodes.size, np.int64)
        piv = np.zeros(cand.size, np.int64)
        T_buf = np.empty(T_ptr[-1])
        sub = np.concatenate([np.arange(radius_ptr[t], radius_ptr[t + 1]) for t in nodes])
        sub_ptr = np.zeros(nodes.size + 1, np.int64)
        np.cumsum(radius_ptr[nodes + 1] - radius_ptr[nodes], out=sub_ptr[1:])
        h2_build.id_level(nodes, cand_ptr, np.ascontiguousarray(xyz_perm[cand]),
                          np.ascontiguousarray(center[nodes]), sub_ptr, radius[sub], dirs,
                          code, length_scale, tol, rk, piv, T_buf, T_ptr)
        for u, t in enumerate(nodes):
            k, m = int(rk[u]), int(sizes[u])
            p = piv[cand_ptr[u]:cand_ptr[u + 1]]
            rank[t] = k
            if k == 0:
                continue
            m_of[t] = m
            piv_of[t] = p
            T_of[t] = T_buf[T_ptr[u]:T_ptr[u] + k * (m - k)]
            skel_of[t] = cands[u][p[:k]]
    piv_ptr = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(m_of, out=piv_ptr[1:])
    T_len = np.where(rank > 0, rank * (m_of - rank), 0)
    T_ptr = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(T_len, out=T_ptr[1:])
    nz = [t for t in range(n_nodes) if rank[t] > 0]
    piv = np.concatenate([piv_of[t] for t in nz]) if nz else np.empty(0, np.int64)
    T = np.concatenate([T_of[t] for t in nz]) if nz else np.empty(0)
    skel = np.concatenate([skel_of[t] for t in nz]) if nz else np.empty(0, np.int64)
    return rank, piv_ptr, piv.astype(np.int64), T_ptr, T, skel.astype(np.int64)


# Coupling compression runs in chunks whose factor room is at most this many
# float64 numbers (128 MB), so one scratch is reused: fresh pages are the
# dominant cost of a build on a VM (40k cube, builds alternating 128 MB
# chunks and one chunk in one process: median 4.74 against 6.66 s; smaller
# chunks, 32 and 8 MB, were slower: 3.4 and 4.4 s against 2.7 s warm).
COUPLING_CHUNK_ROOM = 16 * 2 ** 20


def compress_couplings(code, length_scale, skel_xyz, vec_ptr, bt, bs, rel_tol, dtype):
    """Couplings ``K(skel_t, skel_s)`` that are cheaper as factors ``U V^T``.

    Partial ACA with SVD recompression (the H-matrix build's
    :func:`~hmnumba.kernels.compress.compress_blocks`) at ``rel_tol`` relative to
    each coupling, capped at the largest rank that stores fewer numbers than
    the dense ``k_t x k_s`` coupling. Well-separated pairs of large clusters
    need far lower ranks than their bases: on the 40k cube problem a third of
    the couplings (all of those between clusters of more than ~40 skeleton
    points) are stored as factors, at about half their dense size.

    Memory: the candidates are compressed in chunks of about
    ``COUPLING_CHUNK_ROOM`` numbers of factor room into one reused float64
    scratch, and each chunk's accepted factors are copied (as ``dtype``) into
    an output reserved for the worst case, whose untouched tail costs no
    memory and is cut off in place at the end (``ndarray.resize``: a
    ``realloc`` that shrinks without copying). Each block is compressed on its
    own, so the chunking does not change a bit of the result.

    Returns ``(lowrank, rank, offset, data)``: a mask over the couplings and,
    for the low-rank ones, their ranks, offsets and factors (``U`` then ``V``,
    column-major) in ``dtype``.
    """
    m = vec_ptr[bt + 1] - vec_ptr[bt]
    n = vec_ptr[bs + 1] - vec_ptr[bs]
    kmax = np.where(m * n > 0, (m * n - 1) // np.maximum(m + n, 1), 0)
    cand = np.flatnonzero(kmax > 0)
    lowrank = np.zeros(bt.size, bool)
    if cand.size == 0:
        return lowrank, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)
    kcap = kmax[cand].astype(np.int64)
    room = kcap * (m[cand] + n[cand])
    # chunks of consecutive candidates: a candidate joins the chunk in which
    # its room starts, so a chunk holds at most COUPLING_CHUNK_ROOM plus one
    # candidate's room
    first = np.cumsum(room) - room
    chunk = first // COUPLING_CHUNK_ROOM
    bounds = np.flatnonzero(np.diff(chunk, prepend=-1, append=chunk[-1] + 1)).tolist()
    totals = np.add.reduceat(room, bounds[:-1])
    store = np.empty(int(totals.max()))
    data = np.empty(int(room.sum()), dtype)        # reserved; only what is written is touched
    used = 0
    ranks, offsets = [], []
    src = builtin_source(code, length_scale, skel_xyz.T, skel_xyz.T)   # no copy: C by coordinate
    n_slabs = 64
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        c = cand[lo:hi]
        r0, r1 = vec_ptr[bt[c]], vec_ptr[bt[c] + 1]
        c0, c1 = vec_ptr[bs[c]], vec_ptr[bs[c] + 1]
        slab_start = np.zeros(n_slabs + 1, np.int64)
        np.cumsum(np.bincount(np.arange(c.size) % n_slabs, weights=room[lo:hi],
                              minlength=n_slabs).astype(np.int64), out=slab_start[1:])
        out_off = np.zeros(c.size, np.int64)
        status = np.zeros(c.size, np.int64)
        rank = np.zeros(c.size, np.int64)
        err2 = np.zeros(c.size)
        norm2 = np.zeros(c.size)
        compress.compress_blocks(src, False, r0, r1, c0, c1, float(rel_tol), np.zeros(c.size),
                                 codes.METHOD_ACA, kcap[lo:hi], kcap[lo:hi], 0, store, slab_start,
                                 out_off, status, rank, err2, norm2)
        ok = status == codes.STATUS_ACCEPTED
        lowrank[c[ok]] = True
        sizes = rank[ok] * (r1[ok] - r0[ok] + c1[ok] - c0[ok])
        offset = np.zeros(sizes.size + 1, np.int64)
        np.cumsum(sizes, out=offset[1:])
        offset += used
        compress.gather_factors(store, out_off[ok], sizes, data, offset[:-1])
        used = int(offset[-1])
        ranks.append(rank[ok])
        offsets.append(offset[:-1])
    data.resize(used, refcheck=False)
    return lowrank, np.concatenate(ranks), np.concatenate(offsets), data


def slab_order(n_blocks):
    """The order in which the builder lists ``n_blocks`` blocks: the
    partition's blocks ``u, u + SLABS, u + 2 SLABS, ...`` for ``u = 0, 1,
    ...``, so that each slab of the products (a contiguous range, see
    :data:`hmnumba.kernels.h2_products.SLABS`) holds a balanced mix of block
    sizes and reads its stored entries contiguously.

    Examples
    --------
    >>> from hmnumba.h2build import slab_order
    >>> from hmnumba.kernels.h2_products import SLABS
    >>> order = slab_order(2 * SLABS + 1)
    >>> order[:3].tolist(), order[3:5].tolist()
    ([0, 256, 512], [1, 257])
    """
    i = np.arange(n_blocks, dtype=np.int64)
    return np.lexsort((i // SLABS, i % SLABS))


def build_kernel_h2(kernel, points, tol, leaf_size, eta, mode):
    """The arrays of a symmetric kernel H^2 matrix (validated inputs)."""
    # LAPACK runs inside numba's parallel loops (QR, eigh): one BLAS thread;
    # every stored number goes to fresh memory: small pages (hmnumba._pages).
    with one_blas_thread(), small_pages():
        return _build_kernel_h2(kernel, points, tol, leaf_size, eta, mode)


def _build_kernel_h2(kernel, points, tol, leaf_size, eta, mode):
    tree = ClusterTree.from_points(points, leaf_size)
    n, dim = points.shape
    code, length_scale = int(kernel.code), float(kernel.length_scale)
    bt, bs, adm = trees.strong_partition(tree.children, tree.box_lo, tree.box_hi,
                                       tree.children, tree.box_lo, tree.box_hi, float(eta))
    rmin = far_field_distance(tree, bt[adm], bs[adm])
    xyz_perm = np.ascontiguousarray(points[tree.perm])
    harmonic = code == LAPLACE and dim == 3
    id_tol = tol if harmonic else NON_HARMONIC_TOL_FACTOR * tol
    rank, piv_ptr, piv, T_ptr, T, skel = build_bases(tree, xyz_perm, code, length_scale, id_tol,
                                                     rmin, harmonic)
    dtype = np.float32 if tol >= FLOAT32_MIN_TOL else np.float64
    T = T.astype(dtype)
    vec_ptr = np.zeros(tree.n_nodes + 1, np.int64)
    np.cumsum(rank, out=vec_ptr[1:])
    upper = np.flatnonzero(adm & (bt < bs))
    upper = upper[slab_order(upper.size)]
    cb_t, cb_s = bt[upper], bs[upper]
    near = np.flatnonzero(~adm & (bt <= bs))
    near = near[slab_order(near.size)]
    nb_t, nb_s = bt[near], bs[near]
    xyzT = np.ascontiguousarray(xyz_perm.T)
    out = dict(n=n, dim=dim, code=code, length_scale=length_scale, mode=mode, tol=tol,
               perm=tree.perm.astype(np.int64), level_ptr=level_pointer(tree.level),
               children=tree.children.astype(np.int64), start=tree.start.astype(np.int64),
               stop=tree.stop.astype(np.int64), piv_ptr=piv_ptr, piv=piv, T_ptr=T_ptr, T=T,
               vec_ptr=vec_ptr, cb_t=cb_t, cb_s=cb_s, nb_t=nb_t, nb_s=nb_s)
    cm, cn = rank[cb_t], rank[cb_s]
    nm = tree.stop[nb_t] - tree.start[nb_t]
    nn = tree.stop[nb_s] - tree.start[nb_s]
    if mode == "stored":
        skel_xyz = np.ascontiguousarray(xyzT[:, skel])
        lowrank, l_rank, l_off, L = compress_couplings(code, length_scale, skel_xyz, vec_ptr,
                                                       cb_t, cb_s, COUPLING_TOL_FACTOR * id_tol,
                                                       dtype)
        cb_t, cb_s, cm, cn = cb_t[~lowrank], cb_s[~lowrank], cm[~lowrank], cn[~lowrank]
        c_off = np.zeros(cb_t.size + 1, np.int64)
        np.cumsum(cm * cn, out=c_off[1:])
        B = np.empty(c_off[-1], dtype)
        h2_build.kernel_blocks(code, length_scale, xyzT, skel, vec_ptr[:-1], vec_ptr[1:], skel,
                               vec_ptr[:-1], vec_ptr[1:], cb_t, cb_s, c_off, B)
        n_off = np.zeros(nb_t.size + 1, np.int64)
        np.cumsum(nm * nn, out=n_off[1:])
        D = np.empty(n_off[-1], dtype)
        pos = np.arange(n, dtype=np.int64)
        h2_build.kernel_blocks(code, length_scale, xyzT, pos, out["start"], out["stop"], pos,
                               out["start"], out["stop"], nb_t, nb_s, n_off, D)
        out.update(cb_t=cb_t, cb_s=cb_s, c_off=c_off[:-1].copy(), B=B, n_off=n_off[:-1].copy(),
                   D=D, lb_t=out["cb_t"][lowrank], lb_s=out["cb_s"][lowrank], l_off=l_off,
                   l_rank=l_rank, L=L)
    else:
        out.update(xyz=xyzT, skel_xyz=np.ascontiguousarray(xyzT[:, skel]))
    return out
