"""Warm point query: today's STAC API vs the GeoJSON catalog, side by side.

The STAC API is the real server the tests use (``rustac serve`` on 127.0.0.1, started here),
holding the real catalog's 3,086 cubes as today's STAC items; the GeoJSON catalog is the same
``catalog_v02.json``, read once and indexed. Both are warm: the STAC client is open (landing
page and collection read) and the GeoJSON catalog is loaded before timing. Each query is
``find_cubes(point=..., catalog=...)`` at a point drawn near the glacier cube and its UTM-zone
seam; the medians of ``--queries`` queries (default 50) are printed, with the machine.

Usage: ``python benchmarks/bench_find_cubes.py [--queries 50]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # the STAC server of the tests (conftest)

from conftest import ITSLIVE_DATA, start_stac_server, write_stac_files  # noqa: E402

from xr_itslive.io.catalog import find_cubes, load_catalog  # noqa: E402


def _machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    processor = platform.processor() or platform.machine()
    return (
        f"{platform.node()} ({platform.system()} {platform.release()}, {processor}, "
        f"{usable} usable of {cores} cores), Python {platform.python_version()}"
    )


def _median_ms(catalog, points) -> float:
    times = []
    for lon, lat in points:
        start = time.perf_counter()
        find_cubes(point=(lon, lat), catalog=catalog)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run(queries: int = 50, seed: int = 0) -> dict:
    """Start the STAC server, time ``queries`` warm point queries on each catalog.

    Parameters
    ----------
    queries : int, optional
        Point queries per catalog (the same points for both).
    seed : int, optional
        Seed of the query points.

    Returns
    -------
    dict
        ``stac_median_ms``, ``geojson_median_ms``, ``ratio``, ``queries``, ``machine`` and
        ``same_cubes`` (both catalogs gave the same cubes at every point).
    """
    rng = np.random.default_rng(seed)
    # around the glacier (95.97 E, 29.915 N), astride the seam of UTM zones 46 and 47
    points = np.column_stack([rng.uniform(95.6, 96.4, queries), rng.uniform(29.6, 30.3, queries)])
    with tempfile.TemporaryDirectory(prefix="bench_stac_") as folder:
        hrefs = write_stac_files(Path(folder))
        process, url = start_stac_server(hrefs, Path(folder) / "rustac.log")
        try:
            stac = load_catalog(url)
            geojson = load_catalog(ITSLIVE_DATA / "catalog_v02.json")
            same = all(
                [e.name for e in find_cubes(point=tuple(p), catalog=stac)]
                == [e.name for e in find_cubes(point=tuple(p), catalog=geojson)]
                for p in points[:10]
            )  # also the warm-up of both
            stac_ms = _median_ms(stac, points)
            geojson_ms = _median_ms(geojson, points)
        finally:
            process.terminate()
            process.wait(timeout=10)
    return {
        "stac_median_ms": stac_ms,
        "geojson_median_ms": geojson_ms,
        "ratio": stac_ms / geojson_ms,
        "queries": queries,
        "machine": _machine(),
        "same_cubes": same,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50, help="point queries per catalog")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = run(args.queries, args.seed)
    print(f"machine: {figures['machine']}")
    print(f"warm find_cubes(point=...), median of {figures['queries']} queries each:")
    print(f"  STAC API (rustac serve, 127.0.0.1): {figures['stac_median_ms']:8.3f} ms")
    print(f"  GeoJSON catalog (in memory):        {figures['geojson_median_ms']:8.3f} ms")
    print(f"  STAC / GeoJSON: {figures['ratio']:.1f}x; same cubes: {figures['same_cubes']}")


if __name__ == "__main__":
    main()
