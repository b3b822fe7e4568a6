"""Saving and loading H-matrices: a versioned, checksummed, validated file.

:func:`save` writes the flat arrays of an :class:`~hmnumba.HMatrix` (DESIGN
section 4) to one file (``.hmz`` by convention); :func:`load` reads it back and
validates everything before any numba kernel can see the arrays, since the
kernels do no bounds checks. A truncated, corrupted or hostile file raises
``ValueError`` naming the file and the problem; it never crashes the
interpreter or makes a kernel read out of bounds.

File format (version 1)
-----------------------
All integers are little-endian. The file is a fixed preamble, a JSON header
and a payload of raw arrays::

    offset  bytes  content
    0       8      magic  b"\\x89HMZ\\r\\n\\x1a\\n"
    8       4      format version (uint32), currently 1
    12      4      reserved (uint32), 0
    16      8      header length H (uint64)
    24      32     SHA-256 of the H header bytes
    56      H      header: a UTF-8 JSON object (fields below)
    56 + H  ...    zero bytes up to ``payload_offset`` (the next multiple of 64)
    payload_offset the arrays, in the order of the table below, each starting
                   at a multiple of 64 bytes from the payload start, zero
                   bytes in between; the file ends where the last array ends

==================  =========================================================
header field        meaning
==================  =========================================================
``format``          ``"hmnumba-hmatrix"``
``format_version``  ``1`` (the same number as in the preamble)
``writer``          ``"hmnumba <version>"`` that wrote the file (informative)
``dtype``           ``"float32"`` or ``"float64"``: the dtype of ``data``
``shape``           ``[m, n]``, ``1 <= m, n <= 2**30``
``n_blocks``        number of blocks ``b >= 1``
``tol``             the requested relative tolerance, ``0 < tol < 1``
``norm``            ``||A||_F`` as the matrix recorded it (finite, ``>= 0``)
``params``          build parameters (JSON object); values JSON cannot hold
                    (e.g. a ``RandomState``) are stored as their ``repr``
``payload_offset``  byte offset of the payload in the file
``payload_nbytes``  byte length of the payload
``payload_sha256``  SHA-256 of the payload (hex)
``arrays``          object: name -> ``{"dtype", "shape", "offset"}`` with the
                    offset in bytes from the payload start
``symmetric``       ``true`` if only the upper block triangle is stored (see
                    :attr:`hmnumba.HMatrix.symmetric`); optional, files
                    without it (written before hmnumba 0.2) are ``false``
``error_exp``       integer ``e``, ``|e| <= 1100``: ``block_err2`` and
                    ``block_norm2`` are in units of ``4**e`` (inputs of
                    extreme magnitude, see :attr:`hmnumba.HMatrix.error_exp`);
                    optional, absent means 0
``factor_dtype``    ``"float16"`` or ``"int8"``: ``data`` holds low-precision
                    codes (:mod:`hmnumba.storage`), decoded on load to
                    ``dtype``; optional, absent means ``data`` is ``dtype``
``factor_exp``      integer ``s``, ``|s| <= 1100``: float16 ``data`` is
                    ``half * 2**s``; optional, absent means 0
``outliers``        number ``nnz`` of entries of the sparse part ``S`` of
                    ``W = S + H`` (three extra arrays below); optional,
                    absent means no sparse part
==================  =========================================================

"int" is ``<i4`` or ``<i8``: :func:`save` writes ``<i4`` wherever the values
fit (files of hmnumba 0.1 hold ``<i8`` and full permutations; they load as
before, while hmnumba 0.1 refuses the compact files with a clear message).

=================  =========  ==========  ==================================
array              dtype      shape       content
=================  =========  ==========  ==================================
``row_perm``       int        ``(m,)``    row permutation of the cluster
                                          tree, or empty ``(0,)``: identity
``col_perm``       int        ``(n,)``    column permutation (or empty)
``row_start``      int        ``(b,)``    block rows ``[row_start, row_stop)``
``row_stop``       int        ``(b,)``    (cluster order)
``col_start``      int        ``(b,)``    block columns
``col_stop``       int        ``(b,)``
``rank``           int        ``(b,)``    ``-1`` dense, else ``0 <= k <=
                                          min(m_b, n_b)``
``offset``         int        ``(b,)``    start of the block in ``data``
``block_err2``     ``<f8``    ``(b,)``    squared block errors
``block_norm2``    ``<f8``    ``(b,)``    squared block norms
``data``           ``<f4``/   ``(L,)``    low-rank block: ``U^T (k x m_b)``
                   ``<f8``                then ``V^T (k x n_b)``; dense block
                                          ``m_b x n_b`` row-major
=================  =========  ==========  ==================================

With ``factor_dtype``, ``data`` is ``<f2`` (float16) or ``|i1`` (int8
codes), and int8 files add ``data_scales`` (``<f4``, one scale per run of
``data``: a column of ``U``, of ``V``, a row of a dense block, in buffer
order; ``value = code * scale``). With ``outliers``, three arrays follow:
``outlier_indptr`` (``<i4``, ``(m + 1,)``), ``outlier_indices`` (``<i4``,
``(nnz,)``, column indices increasing within each row) and
``outlier_values`` (``dtype``, ``(nnz,)``): ``S`` in CSR form, in the
matrix's own row and column order. Files without these fields are read as
before; a reader older than these fields refuses them with the message
about unexpected header fields. The format version stays 1.

What :func:`load` checks, in this order: that the path is a regular file
(a FIFO, device or directory is refused before it is read), the magic and version (a newer
version gets its own message), the preamble and header sizes against the file
length, the header checksum, the JSON schema and every field's type and range,
the array layout (exactly the one above, so arrays never overlap), the payload
checksum, then the structure: both permutations are permutations, every block
lies inside the matrix with ``start < stop``, every rank is ``-1`` or
``0 <= k <= min(m_b, n_b)`` (rank 0 is a zero block that stores nothing), every
block's storage lies inside ``data`` without overlapping another's (gaps are
allowed), the blocks tile the matrix exactly (each entry belongs to exactly one
block), and ``data``, ``block_err2``, ``block_norm2`` are finite (the latter two
non-negative). For a symmetric matrix: it is square with one permutation,
every block is diagonal (``row_start == col_start``, ``row_stop == col_stop``;
dense or zero) or strictly upper (``row_stop <= col_start``), and the blocks
with the mirror images of the strictly upper ones tile the matrix. The
work a file can cause is bounded by its size: the products' row and column
schedules may hold at most ``SCHEDULE_PER_ITEM`` entries per block and row
(resp. column), checked before anything is built. Nothing is unpickled.

Writes are atomic: :func:`save` writes a temporary file in the target's
directory, flushes and ``fsync``\\ s it, renames it over the target with
``os.replace`` and ``fsync``\\ s the directory, so the target is always either
the old file or the new one. The one documented litter: if the writing process
is killed (or the machine loses power) before the rename, a temporary file
named ``.<name>.<random>.tmp`` stays next to the target; it is never read and
can be deleted. On an ordinary error the temporary file is removed.

What is not stored: the kernel and points of a matrix built by
:meth:`~hmnumba.HMatrix.from_kernel`, so a loaded matrix's
:meth:`~hmnumba.HMatrix.estimate_error` needs the reference matrix ``A``.

An :class:`~hmnumba.HMatrix` (and a fitted estimator holding one) also
round-trips exactly through ``pickle`` and ``joblib``, kernel source
included; use that only for data you trust, since unpickling runs code. A
``.hmz`` file holds no code and can be loaded from anywhere.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import stat
import struct
import tempfile
from typing import Any

import numpy as np

from hmnumba.blocks import check_structure
from hmnumba.storage import LowPrecision, Packed, SparseOutliers, SymmetricPacked, run_lengths

MAGIC = b"\x89HMZ\r\n\x1a\n"
FORMAT_NAME = "hmnumba-hmatrix"
FORMAT_VERSION = 1
ALIGN = 64
MAX_DIM = 2**30             # keeps every size product below 2**62 in int64
MAX_HEADER_BYTES = 64 << 20
_PREAMBLE = struct.Struct("<8sIIQ32s")   # magic, version, reserved, header length, digest
_INT = "<i8"
_INT32 = "<i4"
_FLOAT = "<f8"
# (name, dtype, length) in file order; length names a header quantity.
_ARRAYS = (("row_perm", _INT, "m"), ("col_perm", _INT, "n"),
           ("row_start", _INT, "b"), ("row_stop", _INT, "b"),
           ("col_start", _INT, "b"), ("col_stop", _INT, "b"),
           ("rank", _INT, "b"), ("offset", _INT, "b"),
           ("block_err2", _FLOAT, "b"), ("block_norm2", _FLOAT, "b"),
           ("data", None, "L"))
_DATA_DTYPES = {"float32": "<f4", "float64": "<f8"}
_HEADER_KEYS = {"format", "format_version", "writer", "dtype", "shape", "n_blocks", "tol",
                "norm", "params", "payload_offset", "payload_nbytes", "payload_sha256",
                "arrays"}
_OPTIONAL_HEADER_KEYS = {"symmetric", "error_exp", "factor_dtype", "factor_exp",
                         "outliers"}
# Low-precision numbers (hmnumba.storage): the file dtype of ``data``, and
# for int8 one float32 scale per run in the extra array ``data_scales``.
_FACTOR_CODES = {"float16": "<f2", "int8": "|i1"}
_SCALES = ("data_scales", "<f4", "runs")
# Sparse outliers (W = S + H): S in CSR, original row and column order.
_OUTLIERS = (("outlier_indptr", _INT32, "m+1"), ("outlier_indices", _INT32, "nnz"),
             ("outlier_values", None, "nnz"))


# ---------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------


def save(H: Any, path: str | os.PathLike) -> None:
    """Write an H-matrix to ``path`` atomically (format in :mod:`hmnumba.io`).

    The file holds the flat arrays, ``tol``, ``norm`` and the build
    parameters. The write goes to a temporary file in the same directory
    which is flushed, ``fsync``-ed and renamed over ``path``: a crash leaves
    either the old file or the new one, never half a file.

    Parameters
    ----------
    H : HMatrix
    path : str or os.PathLike
        Target file; ``.hmz`` by convention. Its directory must exist. A
        symbolic link is followed: its target is replaced.

    Raises
    ------
    TypeError
        ``H`` is not an HMatrix or ``path`` not a path.
    ValueError
        ``H``'s arrays are inconsistent (a file :func:`load` would refuse is
        never written).
    OSError
        The file cannot be written; ``path`` is then unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from hmnumba import HMatrix, load
    >>> x = np.linspace(0, 1, 200)
    >>> H = HMatrix.from_dense(np.exp(-np.abs(x[:, None] - x[None, :])), tol=1e-6)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "a.hmz")
    ...     H.save(path)
    ...     H2 = load(path)
    ...     os.listdir(tmp)
    ['a.hmz']
    >>> bool(np.array_equal(H2 @ np.ones(200), H @ np.ones(200)))
    True
    """
    storage = getattr(H, "storage", None)
    if not isinstance(storage, Packed):
        raise TypeError(f"H must be an HMatrix, got {type(H).__name__}")
    path = _check_path(path)
    dtype = np.dtype(H.dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"cannot save an HMatrix with data dtype {dtype}")
    m, n = H.shape
    if not (1 <= m <= MAX_DIM and 1 <= n <= MAX_DIM):
        raise ValueError(f"cannot save an HMatrix of shape {H.shape}: the format holds "
                         f"1 <= m, n <= 2**30")
    if not (0.0 < H.tol < 1.0 and np.isfinite(H.norm) and H.norm >= 0):
        raise ValueError(f"cannot save an HMatrix with tol={H.tol!r}, norm={H.norm!r}")
    data_le = _DATA_DTYPES[dtype.name]
    arrays = {}
    for name, code, _ in _ARRAYS:
        arrays[name] = np.ascontiguousarray(getattr(storage, name),
                                            dtype=code or data_le).ravel()
    symmetric = storage.symmetric
    check_structure(m, n, arrays, "the HMatrix to save", symmetric)
    arrays = _compact(arrays)
    enc = storage.encoding
    if enc is not None:   # the stored codes, not the decoded working copy
        arrays["data"] = np.ascontiguousarray(
            enc.codes.view(np.float16) if enc.kind == "float16" else enc.codes,
            _FACTOR_CODES[enc.kind])
        if enc.kind == "int8":
            arrays["data_scales"] = np.ascontiguousarray(enc.scales, _SCALES[1])
    S = storage.outliers
    if S is not None:
        arrays["outlier_indptr"] = np.ascontiguousarray(S.indptr, _INT32)
        arrays["outlier_indices"] = np.ascontiguousarray(S.indices, _INT32)
        arrays["outlier_values"] = np.ascontiguousarray(S.values, data_le)
        _check_outliers(m, n, arrays, "the HMatrix to save")
    header, layout, payload_nbytes = _layout(arrays)
    header.update(format=FORMAT_NAME, dtype=dtype.name, shape=[m, n],
                  n_blocks=int(arrays["rank"].size), tol=float(H.tol), norm=float(H.norm),
                  symmetric=symmetric, params=_jsonable(H.params))
    if storage.error_exp:
        header["error_exp"] = int(storage.error_exp)
    if enc is not None:
        header["factor_dtype"] = enc.kind
        if enc.kind == "float16":
            header["factor_exp"] = int(enc.scale_exp)
    if S is not None:
        header["outliers"] = S.nnz
    _write(path, header, arrays, layout, payload_nbytes)


def _write(path, header, arrays, layout, payload_nbytes):
    """Complete ``header`` (format version, writer, payload size and
    checksum, payload offset) and write the file atomically: preamble,
    header, padding, payload."""
    digest = hashlib.sha256()
    for chunk in _payload_chunks(arrays, layout, payload_nbytes):
        digest.update(chunk)
    from hmnumba._version import __version__
    header.update(format_version=FORMAT_VERSION, writer=f"hmnumba {__version__}",
                  payload_nbytes=payload_nbytes, payload_sha256=digest.hexdigest())
    # payload_offset depends on the header length, which depends on it:
    # iterate to the fixed point (at most a couple of rounds).
    header["payload_offset"] = 0
    while True:
        text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
        start = _align(_PREAMBLE.size + len(text))
        if start == header["payload_offset"]:
            break
        header["payload_offset"] = start
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(text),
                              hashlib.sha256(text).digest())
    _atomic_write(path, [preamble, text, bytes(start - _PREAMBLE.size - len(text)),
                         *_payload_chunks(arrays, layout, payload_nbytes)])


def _compact(arrays):
    """The arrays as written: an identity permutation as an empty array, and
    every integer array as int32 where its values fit (all but ``offset``
    always do, since ``m, n <= 2**30``)."""
    out = dict(arrays)
    for name in ("row_perm", "col_perm"):
        if np.array_equal(out[name], np.arange(out[name].size)):
            out[name] = out[name][:0]
    for name, code, _ in _ARRAYS:
        if code == _INT and (out[name].size == 0 or out[name].max() < 2**31):
            out[name] = out[name].astype(_INT32)
    return out


def _check_path(path):
    from hmnumba._validation import check_path
    return check_path(path, "path")


def _open_regular(path, where, expected="a regular .hmz file"):
    """Open ``path`` for reading, refusing anything but a regular file.

    The file is opened non-blocking (so a FIFO with no writer does not hang
    the call) and checked with ``fstat`` on the open descriptor (no race
    between the check and the open); then blocking mode is restored.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise ValueError(f"{where}: {kind}, expected {expected}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _align(nbytes):
    return -(-nbytes // ALIGN) * ALIGN


def _layout(arrays):
    """Header ``arrays`` entry, (offset, nbytes) per array, payload length."""
    entries = {}
    layout = []
    pos = 0
    for name in arrays:
        a = arrays[name]
        pos = _align(pos)
        entries[name] = {"dtype": a.dtype.str, "shape": [int(a.size)], "offset": pos}
        layout.append((pos, a.nbytes))
        pos += a.nbytes
    return {"arrays": entries}, layout, pos


def _payload_chunks(arrays, layout, payload_nbytes):
    pos = 0
    for name, (off, nbytes) in zip(arrays, layout):
        if off > pos:
            yield bytes(off - pos)
        yield memoryview(arrays[name]).cast("B")
        pos = off + nbytes
    assert pos == payload_nbytes


def _jsonable(value):
    """``value`` as JSON-able data; anything else becomes its ``repr``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if np.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _new_file_mode():
    """Permissions a plain ``open(path, "w")`` would give (0o666 & ~umask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)   # not thread-safe: only where /proc is missing
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path, chunks):
    path = os.path.realpath(path)   # replace a symlink's target, not the link
    directory = os.path.dirname(path)
    base = os.path.basename(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory, expected a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _save_npy(path, array):
    """Write ``array`` as a ``.npy`` file, atomically (see :func:`_atomic_write`)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    _atomic_write(path, [buf.getbuffer()])


def _fsync_directory(directory):
    """Make the rename durable; not possible on every OS (e.g. Windows)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------


def read(path: str | os.PathLike, expect: str | None = None) -> tuple[Packed, dict]:
    """Read the storage value of an H-matrix written by :func:`save` (or
    :meth:`HMatrix.save`); :func:`hmnumba.load` wraps it in an
    :class:`~hmnumba.HMatrix`.

    Every field, index, offset and rank is validated before the storage
    value is made (see :mod:`hmnumba.io` for the list), so a truncated,
    corrupted or hostile file is refused with a clear error and never
    reaches the (unchecked) numba kernels. Products of the loaded matrix
    equal those of the saved one bit for bit.

    Parameters
    ----------
    path : str or os.PathLike
    expect : {None, "h", "h2"}, default=None
        The kind of matrix the caller can wrap (``HMatrix.load`` asks for
        ``"h"``, ``H2Matrix.load`` for ``"h2"``): a file of the other kind is
        refused, before its payload is read, with a message that names
        :func:`hmnumba.load`. None reads either kind.

    Returns
    -------
    storage : hmnumba.storage.Packed or dict
        The packed arrays (a :class:`~hmnumba.storage.SymmetricPacked` for
        symmetric storage), with the low-precision codes and the sparse
        part when the file has them; for a file written by :func:`save_h2`,
        the checked dict of H^2 arrays that :class:`~hmnumba.H2Matrix` wraps.
    meta : dict
        ``tol``, ``norm`` and ``params`` as saved: ``HMatrix(storage,
        **meta)`` is the saved matrix. For an H^2 file, ``format="h2"`` and
        ``kind`` (``"kernel"``, ``"general"`` or ``"symmetric"``) instead, and
        :func:`hmnumba.load` gives the H2Matrix. The kernel of a
        :meth:`~hmnumba.HMatrix.from_kernel` matrix is not stored, so its
        ``estimate_error`` then needs the matrix ``A``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (other ``OSError`` for unreadable files).
    ValueError
        ``path`` is not a regular file (a FIFO, device or directory is
        refused before it is read), or the file is not an hmnumba H-matrix
        file, was written by a newer format version, or is truncated,
        corrupted or inconsistent; the message names the file and the
        problem.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.io import read
    >>> rng = np.random.default_rng(0)
    >>> W = (rng.standard_normal((128, 4)) @ rng.standard_normal((4, 96))).astype(np.float32)
    >>> H = HMatrix.from_dense(W, tol=1e-4)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "w.hmz")
    ...     H.save(path)
    ...     storage, meta = read(path)
    ...     with open(path, "r+b") as f:   # damage one byte of the payload
    ...         _ = f.seek(-1, os.SEEK_END)
    ...         _ = f.write(b"?")
    ...     try:
    ...         read(path)
    ...     except ValueError as exc:
    ...         print(str(exc).split(": ", 1)[1])
    payload checksum mismatch (the file is corrupted)
    >>> storage.shape, storage.dtype, meta["tol"]
    ((128, 96), dtype('float32'), 0.0001)
    """
    if expect not in (None, "h", "h2"):
        raise ValueError(f"expect must be None, 'h' or 'h2', got {expect!r}")
    path = _check_path(path)
    where = f"cannot load {path!r}"
    with _open_regular(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(f, size, where)
        if expect is not None and _is_h2_header(header) != (expect == "h2"):
            held, wanted, other = (("an H^2 matrix", "an HMatrix", "H2Matrix.load")
                                   if expect == "h" else
                                   ("an HMatrix", "an H^2 matrix", "HMatrix.load"))
            raise ValueError(f"{path!r} holds {held}, not {wanted}; read it with "
                             f"hmnumba.load (or {other})")
        payload = np.empty(header["payload_nbytes"], np.uint8)
        f.seek(header["payload_offset"])
        if f.readinto(memoryview(payload)) != payload.size:
            raise ValueError(f"{where}: file truncated while reading the payload")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError(f"{where}: payload checksum mismatch (the file is corrupted)")
    if _is_h2_header(header):
        return _load_h2(header, payload, where)
    arrays = {}
    for name, _, _ in _array_table(header):
        spec = header["arrays"][name]
        dt = np.dtype(spec["dtype"])
        raw = payload[spec["offset"]:spec["offset"] + spec["shape"][0] * dt.itemsize]
        # Native byte order and aligned, as the numba kernels expect (a no-op
        # view on little-endian machines: the payload is 64-byte aligned);
        # int32 index arrays are widened to the kernels' int64.
        native = (np.dtype(np.int64) if dt.kind == "i" and dt.itemsize > 1
                  else dt.newbyteorder("="))
        arrays[name] = np.require(raw.view(dt), native, ["C", "A"])
    m, n = header["shape"]
    for name, size in (("row_perm", m), ("col_perm", n)):
        if arrays[name].size == 0:   # the identity permutation is not stored
            arrays[name] = np.arange(size, dtype=np.int64)
    symmetric = header.get("symmetric", False)
    check_structure(m, n, arrays, where, symmetric)
    encoding = _decode(header, arrays, where)
    outliers = None
    if "outliers" in header:
        _check_outliers(m, n, arrays, where)
        outliers = SparseOutliers((m, n), arrays.pop("outlier_indptr").astype(np.int32),
                                  arrays.pop("outlier_indices").astype(np.int32),
                                  np.ascontiguousarray(arrays.pop("outlier_values")))
    kind = SymmetricPacked if symmetric else Packed
    storage = kind._trusted(shape=(m, n), error_exp=header.get("error_exp", 0),
                            encoding=encoding, outliers=outliers, **arrays)
    return storage, dict(tol=header["tol"], norm=header["norm"], params=header["params"])


def _check_outliers(m, n, a, where):
    """CSR of the sparse part: ``indptr`` from 0 to nnz, non-decreasing;
    column indices in ``[0, n)``, strictly increasing in each row; finite values."""
    indptr, indices = a["outlier_indptr"], a["outlier_indices"]
    nnz = a["outlier_values"].size
    if (indptr.size != m + 1 or indptr[0] != 0 or indptr[-1] != nnz or indices.size != nnz
            or np.any(np.diff(indptr) < 0)):
        raise ValueError(f"{where}: outlier_indptr must rise from 0 to the {nnz} outliers "
                         f"over {m} rows")
    if nnz and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"{where}: outlier_indices must lie in [0, {n})")
    starts = np.zeros(nnz, bool)
    starts[indptr[:-1][np.diff(indptr) > 0]] = True
    if nnz > 1 and np.any((np.diff(indices.astype(np.int64)) <= 0) & ~starts[1:]):
        raise ValueError(f"{where}: outlier_indices must increase within each row")
    if not np.all(np.isfinite(a["outlier_values"])):
        raise ValueError(f"{where}: outlier_values contains NaN or infinity")


def _array_table(header):
    """The arrays of a file with this header, in file order."""
    table = _ARRAYS
    if header.get("factor_dtype") == "int8":
        table += (_SCALES,)
    if "outliers" in header:
        table += _OUTLIERS
    return table


def _decode(header, arrays, where):
    """Replace low-precision codes in ``arrays["data"]`` by their decoded
    working copy (after the structure is checked); the stored form, or None."""
    kind = header.get("factor_dtype")
    if kind is None:
        return None
    runs = run_lengths(arrays["row_start"], arrays["row_stop"], arrays["col_start"],
                       arrays["col_stop"], arrays["rank"])
    codes = arrays.pop("data")
    if kind == "float16":
        enc = LowPrecision(kind, codes.view(np.uint16), np.zeros(0, np.float32),
                           header.get("factor_exp", 0), header["dtype"])
    else:
        scales = arrays.pop("data_scales")
        if scales.size != runs.size or not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"{where}: data_scales must hold {runs.size} finite positive "
                             f"scales, one per factor column or dense row")
        if int(runs.sum()) != codes.size:
            raise ValueError(f"{where}: data holds {codes.size} codes, the blocks store "
                             f"{int(runs.sum())} numbers")
        enc = LowPrecision(kind, codes, scales, 0, header["dtype"])
    arrays["data"] = enc.decode(runs)
    if not np.all(np.isfinite(arrays["data"])):
        raise ValueError(f"{where}: data decodes to NaN or infinity")
    return enc


def _read_header(f, size, where):
    """Read and validate the preamble and JSON header; returns the header."""
    pre = f.read(_PREAMBLE.size)
    if len(pre) < 8 or pre[:8] != MAGIC:
        if len(pre) == 0:
            raise ValueError(f"{where}: the file is empty")
        if pre.startswith(b"\x93NUMPY") or pre.startswith(b"PK\x03\x04"):
            raise ValueError(f"{where}: this is a NumPy .npy/.npz file, not an hmnumba "
                             f"H-matrix file (.hmz)")
        if MAGIC.startswith(pre):
            raise ValueError(f"{where}: file truncated inside the preamble ({len(pre)} bytes)")
        raise ValueError(f"{where}: not an hmnumba H-matrix file (bad magic bytes)")
    if len(pre) < _PREAMBLE.size:
        raise ValueError(f"{where}: file truncated inside the preamble ({len(pre)} bytes)")
    _, version, reserved, hlen, hdigest = _PREAMBLE.unpack(pre)
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: written in format version {version} by a newer hmnumba "
                         f"(or corrupted); this hmnumba reads format version "
                         f"{FORMAT_VERSION}, upgrade it to read this file")
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: invalid format version {version}")
    if reserved != 0:
        raise ValueError(f"{where}: reserved preamble field is {reserved}, expected 0")
    if hlen > MAX_HEADER_BYTES or _PREAMBLE.size + hlen > size:
        raise ValueError(f"{where}: header length {hlen} does not fit the file "
                         f"({size} bytes); the file is truncated or corrupted")
    text = f.read(hlen)
    if len(text) != hlen:
        raise ValueError(f"{where}: file truncated inside the header")
    if hashlib.sha256(text).digest() != hdigest:
        raise ValueError(f"{where}: header checksum mismatch (the file is corrupted)")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_keys,
                            parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: header is not valid JSON ({exc})") from None
    (_check_h2_header if _is_h2_header(header) else _check_header)(header, size, hlen, where)
    pad_start = _PREAMBLE.size + hlen
    padding = f.read(header["payload_offset"] - pad_start)
    if padding.strip(b"\x00"):
        raise ValueError(f"{where}: non-zero bytes between header and payload")
    return header


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {sorted(keys)}")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value, limit=80):
    """``repr`` of a header value, cut short (a hostile header can be large)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _finite(value):
    try:
        return math.isfinite(value)
    except OverflowError:   # an integer beyond the float range
        return False


def _check_header(h, size, hlen, where):
    """Schema, types and ranges of the header, and the exact array layout."""
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    if not isinstance(h, dict):
        bad(f"header must be a JSON object, got {type(h).__name__}")
    missing = _HEADER_KEYS - h.keys()
    extra = h.keys() - _HEADER_KEYS - _OPTIONAL_HEADER_KEYS
    if missing or extra:
        bad(f"header fields wrong: missing {sorted(missing)}, unexpected {sorted(extra)}")
    if h["format"] != FORMAT_NAME:
        bad(f"header format is {_short(h['format'])}, expected {FORMAT_NAME!r}")
    if not _is_int(h["format_version"]) or h["format_version"] != FORMAT_VERSION:
        bad(f"header format_version {_short(h['format_version'])} disagrees with the preamble "
            f"({FORMAT_VERSION})")
    if not isinstance(h["writer"], str):
        bad("header writer must be a string")
    if not isinstance(h["dtype"], str) or h["dtype"] not in _DATA_DTYPES:
        bad(f"dtype must be 'float32' or 'float64', got {_short(h['dtype'])}")
    shape = h["shape"]
    if (not isinstance(shape, list) or len(shape) != 2 or not all(map(_is_int, shape))
            or not all(1 <= s <= MAX_DIM for s in shape)):
        bad(f"shape must be [m, n] with 1 <= m, n <= 2**30, got {_short(shape)}")
    n_blocks = h["n_blocks"]
    if not _is_int(n_blocks) or n_blocks < 1:
        bad(f"n_blocks must be a positive integer, got {_short(n_blocks)}")
    tol = h["tol"]
    if not _is_number(tol) or not (_finite(tol) and 0.0 < tol < 1.0):
        bad(f"tol must be a number in (0, 1), got {_short(tol)}")
    norm = h["norm"]
    if not _is_number(norm) or not (_finite(norm) and norm >= 0):
        bad(f"norm must be a finite number >= 0, got {_short(norm)}")
    h["tol"], h["norm"] = float(tol), float(norm)
    if not isinstance(h.get("symmetric", False), bool):
        bad(f"symmetric must be true or false, got {_short(h['symmetric'])}")
    error_exp = h.get("error_exp", 0)
    if not _is_int(error_exp) or abs(error_exp) > 1100:
        bad(f"error_exp must be an integer with |error_exp| <= 1100, got {_short(error_exp)}")
    if not isinstance(h["params"], dict):
        bad(f"params must be a JSON object, got {type(h['params']).__name__}")
    digest = h["payload_sha256"]
    if (not isinstance(digest, str) or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)):
        bad("payload_sha256 must be 64 lowercase hex digits")
    kind = h.get("factor_dtype")
    if kind is not None and kind not in _FACTOR_CODES:
        bad(f"factor_dtype must be one of {sorted(_FACTOR_CODES)}, got {_short(kind)}")
    scale_exp = h.get("factor_exp", 0)
    if not _is_int(scale_exp) or abs(scale_exp) > 1100:
        bad(f"factor_exp must be an integer with |factor_exp| <= 1100, got "
            f"{_short(scale_exp)}")
    table = _array_table(h)
    specs = h["arrays"]
    if not isinstance(specs, dict) or set(specs) != {a[0] for a in table}:
        names = sorted(specs) if isinstance(specs, dict) else specs
        bad(f"arrays must name exactly {[a[0] for a in table]}, got {_short(names)}")
    n_out = h.get("outliers", 0)
    if not _is_int(n_out) or not 0 <= n_out <= shape[0] * shape[1]:
        bad(f"outliers must be an integer between 0 and m * n, got {_short(n_out)}")
    lengths = {"m": shape[0], "n": shape[1], "b": n_blocks, "m+1": shape[0] + 1, "nnz": n_out}
    pos = 0
    for name, code, length in table:
        spec = specs[name]
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "offset"}:
            bad(f"array {name}: entry must have exactly dtype, shape, offset; got {_short(spec)}")
        allowed = (code, _INT32) if code == _INT else (code or _DATA_DTYPES[h["dtype"]],)
        if name == "data" and kind is not None:
            allowed = (_FACTOR_CODES[kind],)
        if spec["dtype"] not in allowed:
            bad(f"array {name}: dtype {_short(spec['dtype'])}, expected "
                + " or ".join(map(repr, allowed)))
        s = spec["shape"]
        if not isinstance(s, list) or len(s) != 1 or not _is_int(s[0]) or s[0] < 0:
            bad(f"array {name}: shape must be [length], got {_short(s)}")
        # A permutation may be empty: the identity, not stored.
        identity = name in ("row_perm", "col_perm") and s[0] == 0
        if length in lengths and s[0] != lengths[length] and not identity:
            bad(f"array {name}: length {s[0]}, expected {lengths[length]} ({length})")
        pos = _align(pos)
        if not _is_int(spec["offset"]) or spec["offset"] != pos:
            bad(f"array {name}: offset {_short(spec['offset'])}, expected {pos}")
        pos += s[0] * np.dtype(spec["dtype"]).itemsize
    if not _is_int(h["payload_nbytes"]) or h["payload_nbytes"] != pos:
        bad(f"payload_nbytes {_short(h['payload_nbytes'])} does not match the arrays ({pos} bytes)")
    start = _align(_PREAMBLE.size + hlen)
    if not _is_int(h["payload_offset"]) or h["payload_offset"] != start:
        bad(f"payload_offset {_short(h['payload_offset'])}, expected {start}")
    if start + pos != size:
        bad(f"file has {size} bytes but the header describes {start + pos}"
            + (" (truncated)" if size < start + pos else " (trailing bytes)"))




# ---------------------------------------------------------------------------
# H^2 matrices (hmnumba.H2Matrix)
# ---------------------------------------------------------------------------
#
# The same preamble, header checksum, payload checksum, 64-byte alignment and
# atomic write as an H-matrix file; the header's ``format`` is
# ``"hmnumba-h2matrix"`` (a reader that predates H^2 refuses it with the
# message about the format), ``kind`` says which H^2 matrix it holds:
#
# ``"kernel"``   a symmetric kernel matrix (H2Matrix.from_kernel); ``meta``:
#                ``n``, ``dim``, ``kernel`` (built-in name), ``length_scale``,
#                ``mode`` ("stored" or "on-the-fly"), ``tol``;
# ``"general"``  a general matrix (H2Matrix.from_dense); ``meta``: ``shape``,
#                ``tol``, ``dtype`` (of the input), ``error`` (the exact
#                relative error, or null);
# ``"symmetric"`` a symmetric general matrix (H2Matrix.from_hmatrix of a
#                symmetric HMatrix, from_kernel(..., symmetric=True)); ``meta``
#                as for ``"general"``, ``shape`` square. One tree and one set
#                of bases (``row_*``; in memory ``col_*`` are the same
#                arrays); each mirrored pair of blocks is stored once in
#                ``c_data`` / ``n_data`` and listed under both of its nodes,
#                the second entry with ``c_flip`` / ``n_flip`` 1 (it reads the
#                block transposed); no transposed lists (H^T = H).
#
# ``arrays`` maps each name of _H2_ARRAYS[kind] (in that order) to its
# ``dtype``, ``shape`` (1-D or 2-D) and ``offset``; integer arrays are
# ``<i4`` where the values fit, else ``<i8``, and widen to int64 on load.
# Array meanings: hmnumba.h2build (kernel) and hmnumba.h2dense (general).
# Everything a numba kernel indexes with is checked on load by
# hmnumba._validation.check_h2_kernel_arrays / check_h2_general_arrays /
# check_h2_symmetric_arrays.

H2_FORMAT_NAME = "hmnumba-h2matrix"
_H2_KINDS = ("kernel", "general", "symmetric")
_H2_HEADER_KEYS = {"format", "format_version", "writer", "kind", "meta", "payload_offset",
                   "payload_nbytes", "payload_sha256", "arrays"}
_H2_TREE = ("perm", "level_ptr", "children", "start", "stop")
_H2_KERNEL = _H2_TREE + ("piv_ptr", "piv", "T_ptr", "T", "vec_ptr", "cb_t", "cb_s", "nb_t",
                         "nb_s")
_H2_ARRAYS = {
    ("kernel", "stored"): _H2_KERNEL + ("c_off", "B", "n_off", "D", "lb_t", "lb_s", "l_off",
                                        "l_rank", "L"),
    ("kernel", "on-the-fly"): _H2_KERNEL + ("xyz", "skel_xyz"),
    ("general", None): tuple(side + "_" + k for side in ("row", "col")
                             for k in _H2_TREE + ("vp", "boff", "basis"))
    + tuple(b + k for b in ("c", "n")
            for k in ("_ptr", "_other", "_off", "_tptr", "_tother", "_toff", "_data")),
    ("symmetric", None): tuple("row_" + k for k in _H2_TREE + ("vp", "boff", "basis"))
    + tuple(b + k for b in ("c", "n") for k in ("_ptr", "_other", "_off", "_flip", "_data")),
}
# float arrays: storage dtype (float32 or float64); coordinates are float64
_H2_STORAGE = {"T", "B", "D", "L", "row_basis", "col_basis", "c_data", "n_data"}
_H2_COORDS = {"xyz", "skel_xyz"}
_H2_2D = {"children", "row_children", "col_children", "xyz", "skel_xyz"}


def _h2_table(kind, mode):
    return _H2_ARRAYS[(kind, mode if kind == "kernel" else None)]


def save_h2(H, path: str | os.PathLike) -> None:
    """Write an :class:`~hmnumba.H2Matrix` to ``path`` atomically.

    Every kind is written (a kernel matrix in either mode, a general
    matrix of :meth:`~hmnumba.H2Matrix.from_dense`, and a symmetric general
    one, whose mirrored blocks are stored once); :func:`load` returns
    the same kind, whose products equal the saved matrix's bit for bit. The
    file layout is the H-matrix one (preamble, checksummed JSON header,
    checksummed payload) with ``format`` ``"hmnumba-h2matrix"``. The points
    of an on-the-fly matrix are part of it; the kernel is stored by name.

    Parameters
    ----------
    H : H2Matrix
    path : str or os.PathLike
        Target file (``.hmz`` by convention); its directory must exist.

    Raises
    ------
    TypeError
        ``H`` is not an H2Matrix.
    ValueError
        ``H``'s arrays are inconsistent (a file :func:`load` would refuse is
        never written).
    OSError
        The file cannot be written; ``path`` is then unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from hmnumba import H2Matrix, load
    >>> from hmnumba.kernels import laplace
    >>> X = np.random.default_rng(0).random((300, 3))
    >>> H = H2Matrix.from_kernel(laplace, X, tol=1e-6)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     H.save(os.path.join(tmp, "k.hmz"))
    ...     H2 = load(os.path.join(tmp, "k.hmz"))
    >>> type(H2).__name__, bool(np.array_equal(H2 @ np.ones(300), H @ np.ones(300)))
    ('H2Matrix', True)
    """
    fields = getattr(H, "_file_fields", None)
    if fields is None:
        raise TypeError(f"H must be an H2Matrix, got {type(H).__name__}")
    path = _check_path(path)
    kind, mode, meta, a = fields()
    arrays = {}
    for name in _h2_table(kind, mode):
        v = np.asarray(a[name])
        if v.dtype.kind in "iu":
            v = v.astype(_INT32 if v.size == 0 or (v.min() >= -2**31 and v.max() < 2**31)
                         else _INT)
        else:
            v = v.astype(v.dtype.newbyteorder("<"))
        arrays[name] = np.ascontiguousarray(v)
    _check_h2_arrays(kind, meta, _h2_native(arrays), "the H2Matrix to save")
    header, layout, payload_nbytes = _layout(arrays)
    for name, v in arrays.items():
        header["arrays"][name]["shape"] = [int(s) for s in v.shape]
    header.update(format=H2_FORMAT_NAME, kind=kind, meta=meta)
    _write(path, header, arrays, layout, payload_nbytes)


def _is_h2_header(header):
    return isinstance(header, dict) and header.get("format") == H2_FORMAT_NAME


def _h2_native(arrays):
    """Native byte order, C-contiguous, integer arrays as int64 (the kernels' type)."""
    return {k: np.require(v, np.int64 if v.dtype.kind in "iu" else v.dtype.newbyteorder("="),
                          ["C", "A"]) for k, v in arrays.items()}


def _check_h2_meta(kind, meta, bad):
    from hmnumba.kernels.codes import H2_MODES, KERNEL_CODES
    if not isinstance(meta, dict):
        bad("meta must be a JSON object")
    keys = ({"n", "dim", "kernel", "length_scale", "mode", "tol"} if kind == "kernel"
            else {"shape", "tol", "dtype", "error"})
    if set(meta) != keys:
        bad(f"meta must have exactly the fields {sorted(keys)}, got {_short(sorted(meta))}")
    tol = meta["tol"]
    if not _is_number(tol) or not (_finite(tol) and 0.0 < tol < 1.0):
        bad(f"tol must be a number in (0, 1), got {_short(tol)}")
    if kind == "kernel":
        if not _is_int(meta["n"]) or not 1 <= meta["n"] <= MAX_DIM:
            bad(f"n must be an integer in [1, 2**30], got {_short(meta['n'])}")
        if not _is_int(meta["dim"]) or not 1 <= meta["dim"] <= 64:
            bad(f"dim must be an integer in [1, 64], got {_short(meta['dim'])}")
        if not isinstance(meta["kernel"], str) or meta["kernel"] not in KERNEL_CODES:
            bad(f"kernel must be one of {sorted(KERNEL_CODES)}, got {_short(meta['kernel'])}")
        ls = meta["length_scale"]
        if not _is_number(ls) or not (_finite(ls) and ls > 0):
            bad(f"length_scale must be a finite number > 0, got {_short(ls)}")
        if meta["mode"] not in H2_MODES:
            bad(f"mode must be one of {list(H2_MODES)}, got {_short(meta['mode'])}")
    else:
        shape = meta["shape"]
        if (not isinstance(shape, list) or len(shape) != 2 or not all(map(_is_int, shape))
                or not all(1 <= s <= MAX_DIM for s in shape)):
            bad(f"shape must be [m, n] with 1 <= m, n <= 2**30, got {_short(shape)}")
        if meta["dtype"] not in _DATA_DTYPES:
            bad(f"dtype must be 'float32' or 'float64', got {_short(meta['dtype'])}")
        err = meta["error"]
        if err is not None and (not _is_number(err) or not (_finite(err) and err >= 0)):
            bad(f"error must be null or a finite number >= 0, got {_short(err)}")


def _check_h2_header(h, size, hlen, where):
    """Schema, types and ranges of an H^2 header, and the exact array layout."""
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    missing, extra = _H2_HEADER_KEYS - h.keys(), h.keys() - _H2_HEADER_KEYS
    if missing or extra:
        bad(f"header fields wrong: missing {sorted(missing)}, unexpected {sorted(extra)}")
    if not _is_int(h["format_version"]) or h["format_version"] != FORMAT_VERSION:
        bad(f"header format_version {_short(h['format_version'])} disagrees with the preamble "
            f"({FORMAT_VERSION})")
    if not isinstance(h["writer"], str):
        bad("header writer must be a string")
    if h["kind"] not in _H2_KINDS:
        bad(f"kind must be one of {list(_H2_KINDS)}, got {_short(h['kind'])}")
    _check_h2_meta(h["kind"], h["meta"], bad)
    digest = h["payload_sha256"]
    if (not isinstance(digest, str) or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)):
        bad("payload_sha256 must be 64 lowercase hex digits")
    table = _h2_table(h["kind"], h["meta"].get("mode"))
    specs = h["arrays"]
    if not isinstance(specs, dict) or set(specs) != set(table):
        bad(f"arrays must name exactly {sorted(table)}, got "
            f"{_short(sorted(specs) if isinstance(specs, dict) else specs)}")
    pos = 0
    for name in table:
        spec = specs[name]
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "offset"}:
            bad(f"array {name}: entry must have exactly dtype, shape, offset; got {_short(spec)}")
        allowed = (("<f4", "<f8") if name in _H2_STORAGE else ("<f8",) if name in _H2_COORDS
                   else (_INT32, _INT))
        if spec["dtype"] not in allowed:
            bad(f"array {name}: dtype {_short(spec['dtype'])}, expected "
                + " or ".join(map(repr, allowed)))
        s = spec["shape"]
        ndim = 2 if name in _H2_2D else 1
        if (not isinstance(s, list) or len(s) != ndim or not all(map(_is_int, s))
                or not all(0 <= v <= 2**40 for v in s)):
            bad(f"array {name}: shape must be a list of {ndim} lengths, got {_short(s)}")
        pos = _align(pos)
        if not _is_int(spec["offset"]) or spec["offset"] != pos:
            bad(f"array {name}: offset {_short(spec['offset'])}, expected {pos}")
        pos += math.prod(s) * np.dtype(spec["dtype"]).itemsize
    if not _is_int(h["payload_nbytes"]) or h["payload_nbytes"] != pos:
        bad(f"payload_nbytes {_short(h['payload_nbytes'])} does not match the arrays ({pos} bytes)")
    start = _align(_PREAMBLE.size + hlen)
    if not _is_int(h["payload_offset"]) or h["payload_offset"] != start:
        bad(f"payload_offset {_short(h['payload_offset'])}, expected {start}")
    if start + pos != size:
        bad(f"file has {size} bytes but the header describes {start + pos}"
            + (" (truncated)" if size < start + pos else " (trailing bytes)"))


def _check_h2_arrays(kind, meta, arrays, where):
    """Structural checks (hmnumba._validation) of native int64/float arrays."""
    from hmnumba._validation import (check_h2_general_arrays, check_h2_kernel_arrays,
                                     check_h2_symmetric_arrays)
    if kind == "kernel":
        check_h2_kernel_arrays(dict(arrays, n=meta["n"], dim=meta["dim"], mode=meta["mode"]),
                               where)
    elif kind == "symmetric":
        check_h2_symmetric_arrays(dict(arrays, shape=meta["shape"]), where)
    else:
        check_h2_general_arrays(dict(arrays, shape=meta["shape"]), where)


def _load_h2(header, payload, where):
    """The H^2 arrays and meta of a checked header and payload (checksum
    verified): what :func:`read` returns for an H^2 file."""
    arrays = {}
    for name in _h2_table(header["kind"], header["meta"].get("mode")):
        spec = header["arrays"][name]
        dt = np.dtype(spec["dtype"])
        raw = payload[spec["offset"]:spec["offset"] + math.prod(spec["shape"]) * dt.itemsize]
        arrays[name] = raw.view(dt).reshape(spec["shape"])
    arrays = _h2_native(arrays)
    kind, meta = header["kind"], header["meta"]
    _check_h2_arrays(kind, meta, arrays, where)
    if kind == "kernel":
        from hmnumba.kernels.codes import KERNEL_CODES
        arrays.update(n=meta["n"], dim=meta["dim"], code=KERNEL_CODES[meta["kernel"]],
                      length_scale=float(meta["length_scale"]), mode=meta["mode"],
                      tol=float(meta["tol"]))
        return arrays, dict(format="h2", kind=kind)
    arrays.update(shape=tuple(meta["shape"]), tol=float(meta["tol"]),
                  dtype=np.dtype(meta["dtype"]))
    return arrays, dict(format="h2", kind=kind, error=meta["error"])
