"""Helmholtz 2-D (Wang, Teng & Perdikaris 2021) with the hmnumba PINN.

``Laplace u + u = q`` on ``[-1, 1]^2``, ``u = sin(pi x) sin(4 pi y)``. The
residual's gradients are ~100x larger than the boundary loss's, so with equal
weights the boundary is under-fitted. Default: a few hundred Adam steps, then
L-BFGS, with the boundary weight fixed at ``w_b = 100``. ``--anneal`` instead
adapts ``w_b`` during Adam by the learning-rate annealing of Wang, Teng &
Perdikaris (2021, Algorithm 1: ``w_b <- 0.1 w_b + 0.9 max|grad L_r| /
mean|grad L_b|``), and L-BFGS continues at the annealed weight.

Measured (this machine, shared by several jobs; see the issue-6 report):
with annealing, 2000 Adam steps left the relative L2 at 1.0 (u ~ 0: the zero
boundary data is fitted first, ``mean|grad L_b|`` then shrinks and ``w_b``
grows without bound, 6e3 in one run, 6e6 in another); the 3000 L-BFGS
iterations that followed reached 9.1e-3 in the first run and stalled in the
second. The default below avoids that feedback: ``python
examples/helmholtz2d.py`` gave relative L2 7.19e-3 after 500 Adam steps
(L2 0.77) and 3000 L-BFGS iterations, 458 s wall (73 s of CPU: the 2 cores
were shared with ~10 other processes), width 50, 3 hidden layers, 2000
collocation and 400 boundary points, one thread.

Optionally (``--compress TOL``) the trained network's hidden layers are
H-matrix compressed and fine-tuned with periodic re-compression.

Run::

    python examples/helmholtz2d.py                  # defaults below
    python examples/helmholtz2d.py --adam 1000 --lbfgs 1000 --width 32
"""
import argparse
import time

from hmnumba.pinn import PINN, Helmholtz2D, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--depth", type=int, default=3, help="hidden layers")
    parser.add_argument("--adam", type=int, default=500, help="Adam steps")
    parser.add_argument("--anneal", action="store_true",
                        help="learning-rate annealing of the boundary weight during Adam")
    parser.add_argument("--boundary-weight", type=float, default=100.0,
                        help="w_b of the loss (the start value when annealing)")
    parser.add_argument("--lbfgs", type=int, default=3000, help="L-BFGS iterations")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--collocation", type=int, default=2000)
    parser.add_argument("--boundary", type=int, default=400)
    parser.add_argument("--compress", type=float, default=None,
                        help="H-matrix tolerance for an optional compression step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="numba threads (1 is fastest for these small products on a "
                             "busy machine)")
    args = parser.parse_args(argv)

    problem = Helmholtz2D(a1=1, a2=4, k=1)
    net = PINN([2] + [args.width] * args.depth + [1], random_state=args.seed)
    data = dict(n_collocation=args.collocation, n_boundary=args.boundary,
                n_jobs=args.n_jobs, random_state=args.seed)
    t0 = time.perf_counter()
    h1 = train(net, problem, epochs=args.adam, optimizer="adam", lr=args.lr,
               weights=(1.0, args.boundary_weight), anneal=args.anneal, decay_rate=0.9,
               decay_steps=1000, **data)
    w_b = h1["weights"][-1][1]
    print(f"Adam   {h1['epochs']:6d} steps  {h1['wall_time']:7.1f} s  "
          f"rel. L2 {h1['relative_l2'][-1]:.3e}  (boundary weight {w_b:.1f})")
    h2 = train(net, problem, epochs=args.lbfgs, optimizer="lbfgs", weights=(1.0, w_b), **data)
    print(f"L-BFGS {h2['epochs']:6d} iters  {h2['wall_time']:7.1f} s  "
          f"rel. L2 {h2['relative_l2'][-1]:.3e}")
    total = time.perf_counter() - t0
    print(f"total  {h1['epochs'] + h2['epochs']:6d} epochs {total:7.1f} s  "
          f"relative L2 {problem.relative_l2(net):.3e}")
    if args.compress:
        small = net.compress("hmatrix", tol=args.compress, random_state=args.seed)
        print(f"compressed at tol {args.compress:g}: hidden bytes {net.hidden_nbytes} -> "
              f"{small.hidden_nbytes}, relative L2 {problem.relative_l2(small):.3e}")
        h3 = train(small, problem, epochs=200, optimizer="lbfgs", weights=(1.0, w_b),
                   recompress_every=50, tol=args.compress, **data)
        print(f"fine-tuned with re-compression every 50: relative L2 "
              f"{h3['relative_l2'][-1]:.3e}, bounds "
              f"{[max(r['error_bounds']) for r in h3['recompress']]}, hidden bytes "
              f"{small.hidden_nbytes}")
    return net


if __name__ == "__main__":
    main()
