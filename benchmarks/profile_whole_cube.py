"""Where the numba engine's time goes, per primitive, on pixels of a whole-cube-shaped cube.

Loads a window of pixels of a cube made by ``benchmarks/make_cube.py`` into memory (vx and
its error), then solves them with :func:`xr_itslive.workflows.invert.solve_block` on one
thread, as one task of ``xr-itslive invert CUBE --weights error --robust tukey --step 12``
would, with every primitive of the numba engine timed: the steps called from Python
(``steps="pipeline"``); a whole cube's tasks run the same primitives in one compiled kernel
(``_solve_range``), which cannot be timed step by step. Prints seconds and share per
primitive, pixels per second, and the sizes the work scales with: the pairs of each pixel
and the rows of each block of 16 pixels (the union of the pairs valid in any of them).

Run::

    python benchmarks/make_cube.py /tmp/c16.zarr --ny 208 --nx 208 --pairs 25000
    python benchmarks/profile_whole_cube.py --cube /tmp/c16.zarr [--pixels 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout


class Timers:
    """Wall time per name, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name, func):
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[name] += time.thread_time() - started
                self.calls[name] += 1

        return timed


def instrument(timers: Timers) -> list:
    """Time the module-level kernels and the ops methods of the numba engine in place;
    returns what to restore."""
    from xr_itslive.kernels import compiled

    saved = []
    for name in ("_load_block",):
        if hasattr(compiled, name):
            saved.append((compiled, name, getattr(compiled, name)))
            setattr(compiled, name, timers.wrap(name.strip("_"), getattr(compiled, name)))
    for name in (
        "start_block", "assemble", "assemble_factor", "factor", "solve", "predict",
        "reweight", "reweight_fit", "selected_inverse", "penalty_trace", "weighted_rss",
    ):  # fmt: skip
        if hasattr(compiled.CompiledOps, name):
            method = getattr(compiled.CompiledOps, name)
            saved.append((compiled.CompiledOps, name, method))
            setattr(compiled.CompiledOps, name, timers.wrap(name, method))
    run = compiled.run_pipeline
    saved.append((compiled, "run_pipeline", run))
    compiled.run_pipeline = timers.wrap("pipeline (all)", run)
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=Path, required=True)
    parser.add_argument("--pixels", type=int, default=2000, help="about this many pixels")
    parser.add_argument("--y0", type=int, default=60)
    parser.add_argument("--x0", type=int, default=60)
    parser.add_argument("--variable", default="vx")
    parser.add_argument("--uncertainty", action="store_true")
    parser.add_argument("--chunk", type=int, default=10, help="pixels a side per solve_block")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs (the best is shown)")
    args = parser.parse_args(argv)

    import xr_itslive
    from xr_itslive.kernels.pipeline import Options
    from xr_itslive.workflows import common
    from xr_itslive.workflows import invert as winv

    side = int(round(args.pixels**0.5))
    name = args.variable
    cube = xr_itslive.open_cube(args.cube, variables=[name, f"{name}_error"])
    cube = cube.isel(y=slice(args.y0, args.y0 + side), x=slice(args.x0, args.x0 + side))
    started = time.thread_time()
    cube = common.drop_duplicated_pairs(cube)[0].compute()
    print(f"loaded {side} x {side} pixels x {cube.sizes['mid_date']:,} pairs "
          f"in {time.thread_time() - started:.1f} s")  # fmt: skip
    problem = winv.build_problem(cube, step=12.0)
    kept = np.flatnonzero(problem.geometry.kept)
    cube = cube.isel(mid_date=kept) if kept.size < cube.sizes["mid_date"] else cube
    weights = common.resolve_weights(cube, name, "error")
    # as apply_ufunc hands them to the kernel: (y, x, mid_date) views of (mid_date, y, x)
    values = cube[name].transpose("y", "x", "mid_date").data
    w = weights.broadcast_like(cube[name]).transpose("y", "x", "mid_date").data
    if weights.ndim == 1:
        w = weights.data
    options = Options(min_obs=5, lams=(10.0,), robust="tukey", iterations=2,
                      uncertainty=args.uncertainty)  # fmt: skip

    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat)
    own = valid.sum(axis=1)
    solved = own >= options.min_obs
    if not solved.any():
        raise SystemExit("no pixel of this window has enough pairs; pick another --y0/--x0")
    print(f"cells {problem.n_cells}, band {problem.bandwidth}; pixels solved "
          f"{solved.sum():,} of {flat.shape[0]:,}; pairs per solved pixel: mean "
          f"{own[solved].mean():,.0f} ({own[solved].mean() / flat.shape[1]:.1%})")  # fmt: skip
    idx = np.flatnonzero(solved)
    unions = [valid[idx[i : i + 16]].any(axis=0).sum() for i in range(0, idx.size, 16)]
    means = [own[idx[i : i + 16]].mean() for i in range(0, idx.size, 16)]
    print(f"rows per block of 16 (the union of their pairs): mean {np.mean(unions):,.0f} = "
          f"{np.mean(unions) / np.mean(means):.2f}x the pairs of a pixel")  # fmt: skip

    # one call per chunk of the store (10 x 10 in ITS_LIVE cubes), each chunk its own
    # (mid_date, y, x) array seen as (y, x, mid_date), as the CLI's tasks get them
    c = args.chunk
    stored = cube[name].data
    chunks = [
        (np.ascontiguousarray(stored[:, y0 : y0 + c, x0 : x0 + c]).transpose(1, 2, 0),
         w if w.ndim == 1 else np.ascontiguousarray(w[y0 : y0 + c, x0 : x0 + c]))
        for y0 in range(0, side, c)
        for x0 in range(0, side, c)
    ]  # fmt: skip

    def solve_all() -> None:
        for chunk, chunk_w in chunks:
            winv.solve_block(chunk, None, problem, options, engine="numba", weights=chunk_w)

    solve_all()  # compile
    best = None
    for _ in range(args.repeat):
        timers = Timers()
        saved = instrument(timers)
        try:
            started = time.thread_time()
            solve_all()
            total = time.thread_time() - started
        finally:
            for owner, attr, value in reversed(saved):
                setattr(owner, attr, value)
        if best is None or total < best[0]:
            best = (total, timers)
    total, timers = best
    n = int(solved.sum())
    print(f"\nsolve_block: {total:.3f} s of CPU, {n / total:,.0f} solved px/s (one thread)")
    print(f"{'primitive':<18}{'calls':>8}{'seconds':>10}{'share':>8}{'us/pixel':>10}")
    for key, seconds in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        print(f"{key:<18}{timers.calls[key]:>8}{seconds:>10.3f}{seconds / total:>8.1%}"
              f"{1e6 * seconds / n:>10.1f}")  # fmt: skip
    inside = sum(v for k, v in timers.seconds.items() if k != "pipeline (all)")
    print(f"{'outside these':<18}{'':>8}{total - inside:>10.3f}{(total - inside) / total:>8.1%}")


if __name__ == "__main__":
    main()
