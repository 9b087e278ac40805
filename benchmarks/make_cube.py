"""Write a full-size, ITS_LIVE-shaped image-pair cube (zarr v2) to benchmark whole cubes.

Default: 833 × 833 pixels × 25,000 pairs, as one ITS_LIVE tile over High Mountain Asia. The
layout and encoding are those of today's ITS_LIVE writer (see ../shared/data/README.md and the
real glacier cube there): zarr v2 with consolidated metadata; ``vx``/``vy`` int16 with
``missing_value`` -32767 (and no zarr fill value), chunks ``(mid_date: 20000, y: 10, x: 10)``
(so more than 20,000 pairs means several chunks along ``mid_date``), blosc zlib level 2 with
byte shuffle; ``mid_date`` unsorted and not unique; per-pair errors ``vx_error``/``vy_error``
and the pair dates as float64 days since 1970; a ``mapping`` grid-mapping variable.

The content is synthetic but shaped like real data:

- pairs of 6 days to 1.5 years (log-uniform, whole days), image 1 between 2014 and 2025;
- per pixel, a few percent of the pairs valid (3-15% on "glaciers", none on the empty part
  of the tile), with spatial structure: validity is drawn per pair and per 10 × 10 block (a
  scene's cloud or decorrelation patch), then thinned per pixel;
- velocity: a smooth speed field (5 to ~500 m/yr) and flow direction, a seasonal cycle
  (20% of the speed, peak in early summer) and a trend, averaged exactly over each pair's
  interval; noise of ~ 1/8 pixel displacement over the pair (so short pairs are noisy), and
  2% gross outliers.

Run ``python benchmarks/make_cube.py OUT.zarr`` (``--ny/--nx/--pairs`` for other sizes,
``--workers`` processes); it prints the time taken and the size on disk. Pixel strips are
written by worker processes, each strip a whole number of chunks, so no two writers touch one
chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FILL = -32767
EPOCH = np.datetime64("1970-01-01", "D")
START, END = np.datetime64("2014-01-01"), np.datetime64("2025-06-01")
SPACING = 120.0
X0, Y0 = 700_000.0, 3_400_000.0  # upper-left corner, UTM 46N (EPSG:32646)
CRS_WKT = (
    'PROJCS["WGS 84 / UTM zone 46N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
    '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",93],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],'
    'AUTHORITY["EPSG","32646"]]'
)


def pair_table(n_pairs: int, seed: int) -> dict[str, np.ndarray]:
    """The pairs: dates (days since 1970), errors, platforms; in an unsorted order."""
    rng = np.random.default_rng(seed)
    span = (END - START).astype(int)
    dt = np.round(np.exp(rng.uniform(np.log(6), np.log(548), n_pairs)))
    day1 = (START - EPOCH).astype(int) + rng.integers(0, span, n_pairs).astype(float)
    # Like ITS_LIVE's, many pairs share a mid_date: repeat ~3% of them exactly
    repeat = rng.random(n_pairs) < 0.03
    donors = rng.integers(0, n_pairs, repeat.sum())
    day1[repeat], dt[repeat] = day1[donors], dt[donors]
    day2 = day1 + dt
    # ~1/8 pixel (15 m) of displacement error over the pair, in m/yr, per component
    error = (15.0 / (dt / 365.25) * rng.uniform(0.7, 1.3, n_pairs)).astype("float32")
    satellite = rng.choice(np.array(["8", "9", "2A", "2B", "1A"]), n_pairs, p=[0.3, 0.15,
                           0.25, 0.25, 0.05])  # fmt: skip
    return {
        "acquisition_date_img1": day1,
        "acquisition_date_img2": day2,
        "mid_date": (day1 + day2) / 2,
        "date_dt": dt.astype("float32"),
        "vx_error": error,
        "vy_error": (error * rng.uniform(0.8, 1.2, n_pairs)).astype("float32"),
        "satellite_img1": satellite,
        "satellite_img2": satellite,
    }


def fields(ny: int, nx: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth per-pixel fields: speed, direction, validity probability (per 10 × 10 block)."""
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    ice = np.zeros((ny, nx))
    for _ in range(12):  # a dozen "glaciers": Gaussian blobs of ice
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.12)
        ice += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    ice = np.clip(ice, 0, 1)
    speed = 5 + 500 * ice**2
    direction = 2 * np.pi * (0.3 * yy + 0.2 * xx) + rng.uniform(0, 2 * np.pi)
    # 3-15% of pairs valid where there is ice or rock; the lower-right quarter of the tile has
    # no data at all (say, outside the satellites' footprints)
    probability = 0.03 + 0.12 * ice
    probability[yy > 0.75 * yy.max()] *= (xx[yy > 0.75 * yy.max()] < 0.5).astype(float)
    return {"speed": speed, "direction": direction, "probability": probability}


def _interval_mean_sine(t1: np.ndarray, t2: np.ndarray, phase: float) -> np.ndarray:
    """Mean of sin(2π(t - phase)) over [t1, t2] (years)."""
    w = 2 * np.pi
    return (np.cos(w * (t1 - phase)) - np.cos(w * (t2 - phase))) / (w * (t2 - t1))


def write_strip(path: str, y0: int, y1: int, pairs: dict, seed: int, chunk: int) -> int:
    """Fill rows ``y0:y1`` of ``vx`` and ``vy`` (all pairs, all x); return the valid count."""
    import zarr

    n_pairs = pairs["mid_date"].size
    with np.load(Path(path) / ".fields.npz") as saved:
        f = {k: saved[k][y0:y1] for k in saved.files}
    ny, nx = f["speed"].shape
    rng = np.random.default_rng([seed, y0])
    t1 = pairs["acquisition_date_img1"] / 365.25
    t2 = pairs["acquisition_date_img2"] / 365.25
    season = _interval_mean_sine(t1, t2, 0.3)  # peak at ~0.55 yr (July)
    trend = (t1 + t2) / 2 - (2020 - 1970)
    # validity: per pair and 10 × 10 block, then 90% of a valid block's pixels
    by, bx = -(-ny // chunk), -(-nx // chunk)
    block_p = np.pad(f["probability"], ((0, by * chunk - ny), (0, bx * chunk - nx)), mode="edge")
    block_p = block_p.reshape(by, chunk, bx, chunk).mean(axis=(1, 3))
    u = rng.random((n_pairs, by, bx), dtype=np.float32)
    in_block = (u < block_p / 0.9)[:, :, None, :, None]
    in_block = np.broadcast_to(in_block, (n_pairs, by, chunk, bx, chunk))
    valid = in_block.reshape(n_pairs, by * chunk, bx * chunk)[:, :ny, :nx].copy()
    hits = np.flatnonzero(valid)
    keep = rng.random(hits.size, dtype=np.float32) < 0.9
    valid.reshape(-1)[hits[~keep]] = False
    hits = hits[keep]
    i_pair, pixel = np.divmod(hits, ny * nx)
    speed = f["speed"].reshape(-1)[pixel]
    direction = f["direction"].reshape(-1)[pixel]
    magnitude = speed * (1 + 0.2 * season[i_pair]) + 0.02 * speed * trend[i_pair]
    for name, comp, err in (("vx", np.cos, "vx_error"), ("vy", np.sin, "vy_error")):
        value = magnitude * comp(direction)
        value += rng.standard_normal(hits.size) * pairs[err][i_pair]
        outlier = rng.random(hits.size) < 0.02
        value[outlier] += rng.uniform(-300, 300, outlier.sum())
        out = np.full((n_pairs, ny, nx), FILL, dtype=np.int16)
        out.reshape(-1)[hits] = np.clip(np.round(value), -32000, 32000).astype(np.int16)
        array = zarr.open_array(str(Path(path) / name), mode="r+")
        array[:, y0:y1, :] = out
    return int(hits.size)


def write_template(path: Path, ny: int, nx: int, pairs: dict, chunk_pairs: int, chunk: int):
    """Metadata, coordinates and the per-pair variables (the 3-D arrays stay unwritten)."""
    import dask.array as da
    import numcodecs
    import xarray as xr

    n_pairs = pairs["mid_date"].size
    x = X0 + SPACING / 2 + SPACING * np.arange(nx)
    y = Y0 - SPACING / 2 - SPACING * np.arange(ny)
    days = {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"}
    ds = xr.Dataset(
        coords={
            "mid_date": ("mid_date", pairs["mid_date"], dict(days, description="pair centre")),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
        }
    )
    for name in ("acquisition_date_img1", "acquisition_date_img2"):
        ds[name] = ("mid_date", pairs[name], dict(days, description=name.replace("_", " ")))
    ds["date_dt"] = ("mid_date", pairs["date_dt"], {"units": "days"})
    for name in ("vx_error", "vy_error"):
        ds[name] = ("mid_date", pairs[name], {"units": "meter/year"})
    for name in ("satellite_img1", "satellite_img2"):
        ds[name] = ("mid_date", pairs[name].astype("<U2"))
    ds["mapping"] = ((), 0, {
        "grid_mapping_name": "universal_transverse_mercator", "spatial_epsg": 32646,
        "crs_wkt": CRS_WKT,
        "GeoTransform": f"{X0} {SPACING} 0.0 {Y0} 0.0 {-SPACING}",
    })  # fmt: skip
    empty = da.zeros((n_pairs, ny, nx), dtype="int16", chunks=(chunk_pairs, chunk, chunk))
    for name, what in (("vx", "x"), ("vy", "y")):
        ds[name] = (("mid_date", "y", "x"), empty, {
            "description": f"velocity component in {what} direction", "units": "meter/year",
            "grid_mapping": "mapping", "missing_value": FILL,
            "standard_name": f"land_ice_surface_{what}_velocity",
        })  # fmt: skip
    compressor = numcodecs.Blosc(cname="zlib", clevel=2, shuffle=numcodecs.Blosc.SHUFFLE)
    encoding = {
        name: {"chunks": (chunk_pairs, chunk, chunk), "compressors": (compressor,),
               "_FillValue": None}
        for name in ("vx", "vy")
    }  # fmt: skip
    for name in ("mid_date", "acquisition_date_img1", "acquisition_date_img2"):
        encoding[name] = {"dtype": "float64", "chunks": (min(chunk_pairs, n_pairs),)}
    ds.attrs = {"title": "ITS_LIVE-shaped synthetic datacube (xr_itslive benchmarks)",
                "projection": "32646", "synthetic": json.dumps({"pairs": n_pairs})}  # fmt: skip
    ds.to_zarr(path, mode="w", compute=False, zarr_format=2, consolidated=True,
               encoding=encoding)  # fmt: skip


def make_cube(
    out: str | os.PathLike,
    ny: int = 833,
    nx: int = 833,
    n_pairs: int = 25_000,
    chunk_pairs: int = 20_000,
    chunk: int = 10,
    workers: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Write the cube at ``out``; return what it took (seconds, bytes, valid fraction)."""
    path = Path(out)
    if path.exists():
        shutil.rmtree(path)
    started = time.perf_counter()
    pairs = pair_table(n_pairs, seed)
    write_template(path, ny, nx, pairs, chunk_pairs, chunk)
    np.savez(path / ".fields.npz", **fields(ny, nx, seed))
    # strips of whole chunk rows, small enough that a worker holds ~0.5 GB per variable
    rows = max(chunk, (2**28 // max(1, n_pairs * nx * 2)) // chunk * chunk)
    starts = range(0, ny, rows)
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(write_strip, str(path), y0, min(ny, y0 + rows), pairs, seed, chunk)
                for y0 in starts]  # fmt: skip
        valid = sum(job.result() for job in jobs)
    (path / ".fields.npz").unlink()
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"seconds": seconds, "bytes": size, "valid_fraction": valid / (n_pairs * ny * nx)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the zarr store to write (replaced if present)")
    parser.add_argument("--ny", type=int, default=833)
    parser.add_argument("--nx", type=int, default=833)
    parser.add_argument("--pairs", type=int, default=25_000)
    parser.add_argument("--chunk-pairs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=10, help="spatial chunk (10 today)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    made = make_cube(args.out, args.ny, args.nx, args.pairs, args.chunk_pairs, args.chunk,
                     args.workers, args.seed)  # fmt: skip
    cells = args.pairs * args.ny * args.nx
    print(f"cube: {args.pairs:,} pairs x {args.ny} x {args.nx} ({cells / 1e9:.2f} G values per "
          f"variable), chunks ({args.chunk_pairs}, {args.chunk}, {args.chunk})")  # fmt: skip
    print(f"valid: {made['valid_fraction']:.2%} of pair-pixels")
    print(f"written in {made['seconds']:.1f} s with {args.workers} worker(s); "
          f"{made['bytes'] / 2**30:.2f} GiB on disk "
          f"(decoded vx + vy as float32: {2 * cells * 4 / 2**30:.0f} GiB)")  # fmt: skip


if __name__ == "__main__":
    main()
