"""What the reliability checks add: the missing-chunk check at open, and a store's input identity.

On the real glacier cube (47,892 pairs × 37 × 40, tile N30E090, local disk):

1. ``open_store`` of the cube for ``vx`` and ``vy`` with the missing-chunk check
   (``complete=[...]``: one listing per checked array, :func:`xr_itslive.io.faults.
   check_chunks_present`) and without it (``complete=None``), and with the check over every
   data variable (``complete=True``);
2. :func:`xr_itslive.workflows.common.input_identity` of the opened cube for ``vx`` and
   ``vy`` (dask tokens, the consolidated metadata, a stat per chunk file), what every resumable
   write records and compares.

The median of ``--repeat`` runs of each (after one unmeasured run), with the machine.

Run: ``python benchmarks/bench_store_checks.py [--repeat 7] [--cube PATH]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

DEFAULT_CUBE = REPO.parent / "shared" / "data" / "itslive" / "N30E090_glacier_cube.zarr"
VARIABLES = ["vx", "vy"]


def median_seconds(func, repeat: int) -> float:
    """The median wall time of ``repeat`` calls of ``func``, after one unmeasured call."""
    func()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(cube_path: Path, repeat: int) -> dict[str, float]:
    """The figures, in seconds: ``open``, ``open_checked``, ``open_checked_all``, ``identity``."""
    from xr_itslive.io.cube import open_store
    from xr_itslive.workflows.common import input_identity

    source = str(cube_path)
    figures = {
        "open": median_seconds(lambda: open_store(source, None, {}, complete=None), repeat),
        "open_checked": median_seconds(
            lambda: open_store(source, None, {}, complete=VARIABLES), repeat
        ),
        "open_checked_all": median_seconds(
            lambda: open_store(source, None, {}, complete=True), repeat
        ),
    }
    cube = open_store(source, None, {}, complete=VARIABLES)
    figures["identity"] = median_seconds(lambda: input_identity(cube, VARIABLES), repeat)
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=Path, default=DEFAULT_CUBE)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the cube's own chunking warnings are not the point here
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {platform.platform()}")
    print(f"cube: {args.cube} (local disk); median of {args.repeat} runs each")
    figures = run(args.cube, args.repeat)
    ms = {name: 1000 * value for name, value in figures.items()}
    print(f"open for vx, vy without the missing-chunk check:   {ms['open']:8.1f} ms")
    print(
        f"open for vx, vy with the check:                     {ms['open_checked']:8.1f} ms "
        f"(+{ms['open_checked'] - ms['open']:.1f} ms)"
    )
    print(
        f"open with the check over every data variable:       {ms['open_checked_all']:8.1f} ms "
        f"(+{ms['open_checked_all'] - ms['open']:.1f} ms)"
    )
    print(f"input_identity(cube, ['vx', 'vy']):                 {ms['identity']:8.1f} ms")
    return figures


if __name__ == "__main__":
    main()
