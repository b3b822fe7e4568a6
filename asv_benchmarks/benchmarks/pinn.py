"""PINN benchmarks: one training step and one inference batch, dense beside
H-matrix layers, in one class (``layers`` parameter).

The network is ``[2, 256, 256, 256, 256, 1]`` (width 256, 4 hidden layers,
tanh) whose three hidden-to-hidden weights start at rank 16
(``PINN(init_rank=16)``, Glorot variance); the ``"hmatrix"`` network is its
compression at ``tol = 1e-4`` (``PINN.compress("hmatrix")``), so both apply the
same operators to 1e-4. A full-rank Glorot weight does not compress at that
tolerance (the H-matrix would be one dense block), which would time nothing
of interest.

* ``time_train_step``: loss and exact parameter gradient of the Poisson 2-D
  PDE loss (second derivatives included) on 1024 collocation + 256 boundary
  points, then one Adam update;
* ``time_inference``: ``u`` at 4096 points;
* ``track_hidden_nbytes``: bytes of the hidden-to-hidden weights.

Measured by hand (``setup`` then ``common.median_time(..., repeats=7)`` of
each ``time_`` method, ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1``, on the
2-core machine at load average 11-14 from other jobs, so absolute figures
are inflated and noisy; two runs):

==========  =====================  ====================  =================
layers      train step             inference (4096)      hidden bytes
==========  =====================  ====================  =================
dense       370 / 497 ms           74 / 120 ms           1,572,864
hmatrix     289 / 315 ms           79 / 120 ms           209,424 (7.5x)
==========  =====================  ====================  =================

The H-matrix layers are one rank-16 block each (``tol = 1e-4``), so their
products do 1/8 of the dense flops; inference is dominated by the
activations (``tanh`` of 4 x 256 x 4096 values) and ties. With numba's two
threads and OpenBLAS's default threading under that load both were 3-6x
slower (oversubscription), e.g. train step 2.3 s dense / 1.8 s hmatrix.
"""
from functools import lru_cache

import numpy as np

from hmnumba.pinn import Adam, PINN, Poisson2D

SIZES = [2, 256, 256, 256, 256, 1]
TOL = 1e-4
N_COLLOCATION, N_BOUNDARY, N_INFERENCE = 1024, 256, 4096


@lru_cache(maxsize=None)
def network(kind):
    """The benchmark network (memoised: asv re-runs setup before each call)."""
    net = PINN(SIZES, init_rank=16, random_state=0)
    if kind == "hmatrix":
        net = net.compress("hmatrix", tol=TOL, random_state=0)
    return net


@lru_cache(maxsize=None)
def data():
    problem = Poisson2D()
    x_r = problem.sample_collocation(N_COLLOCATION, random_state=0)
    x_b, g_b = problem.sample_boundary(N_BOUNDARY, random_state=1)
    x_test = np.random.default_rng(2).random((N_INFERENCE, 2))
    return problem, x_r, x_b, g_b, x_test


class PINNTraining:
    """Dense and H-matrix hidden layers, same network, same data."""

    params = [["dense", "hmatrix"]]
    param_names = ["layers"]
    timeout = 600

    def setup(self, kind):
        self.net = network(kind)
        self.problem, self.x_r, self.x_b, self.g_b, self.x_test = data()
        self.opt = Adam(lr=1e-12)   # keep the memoised network (practically) unchanged
        self.theta = self.net.get_params()
        self.time_train_step(kind)   # JIT warm-up out of the timings
        self.time_inference(kind)

    def time_train_step(self, kind):
        _, g = self.net.loss(self.problem, self.x_r, self.x_b, self.g_b)
        self.net.set_params(self.opt.step(self.theta, g))

    def time_inference(self, kind):
        self.net.predict(self.x_test)

    def track_hidden_nbytes(self, kind):
        return self.net.hidden_nbytes

    track_hidden_nbytes.unit = "bytes"

    def track_max_output_difference(self, kind):
        # |u_kind - u_dense| at the inference points, relative to max |u_dense|
        ref = network("dense").predict(self.x_test)
        return float(np.abs(self.net.predict(self.x_test) - ref).max() / np.abs(ref).max())

    track_max_output_difference.unit = "relative"
