"""Run the registered experiments and write figures, ``results.json`` and ``report.md``."""
import time
import warnings
from pathlib import Path

from hmnumba.exceptions import CompressionWarning
from hmnumba.experiments._context import Config, Context, limited_threads


def reproduce(out_dir, quick=True, problem=None, seed=0, progress=True, command=None,
              experiments=None, figures=None):
    """Reproduce the paper's results into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Created if needed; receives ``report.md``, ``results.json`` and one
        PNG per experiment.
    quick : bool, default=True
        :meth:`Config.quick` (a few minutes on 2 cores) or :meth:`Config.full`.
    problem : str, optional
        One of :data:`hmnumba.experiments.PROBLEMS`; the profile's default
        (Poisson 1-D quick, Poisson 2-D full) if None.
    seed : int, default=0
    progress : bool, default=True
        Print what runs; a tqdm bar over the experiments in the full run
        (if tqdm is installed).
    command : str, optional
        The command line recorded in the report.
    experiments : list of str, optional
        Names from :data:`hmnumba.experiments.REGISTRY` (default: all of them).
    figures : bool or None, default=None
        Draw the PNGs: None draws them when matplotlib (the ``plot`` extra)
        is installed and otherwise says so and writes the report and the
        JSON without them; True requires matplotlib; False never draws.

    Returns
    -------
    dict
        What ``results.json`` holds.

    Raises
    ------
    ValueError
        For an unknown problem or experiment name, or a bad seed.
    ImportError
        If ``figures=True`` and matplotlib (the ``plot`` extra) is missing.

    Both are raised before any work is done or any file is written.

    Examples
    --------
    The quick profile takes about a minute on 2 cores:

    >>> import tempfile
    >>> from hmnumba.experiments import reproduce
    >>> with tempfile.TemporaryDirectory() as out:                    # doctest: +SKIP
    ...     data = reproduce(out, quick=True, progress=False)
    ...     print(data["results"]["tradeoff"]["verdict"]["sentence"])
    Keeping relative L2 <= 1.0e-02 (dense: ...), the H-matrix reaches compression ratio ...

    Arguments are checked first:

    >>> reproduce("out", problem="wave3d")                   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: problem must be one of ...; got 'wave3d'
    """
    from hmnumba import _validation as val
    from hmnumba.experiments import report
    from hmnumba.experiments.registry import REGISTRY
    from hmnumba.experiments._plot import pyplot

    seed = val.check_random_state(seed)
    names = list(REGISTRY) if experiments is None else list(experiments)
    for name in names:
        val.check_choice(name, "experiments", tuple(REGISTRY))
    config = Config.quick(problem, seed) if quick else Config.full(problem, seed)
    say = print if progress else (lambda message: None)
    draw, skipped = figures is not False, None
    if draw:
        try:
            pyplot()
        except ImportError as exc:
            if figures:
                raise
            draw, skipped = False, str(exc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        say(f"no figures: {skipped}")
    ctx = Context(config, progress=say, bars=progress and not quick)
    bar = None
    if progress and not quick:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(names) + 1, desc="hmnumba reproduce", unit="step")
        except ImportError:
            bar = None
    results = {}
    t0 = time.perf_counter()
    try:
        # The sweeps go on purpose to settings that store more than dense (the
        # report gives every ratio): no CompressionWarning for each of them.
        with limited_threads(config.threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", CompressionWarning)
            ctx.train()
            if bar is not None:
                bar.update(1)
            say(f"  trained in {ctx.train_seconds:.1f} s: relative L2 "
                f"{ctx.history['relative_l2'][-1]:.2e}")
            for name in names:
                module = REGISTRY[name]
                say(f"[{name}] {module.TITLE}")
                t = time.perf_counter()
                result = module.run(ctx)
                result["seconds"] = time.perf_counter() - t
                result["figure"] = module.FIGURE if draw else None
                if draw:
                    module.plot(result, out / module.FIGURE)
                result["verdict"] = module.verdict(result)
                say(f"  {result['verdict']['sentence']}")
                results[name] = result
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    data = report.write(out, ctx, results, wall_time=time.perf_counter() - t0,
                        command=command)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'} and "
        f"{len(results) if draw else 'no'} figures in {data['wall_time']:.1f} s")
    return data
