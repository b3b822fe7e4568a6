"""Helmholtz 2-D (Wang, Teng & Perdikaris 2021) with the hmnumba PINN.

``Laplace u + u = q`` on ``[-1, 1]^2``, ``u = sin(pi x) sin(4 pi y)``. The
residual's gradients are ~100x larger than the boundary loss's, so plain Adam
under-fits the boundary; this script uses the learning-rate annealing of
Wang, Teng & Perdikaris (Algorithm 1: ``w_b <- 0.1 w_b + 0.9 max|grad L_r| /
mean|grad L_b|``) during Adam, then polishes with L-BFGS at the final weights.
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
    parser.add_argument("--adam", type=int, default=2000, help="Adam steps (annealed)")
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
    h1 = train(net, problem, epochs=args.adam, optimizer="adam", lr=args.lr, anneal=True,
               decay_rate=0.9, decay_steps=1000, **data)
    w_b = h1["weights"][-1][1]
    print(f"Adam   {h1['epochs']:6d} steps  {h1['wall_time']:7.1f} s  "
          f"rel. L2 {h1['relative_l2'][-1]:.3e}  (annealed boundary weight {w_b:.1f})")
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
