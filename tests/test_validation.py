"""Every bad input of DESIGN section 7 is refused with a TypeError/ValueError
whose message names the argument (:mod:`hmnumba._validation`)."""
import numba
import numpy as np
import pytest
import scipy.sparse

from hmnumba import HMatrix
from hmnumba.cluster import ClusterTree
from hmnumba.kernels import assemble_dense, laplace

GOOD = np.random.default_rng(0).standard_normal((40, 30))
POINTS = np.random.default_rng(1).random((50, 3))


@pytest.fixture(scope="module")
def H():
    return HMatrix.from_dense(GOOD, tol=1e-6)


# ------------------------------------------------------------- the matrix A

BAD_MATRICES = [
    pytest.param(np.ones(10), ValueError, "A must be 2-D", id="1-D"),
    pytest.param(np.ones((3, 4, 5)), ValueError, "A must be 2-D", id="3-D"),
    pytest.param(np.float64(3.0), ValueError, "A must be 2-D", id="scalar"),
    pytest.param(np.ones((0, 5)), ValueError, "A must not be empty", id="empty-rows"),
    pytest.param(np.ones((5, 0)), ValueError, "A must not be empty", id="empty-cols"),
    pytest.param(np.where(np.eye(4) > 0, np.nan, 1.0), ValueError, "A contains NaN", id="nan"),
    pytest.param(np.where(np.eye(4) > 0, np.inf, 1.0), ValueError, "A contains NaN or inf",
                 id="inf"),
    pytest.param(np.full((4, 4), -np.inf), ValueError, "A contains", id="minus-inf"),
    pytest.param(np.ones((4, 4), complex), TypeError, "A must be real", id="complex"),
    pytest.param(np.ones((4, 4), object), TypeError, "A must be .*float", id="object"),
    pytest.param(np.array([["a", "b"], ["c", "d"]]), TypeError, "A must be", id="str"),
    pytest.param([[1.0, 2.0], [3.0]], TypeError, "A must be array-like", id="ragged"),
    pytest.param(scipy.sparse.csr_matrix(np.eye(4)), TypeError, "A must be a dense array",
                 id="sparse-matrix"),
    pytest.param(scipy.sparse.csr_array(np.eye(4)), TypeError, "A must be a dense array",
                 id="sparse-array"),
]


@pytest.mark.parametrize("A,exc,match", BAD_MATRICES)
def test_from_dense_refuses_bad_matrices(A, exc, match):
    with pytest.raises(exc, match=match):
        HMatrix.from_dense(A)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, bool])
def test_from_dense_converts_integer_and_boolean_arrays_to_float64(dtype):
    # As HMatrixCompressor (scikit-learn's validate_data) and `hmnumba compress` do.
    A = (np.arange(48).reshape(8, 6) % 3).astype(dtype)
    H = HMatrix.from_dense(A, tol=1e-8)
    assert H.dtype == np.float64
    np.testing.assert_allclose(H.to_dense(), A.astype(np.float64), atol=1e-12)


def test_from_dense_accepts_lists_and_non_contiguous_arrays():
    H = HMatrix.from_dense(GOOD.tolist(), tol=1e-8)
    assert np.allclose(H.to_dense(), GOOD)
    F = np.asfortranarray(GOOD)
    assert np.allclose(HMatrix.from_dense(F, tol=1e-8).to_dense(), GOOD)
    S = GOOD[::2, ::3]
    assert np.allclose(HMatrix.from_dense(S, tol=1e-8).to_dense(), S)


# ----------------------------------------------------------- the parameters

BAD_OPTIONS = [
    pytest.param(dict(tol=0.0), ValueError, "tol", id="tol-zero"),
    pytest.param(dict(tol=-1e-3), ValueError, "tol", id="tol-negative"),
    pytest.param(dict(tol=1.0), ValueError, "tol", id="tol-one"),
    pytest.param(dict(tol=2.5), ValueError, "tol", id="tol-above-one"),
    pytest.param(dict(tol=float("nan")), ValueError, "tol", id="tol-nan"),
    pytest.param(dict(tol="1e-3"), TypeError, "tol", id="tol-string"),
    pytest.param(dict(tol=None), TypeError, "tol", id="tol-none"),
    pytest.param(dict(tol=True), TypeError, "tol", id="tol-bool"),
    pytest.param(dict(tol=1e-3 + 0j), TypeError, "tol", id="tol-complex"),
    pytest.param(dict(leaf_size=0), ValueError, "leaf_size", id="leaf-zero"),
    pytest.param(dict(leaf_size=-4), ValueError, "leaf_size", id="leaf-negative"),
    pytest.param(dict(leaf_size=16.0), TypeError, "leaf_size", id="leaf-float"),
    pytest.param(dict(leaf_size="16"), TypeError, "leaf_size", id="leaf-string"),
    pytest.param(dict(admissibility="hodlr"), ValueError, "admissibility", id="admissibility"),
    pytest.param(dict(admissibility=None), ValueError, "admissibility", id="admissibility-none"),
    pytest.param(dict(cluster="kmeans"), ValueError, "cluster", id="cluster"),
    pytest.param(dict(method="qr"), ValueError, "method", id="method"),
    pytest.param(dict(method="ACA"), ValueError, "method", id="method-case"),
    pytest.param(dict(budget="global"), ValueError, "budget", id="budget"),
    pytest.param(dict(eta=0.0), ValueError, "eta", id="eta-zero"),
    pytest.param(dict(eta=float("inf")), ValueError, "eta", id="eta-inf"),
    pytest.param(dict(eta="2"), TypeError, "eta", id="eta-string"),
    pytest.param(dict(max_rank=-1), ValueError, "max_rank", id="max-rank-negative"),
    pytest.param(dict(max_rank=2.5), TypeError, "max_rank", id="max-rank-float"),
    pytest.param(dict(random_state="seed"), TypeError, "random_state", id="random-state-str"),
    pytest.param(dict(random_state=-1), ValueError, "random_state", id="random-state-neg"),
]


@pytest.mark.parametrize("options,exc,match", BAD_OPTIONS)
def test_from_dense_refuses_bad_options(options, exc, match):
    with pytest.raises(exc, match=match):
        HMatrix.from_dense(GOOD, **options)


@pytest.mark.parametrize("options,exc,match", [
    p for p in BAD_OPTIONS if p.id.split("-")[0] not in ("cluster", "method")])
def test_from_kernel_refuses_bad_options(options, exc, match):
    with pytest.raises(exc, match=match):
        HMatrix.from_kernel(laplace, POINTS, **options)


def test_numpy_scalars_are_valid_options():
    H = HMatrix.from_dense(GOOD, tol=np.float32(1e-4), leaf_size=np.int64(8),
                           eta=np.float64(1.5), random_state=np.int32(3))
    assert H.tol == pytest.approx(1e-4)


# ------------------------------------------------------------------ products

@pytest.mark.parametrize("call,match", [
    pytest.param(lambda H: H @ np.ones(31), "operand", id="matmul-vector"),
    pytest.param(lambda H: H @ np.ones((29, 2)), "operand", id="matmul-matrix"),
    pytest.param(lambda H: H.matvec(np.ones(40)), "x", id="matvec"),
    pytest.param(lambda H: H.matmat(np.ones((40, 3))), "X", id="matmat"),
    pytest.param(lambda H: H.rmatvec(np.ones(30)), "y", id="rmatvec"),
    pytest.param(lambda H: H.rmatmat(np.ones((30, 3))), "Y", id="rmatmat"),
    pytest.param(lambda H: H.T @ np.ones(30), "operand", id="transpose-matmul"),
])
def test_shape_mismatch_in_products_is_a_value_error_naming_the_operand(H, call, match):
    with pytest.raises(ValueError, match=f"(?s)dimension mismatch.*{match}"):
        call(H)


def test_shape_mismatch_of_a_left_operand_is_a_value_error(H):
    # H is 40 x 30: x @ H needs x with 40 entries, one per row of H.
    with pytest.raises(ValueError, match=r"operator has 40 rows but x has shape \(30,\)"):
        np.ones(30) @ H
    with pytest.raises(ValueError, match=r"40 rows but x has shape \(2, 30\) \(expected last dimension 40\)"):
        np.ones((2, 30)) @ H
    with pytest.raises(ValueError, match="operator has 40 rows but y"):
        H.rmatvec(np.ones(30))


@pytest.mark.parametrize("call,exc,match", [
    pytest.param(lambda H: H.matvec(np.ones((30, 2))), ValueError, "x must be 1-D",
                 id="matvec-2d"),
    pytest.param(lambda H: H.rmatvec(np.ones((40, 2))), ValueError, "y must be 1-D",
                 id="rmatvec-2d"),
    pytest.param(lambda H: H.matmat(np.ones(30)), ValueError, "X must be 2-D", id="matmat-1d"),
    pytest.param(lambda H: H.rmatmat(np.ones(40)), ValueError, "Y must be 2-D",
                 id="rmatmat-1d"),
    pytest.param(lambda H: H @ np.ones((30, 2, 2)), ValueError, "operand must be 1-D or 2-D",
                 id="matmul-3d"),
    pytest.param(lambda H: H @ np.float64(2.0), ValueError, "operand must be 1-D or 2-D",
                 id="matmul-scalar"),
    pytest.param(lambda H: H.matvec(np.full(30, np.nan)), ValueError, "x contains NaN",
                 id="matvec-nan"),
    pytest.param(lambda H: H.matvec(np.ones(30, complex)), TypeError, "x must be a real",
                 id="matvec-complex"),
    pytest.param(lambda H: H.matvec(np.array(["a"] * 30)), TypeError, "x must be a real",
                 id="matvec-str"),
    pytest.param(lambda H: H @ H, ValueError, "dimension mismatch.*operators of shapes",
                 id="matmul-hmatrix"),
])
def test_bad_operands_are_refused(H, call, exc, match):
    with pytest.raises(exc, match=match):
        call(H)


def test_estimate_error_checks_its_arguments(H):
    with pytest.raises(ValueError, match="A has shape"):
        H.estimate_error(np.ones((30, 40)))
    with pytest.raises(ValueError, match="n_probe"):
        H.estimate_error(GOOD, n_probe=0)
    with pytest.raises(ValueError, match="needs A"):
        H.estimate_error()


# ------------------------------------------------------------ kernels/points

def plain_python_kernel(x, y):
    return 1.0


def test_plain_python_kernel_is_a_type_error_naming_kernel():
    with pytest.raises(TypeError, match="kernel.*@njit|njit.*kernel"):
        HMatrix.from_kernel(plain_python_kernel, POINTS)
    with pytest.raises(TypeError, match="kernel"):
        HMatrix.from_kernel(lambda x, y: 1.0, POINTS)
    with pytest.raises(TypeError, match="kernel"):
        assemble_dense(plain_python_kernel, POINTS)


@pytest.mark.parametrize("kernel", ["laplace", 3, None])
def test_non_callable_kernel_is_a_type_error(kernel):
    with pytest.raises(TypeError, match="kernel"):
        HMatrix.from_kernel(kernel, POINTS)


def test_numba_vectorize_or_cfunc_is_not_mistaken_for_a_kernel():
    ufunc = numba.vectorize(["float64(float64)"])(lambda v: v)
    with pytest.raises(TypeError, match="kernel"):
        HMatrix.from_kernel(ufunc, POINTS)


@pytest.mark.parametrize("points,exc,match", [
    pytest.param(np.where(np.arange(150).reshape(50, 3) == 7, np.nan, 0.5), ValueError,
                 "points contains NaN", id="nan"),
    pytest.param(np.full((5, 2), np.inf), ValueError, "points contains", id="inf"),
    pytest.param(np.ones((0, 3)), ValueError, "points must not be empty", id="empty"),
    pytest.param(np.ones((5, 2, 2)), ValueError, "points must be 2-D", id="3-D"),
    pytest.param(np.ones((5, 3), complex), TypeError, "points must be real", id="complex"),
    pytest.param(scipy.sparse.csr_matrix(np.ones((5, 3))), TypeError, "points must be a dense",
                 id="sparse"),
])
def test_bad_points_are_refused(points, exc, match):
    with pytest.raises(exc, match=match):
        HMatrix.from_kernel(laplace, points)
    with pytest.raises(exc, match=match):
        ClusterTree.from_points(points)


def test_bad_col_points_are_refused_by_name():
    with pytest.raises(ValueError, match="col_points contains NaN"):
        HMatrix.from_kernel(laplace, POINTS, col_points=np.full((4, 3), np.nan))


def test_points_and_col_points_dimension_mismatch():
    with pytest.raises(ValueError, match="points and col_points"):
        HMatrix.from_kernel(laplace, POINTS, col_points=np.ones((7, 2)))
    with pytest.raises(ValueError, match="X and Y"):
        assemble_dense(laplace, POINTS, np.ones((7, 2)))
    with pytest.raises(ValueError, match="X and Y"):
        laplace(POINTS, np.ones((7, 2)))


def test_integer_points_are_converted_not_refused():
    H = HMatrix.from_kernel(laplace, np.arange(300).reshape(100, 3), tol=1e-8)
    assert H.shape == (100, 100)


def test_geometric_clustering_needs_points():
    with pytest.raises(ValueError, match="points"):
        HMatrix.from_dense(GOOD, cluster="geometric")


def test_geometric_clustering_checks_the_point_counts():
    with pytest.raises(ValueError, match="points has 50 rows"):
        HMatrix.from_dense(GOOD, cluster="geometric", points=POINTS)
    with pytest.raises(ValueError, match="col_points"):
        HMatrix.from_dense(GOOD, cluster="geometric", points=POINTS[:40])
    with pytest.raises(ValueError, match="col_points has 20 rows"):
        HMatrix.from_dense(GOOD, cluster="geometric", points=POINTS[:40],
                           col_points=POINTS[:20])


def test_cluster_tree_leaf_size_is_checked():
    with pytest.raises(ValueError, match="leaf_size"):
        ClusterTree.from_points(POINTS, leaf_size=0)
    with pytest.raises(TypeError, match="leaf_size"):
        ClusterTree.from_index(10, leaf_size=2.0)
    with pytest.raises(ValueError, match="cluster"):
        ClusterTree.from_matrix(GOOD, method="geometric")


# ---------------------------------------------------------------------------
# symmetric general H^2 arrays (hmnumba._validation.check_h2_symmetric_arrays)
# ---------------------------------------------------------------------------


def _symmetric_h2_arrays():
    """A 4 x 4 symmetric H^2 layout by hand: root [0, 4) with leaves [0, 2)
    and [2, 4) of rank 1, one coupling (1, 2) stored once and listed under
    both leaves (flipped under 2), the two diagonal near-field blocks."""
    def i(*v):
        return np.array(v, np.int64)

    return {
        "shape": (4, 4), "row_perm": np.arange(4), "row_level_ptr": i(0, 1, 3),
        "row_children": i([1, 2], [-1, -1], [-1, -1]), "row_start": i(0, 0, 2),
        "row_stop": i(4, 2, 4), "row_vp": i(0, 0, 1, 2), "row_boff": i(0, 0, 2),
        "row_basis": np.ones(4),
        "c_ptr": i(0, 0, 1, 2), "c_other": i(2, 1), "c_off": i(0, 0), "c_flip": i(0, 1),
        "c_data": np.ones(1),
        "n_ptr": i(0, 0, 1, 2), "n_other": i(1, 2), "n_off": i(0, 4), "n_flip": i(0, 0),
        "n_data": np.ones(8),
    }


def _near_field_on_the_root(a):
    a.update(n_ptr=np.array([0, 1, 2, 3]), n_other=np.array([0, 1, 2]),
             n_off=np.array([8, 0, 4]), n_flip=np.zeros(3, np.int64), n_data=np.ones(24))


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update(shape=(4, 5)), "must be square"),
    (lambda a: a["c_flip"].__setitem__(1, 0), "unflipped entry of c_ptr"),
    (lambda a: a["c_off"].__setitem__(1, 1), "c_flip must mirror exactly one"),
    (lambda a: a["n_flip"].__setitem__(0, 1), "n_flip must mirror exactly one"),
    (lambda a: a["c_flip"].__setitem__(0, -1), "c_flip must hold 0 or 1"),
    (lambda a: a.update(c_flip=np.zeros(1, np.int64)), "c_flip must be 1-D"),
    (lambda a: a["c_other"].__setitem__(0, 3), r"c_other must lie in \[0, 3\)"),
    (lambda a: a["n_off"].__setitem__(1, 3), "n_data must lie inside it"),
    (lambda a: a.update(c_data=np.zeros(0)), "c_data must lie inside it"),
    (lambda a: a["row_boff"].__setitem__(2, 1), "row_boff"),
    (_near_field_on_the_root, "near-field blocks must pair two leaves"),
    (lambda a: a["n_data"].__setitem__(7, np.inf), "n_data contains NaN"),
])
def test_symmetric_h2_arrays_are_checked(edit, match):
    from hmnumba._validation import check_h2_symmetric_arrays
    check_h2_symmetric_arrays(_symmetric_h2_arrays(), "here")
    a = _symmetric_h2_arrays()
    edit(a)
    with pytest.raises(ValueError, match="^here: .*" + match):
        check_h2_symmetric_arrays(a, "here")
