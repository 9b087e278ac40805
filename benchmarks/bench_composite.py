"""Annual composites of the real glacier cube: time against reading it and against a per-pixel
``np.linalg.lstsq`` loop, the robust fit against ITS_LIVE's moving-median filter, and the
recovery of known amplitudes, phases, trends and annual means on a synthetic cube.

1. **Real cube** (47,892 pairs × 37 × 40, tile N30E090, opened with ``open_cube``): the time
   to read ``vx``, ``vy`` and their errors (``dask.compute`` of the decoded arrays), against
   :func:`xr_itslive.composite` of both components (error weights, Tukey IRLS, computed end
   to end from disk on the threaded scheduler), the fastest of ``--repeat`` runs each, the
   numba kernels compiled beforehand.
2. **Per-pixel loop**: the same model fitted pixel by pixel with ``np.linalg.lstsq`` (dense
   rows, the climatology fit redone, as the production code does; one BLAS thread), on
   ``--loop-pixels`` pixels with data, its time extrapolated to every pixel with data and
   both components, against :func:`xr_itslive.composite` of the cube already in memory
   (neither reads). Its annual means and amplitudes are compared with ``composite`` without
   outlier rejection nor year pruning (the same problem: they agree to float32 round-off).
3. **Robust fits compared**: ``composite(robust=True)`` (Tukey IRLS) against the production
   code's filter (15-point moving median of the velocities sorted by mid-date, residuals
   beyond ``2 × 6 × 1.4826 × MAD`` dropped) followed by the same least squares, on the
   loop's pixels of the real cube.
4. **Synthetic recovery**: a cube whose truth is the model (annual means on a line, one
   sinusoid per component), noise drawn from the pairs' errors and, optionally, gross
   outliers: the errors of the amplitude, phase, trend and annual means, for the robust
   fit, the plain fit and the production filter.

Run: ``python benchmarks/bench_composite.py [--repeat 3] [--loop-pixels 40] [--tiny]``
(``--tiny``: a small synthetic cube instead of the real one, for the test suite).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import dask
import numpy as np
import xarray as xr

import xr_itslive
from xr_itslive.workflows.composite import decimal_years

CUBE = Path(__file__).resolve().parents[2] / "shared/data/itslive/N30E090_glacier_cube.zarr"
TWO_PI = 2 * np.pi


# --------------------------------------------------------------------------- a known truth


def exact_cube(
    n_pairs: int = 4000,
    ny: int = 4,
    nx: int = 5,
    first_year: int = 2013,
    n_years: int = 12,
    noise: float = 3.0,
    gap_fraction: float = 0.2,
    outlier_fraction: float = 0.0,
    max_days: float = 400.0,
    seed: int = 0,
    chunks: dict | None = None,
) -> xr.Dataset:
    """An ITS_LIVE-shaped cube whose truth is the composite's model.

    Per pixel and component: annual means on a line ``m0 + slope (t - centre)`` (each year's
    mean at its middle; centre = the middle of the years) plus ``amp cos 2π(t - phase /
    365.25)``. Each pair observes the exact mean of that over its interval plus Gaussian
    noise of its error (``vx_error``, 0.5 to 2 × ``noise``); ``gap_fraction`` of the
    observations are missing, ``outlier_fraction`` are off by ±50..300 m/yr.

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy`` (mid_date, y, x), ``vx_error``, ``vy_error``, the pair dates, and the
        truth: ``<c>_true_m0``, ``<c>_true_slope``, ``<c>_true_amp``, ``<c>_true_phase``
        (y, x) and ``<c>_true_annual`` (year, y, x); ``attrs["center"]`` (decimal year).
    """
    rng = np.random.default_rng(seed)
    start = np.datetime64(f"{first_year}-01-01", "s")
    stop = np.datetime64(f"{first_year + n_years}-01-01", "s")
    span = (stop - start).astype(np.int64)
    baseline = np.exp(rng.uniform(np.log(5.0), np.log(max_days), n_pairs)) * 86400
    offset = rng.uniform(0.0, span - baseline)
    img1 = (start + offset.astype("timedelta64[s]")).astype("datetime64[ns]")
    img2 = (start + (offset + baseline).astype("timedelta64[s]")).astype("datetime64[ns]")
    t1, t2 = decimal_years(img1), decimal_years(img2)
    center = first_year + n_years / 2
    years = first_year + np.arange(n_years)
    overlap = (
        np.clip(np.minimum(t2[:, None], years + 1) - np.maximum(t1[:, None], years), 0.0, None)
        / (t2 - t1)[:, None]
    )  # (pairs, years)
    sin_mean = (np.cos(TWO_PI * t1) - np.cos(TWO_PI * t2)) / (TWO_PI * (t2 - t1))
    cos_mean = (np.sin(TWO_PI * t2) - np.sin(TWO_PI * t1)) / (TWO_PI * (t2 - t1))
    data, truth = {}, {}
    for c in ("vx", "vy"):
        m0 = rng.uniform(-150, 150, (ny, nx))
        slope = rng.uniform(-3, 3, (ny, nx))
        amp = rng.uniform(5, 30, (ny, nx))
        phase = rng.uniform(0, 365.25, (ny, nx))
        annual = m0[None] + slope[None] * (years + 0.5 - center)[:, None, None]
        a = amp * np.sin(TWO_PI * phase / 365.25)  # amp cos 2π(t - φ) = a sin 2πt + b cos 2πt
        b = amp * np.cos(TWO_PI * phase / 365.25)
        exact = np.einsum("iy,yjk->ijk", overlap, annual)
        exact += sin_mean[:, None, None] * a[None] + cos_mean[:, None, None] * b[None]
        error = (rng.uniform(0.5, 2.0, n_pairs) * noise).astype(np.float32)
        obs = exact + rng.normal(size=exact.shape) * error[:, None, None]
        if outlier_fraction:
            hit = rng.uniform(size=obs.shape) < outlier_fraction
            obs[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(50, 300, hit.sum())
        obs[rng.uniform(size=obs.shape) < gap_fraction] = np.nan
        data[c] = (("mid_date", "y", "x"), obs.astype(np.float32), {"units": "meter/year"})
        data[f"{c}_error"] = ("mid_date", error, {"units": "meter/year"})
        truth.update(
            {
                f"{c}_true_m0": (("y", "x"), m0),
                f"{c}_true_slope": (("y", "x"), slope),
                f"{c}_true_amp": (("y", "x"), amp),
                f"{c}_true_phase": (("y", "x"), phase),
                f"{c}_true_annual": (("year", "y", "x"), annual),
            }
        )
    ds = xr.Dataset(
        {**data, **truth},
        coords={
            "mid_date": img1 + (img2 - img1) // 2,
            "acquisition_date_img1": ("mid_date", img1),
            "acquisition_date_img2": ("mid_date", img2),
            "y": 3_315_847.5 - 120.0 * np.arange(ny),
            "x": 784_252.5 + 120.0 * np.arange(nx),
            "year": years,
        },
        attrs={"center": center, "title": "exact composite-model cube (bench_composite)"},
    )
    if chunks is not None:
        ds = ds.assign({c: ds[c].chunk({"mid_date": -1, **chunks}) for c in ("vx", "vy")})
    return ds


# --------------------------------------------------------------------------- the loop


def moving_median_keep(v: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """ITS_LIVE's production outlier filter for one pixel: velocities sorted by mid-date,
    a 15-point moving median (scipy, mode 'reflect'), residuals beyond ``2 × 6 × 1.4826 ×
    MAD`` dropped. Returns the kept mask (in the input order)."""
    from scipy import ndimage

    order = np.argsort(mid, kind="stable")
    resid = np.abs(v[order] - ndimage.median_filter(v[order], 15))
    sigma = np.median(resid) * 1.4826
    keep = np.empty(v.size, dtype=bool)
    keep[order] = ~(resid > 2.0 * 6.0 * sigma)
    return keep


def lstsq_pixel(v, error, t1, t2, first_year, n_years, window, center, robust=None):
    """The composite's model for one pixel and component with ``np.linalg.lstsq``: dense
    rows, the annual fit, the weighted line and the climatology fit redone (the production
    code's structure). No year pruning (every year with a pair is an unknown).

    Returns
    -------
    dict
        ``mean``, ``error`` (n_years,), ``offset``, ``slope``, ``sin``, ``cos``, ``cov``
        (2 × 2, the climatology fit's, scaled by the weighted residual variance), ``count0``.
    """
    ok = np.isfinite(v) & np.isfinite(error) & (error > 0)
    if robust == "production" and ok.sum() > 0:
        keep = np.zeros_like(ok)
        keep[ok] = moving_median_keep(v[ok], 0.5 * (t1[ok] + t2[ok]))
        ok = keep
    out = {"mean": np.full(n_years, np.nan), "error": np.full(n_years, np.nan)}
    out.update(offset=np.nan, slope=np.nan, sin=np.nan, cos=np.nan, count0=0,
               cov=np.full((2, 2), np.nan))  # fmt: skip
    if ok.sum() < 30:
        return out
    v, error, t1, t2 = v[ok], error[ok], t1[ok], t2[ok]
    dt = t2 - t1
    years = first_year + np.arange(n_years)
    overlap = np.clip(np.minimum(t2[:, None], years + 1) - np.maximum(t1[:, None], years), 0, None)
    d_sin = (np.cos(TWO_PI * t1) - np.cos(TWO_PI * t2)) / TWO_PI  # displacement rows
    d_cos = (np.sin(TWO_PI * t2) - np.sin(TWO_PI * t1)) / TWO_PI

    def fit(rows):
        cols = overlap[rows].sum(axis=0) > 0
        design = np.column_stack([overlap[rows][:, cols], d_sin[rows], d_cos[rows]])
        w_d = 1.0 / (error[rows] * dt[rows])
        p = np.linalg.lstsq(w_d[:, None] * design, w_d * v[rows] * dt[rows], rcond=None)[0]
        return cols, design, w_d, p

    cols, _, _, p = fit(np.ones(v.size, dtype=bool))
    support = (overlap / error[:, None] ** 2).sum(axis=0)
    out["mean"][cols] = p[: cols.sum()]
    out["error"][cols] = 1.0 / np.sqrt(support[cols])
    use = cols & (years >= window[0]) & (years <= window[1])
    if use.any():
        x = years[use] + 0.5 - center
        w = 1.0 / out["error"][use] ** 2
        if (x < 0).any() and (x >= 0).any():
            out["offset"], out["slope"] = np.polynomial.polynomial.polyfit(
                x, out["mean"][use], 1, w=np.sqrt(w)
            )
        else:
            out["offset"] = np.average(out["mean"][use], weights=w)
    mid = 0.5 * (t1 + t2)
    rows = (mid >= window[0]) & (mid < window[1] + 1)
    if rows.sum() >= 30:
        cols_c, design, w_d, p = fit(rows)
        scaled = w_d[:, None] * design
        resid = scaled @ p - w_d * v[rows] * dt[rows]
        sigma2 = resid @ resid / (rows.sum() - design.shape[1])
        cov = np.linalg.inv(scaled.T @ scaled)[-2:, -2:] * sigma2
        out.update(sin=p[-2], cos=p[-1], cov=cov, count0=int(rows.sum()))
    return out


def amp_phase(a, b):
    """Amplitude and day of the maximum (ITS_LIVE's convention) of ``a sin + b cos``."""
    return np.hypot(a, b), 365.25 * np.mod(0.25 - np.arctan2(b, a) / TWO_PI, 1.0)


def loop_composite(cube, pixels, component, robust=None, window=(2014, 2024)):
    """:func:`lstsq_pixel` over ``pixels`` ((row, col) pairs) of ``cube`` (in memory)."""
    img1 = np.asarray(cube["acquisition_date_img1"].values)
    img2 = np.asarray(cube["acquisition_date_img2"].values)
    t1, t2 = decimal_years(img1), decimal_years(img2)
    first_year = int(np.floor(t1.min()))
    n_years = int(np.floor(decimal_years(img2.max() - np.timedelta64(1, "ns")))) - first_year + 1
    center = 0.5 * (window[0] + window[1] + 1)
    values = cube[component].values
    error = np.broadcast_to(np.asarray(cube[f"{component}_error"].values, float), t1.shape)
    return [
        lstsq_pixel(
            values[:, r, c].astype(float),
            error,
            t1,
            t2,
            first_year,
            n_years,
            window,
            center,
            robust,
        )  # fmt: skip
        for r, c in pixels
    ]


# --------------------------------------------------------------------------- the runs


def single_threaded_blas():
    """One BLAS thread (threadpoolctl) where available: small dense solves run fastest so,
    and a loaded machine does not make a per-pixel loop pay for oversubscription."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def fastest(run, repeat: int):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def recovery(result: xr.Dataset, truth: xr.Dataset, component: str = "vx") -> dict[str, float]:
    """Median absolute errors of one component against the truth of :func:`exact_cube`."""
    c = component
    annual = result[c].rename(time="year").assign_coords(year=result["time"].dt.year.values)
    annual_true = truth[f"{c}_true_annual"].sel(year=annual["year"])
    phase_diff = (result[f"{c}_phase"] - truth[f"{c}_true_phase"] + 182.625) % 365.25 - 182.625
    return {
        "amp": float(np.nanmedian(np.abs(result[f"{c}_amp"] - truth[f"{c}_true_amp"]))),
        "phase_days": float(np.nanmedian(np.abs(phase_diff))),
        "trend": float(np.nanmedian(np.abs(result[f"d{c}_dt"] - truth[f"{c}_true_slope"]))),
        "v0": float(np.nanmedian(np.abs(result[f"{c}0"] - truth[f"{c}_true_m0"]))),
        "annual": float(np.nanmedian(np.abs(annual - annual_true))),
    }


def loop_recovery(fits, truth, pixels, component="vx", first_year=None):
    c = component
    rows = {"amp": [], "phase_days": [], "trend": [], "v0": [], "annual": []}
    for fit, (r, col) in zip(fits, pixels, strict=True):
        amp, phase = amp_phase(fit["sin"], fit["cos"])
        rows["amp"].append(abs(amp - float(truth[f"{c}_true_amp"][r, col])))
        diff = (phase - float(truth[f"{c}_true_phase"][r, col]) + 182.625) % 365.25 - 182.625
        rows["phase_days"].append(abs(diff))
        rows["trend"].append(abs(fit["slope"] - float(truth[f"{c}_true_slope"][r, col])))
        rows["v0"].append(abs(fit["offset"] - float(truth[f"{c}_true_m0"][r, col])))
        true_annual = truth[f"{c}_true_annual"][:, r, col].values
        years = truth["year"].values - first_year
        rows["annual"] += list(np.abs(fit["mean"][years] - true_annual))
    return {k: float(np.nanmedian(v)) for k, v in rows.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-pixels", type=int, default=40)
    parser.add_argument("--tiny", action="store_true", help="a small synthetic cube (tests)")
    args = parser.parse_args(argv)
    print(
        f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), "
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"xr_itslive {xr_itslive.__version__}"
    )
    report: dict = {}

    # 1. the real cube (or, in the tests, a small synthetic one written to disk like it)
    if args.tiny:
        import tempfile

        path = Path(tempfile.mkdtemp()) / "tiny.zarr"
        tiny = exact_cube(n_pairs=600, ny=3, nx=4, first_year=2013, n_years=8, seed=1)
        tiny = tiny[["vx", "vy", "vx_error", "vy_error"]]
        tiny.chunk({"mid_date": -1, "y": 2, "x": 2}).to_zarr(path, zarr_format=2, consolidated=True)
        source, window = str(path), (2014, 2019)
    else:
        source, window = str(CUBE), (2014, 2024)
    names = ["vx", "vy", "vx_error", "vy_error"]
    cube = xr_itslive.open_cube(source, variables=names)
    print(f"cube: {source} {dict(cube.sizes)}, chunks {cube['vx'].data.chunksize}")
    xr_itslive.composite(cube.isel(x=slice(0, 2), y=slice(0, 2)), climatology=window,
                         min_obs=5).compute()  # numba compiled (and cached) first  # fmt: skip
    xr_itslive.composite(cube.isel(x=slice(0, 2), y=slice(0, 2)), climatology=window,
                         min_obs=5, robust=False).compute()  # fmt: skip
    # interleaved, the fastest of each: the machine may be shared, and load comes and goes
    read = took = plain_time = np.inf
    for _ in range(args.repeat):
        read = min(read, fastest(lambda: dask.compute(*(cube[n].data for n in names)), 1)[0])
        t, result = fastest(lambda: xr_itslive.composite(cube, climatology=window).compute(), 1)
        took = min(took, t)
        t, plain = fastest(
            lambda: xr_itslive.composite(cube, climatology=window, robust=False).compute(), 1
        )
        plain_time = min(plain_time, t)
    n_data = int((result["count0"] > 0).sum())
    print(
        f"read vx, vy, vx_error, vy_error: {read:.2f} s; composite (vx, vy, error weights, "
        f"Tukey IRLS, from disk): {took:.2f} s = {took / read:.2f} x read; without outlier "
        f"rejection {plain_time:.2f} s = {plain_time / read:.2f} x read "
        f"({n_data} pixels with a climatology fit)"
    )
    report.update(read=read, composite=took, ratio=took / read, plain=plain_time)

    # 2. the per-pixel lstsq loop on a subset, extrapolated, against the composite of the cube
    # in memory (no reading in either)
    in_memory = cube.persist()
    kernel_time = np.inf
    for _ in range(args.repeat):
        t, _ = fastest(
            lambda: xr_itslive.composite(in_memory, climatology=window, robust=False).compute(),
            1,
        )
        kernel_time = min(kernel_time, t)
    memory = cube.load()
    has_data = np.argwhere(np.asarray(result["count0"].values) > 0)
    pick = np.random.default_rng(0).permutation(len(has_data))[: args.loop_pixels]
    pixels = [tuple(map(int, has_data[i])) for i in sorted(pick)]
    with single_threaded_blas():  # a multi-threaded BLAS only slows these small solves down
        loop_time, fits = fastest(lambda: loop_composite(memory, pixels, "vx", window=window), 1)
    per_pixel = loop_time / len(pixels)
    all_data = int((np.asarray(result["count"].values).sum(axis=0) > 0).sum())
    extrapolated = per_pixel * all_data * 2
    # the same problem as the loop's: every year with a pair an unknown (no pruning)
    ours = xr_itslive.composite(memory, climatology=window, robust=False, min_year_obs=1)
    diffs_mean, diffs_amp = [], []
    for fit, (r, c) in zip(fits, pixels, strict=True):
        m = ours["vx"].values[:, r, c]
        both = np.isfinite(m) & np.isfinite(fit["mean"])
        diffs_mean.append(np.max(np.abs(m[both] - fit["mean"][both]), initial=0.0))
        diffs_amp.append(
            abs(float(ours["vx_amp"].values[r, c]) - amp_phase(fit["sin"], fit["cos"])[0])
        )
    print(
        f"per-pixel np.linalg.lstsq loop (same model, no outlier rejection, 1 BLAS thread): "
        f"{per_pixel * 1e3:.1f} ms per pixel and component on {len(pixels)} pixels with data; "
        f"extrapolated to the {all_data} pixels with data x 2 components: {extrapolated:.1f} s, "
        f"{extrapolated / kernel_time:.0f} x composite(robust=False) of the cube in memory "
        f"({kernel_time:.2f} s, {os.cpu_count()} cores; {kernel_time * os.cpu_count():.2f} "
        "core-seconds at most)"
    )
    print(
        f"  loop vs composite(robust=False, min_year_obs=1), vx: largest |annual mean "
        f"difference| {max(diffs_mean):.2e} m/yr, largest |amplitude difference| "
        f"{np.nanmax(diffs_amp):.2e} m/yr (float32 outputs)"
    )
    report.update(loop_per_pixel=per_pixel, loop_extrapolated=extrapolated)

    # 3. robust: Tukey IRLS vs the production moving-median filter, real pixels
    with single_threaded_blas():
        prod = loop_composite(memory, pixels, "vx", robust="production", window=window)
    ours_r = result
    d_v0, d_amp, d_phase, d_annual = [], [], [], []
    for fit, (r, c) in zip(prod, pixels, strict=True):
        amp, phase = amp_phase(fit["sin"], fit["cos"])
        d_v0.append(abs(float(ours_r["vx0"].values[r, c]) - fit["offset"]))
        d_amp.append(abs(float(ours_r["vx_amp"].values[r, c]) - amp))
        d_phase.append(abs((float(ours_r["vx_phase"].values[r, c]) - phase + 182.6) % 365.25
                           - 182.6))  # fmt: skip
        d_annual += list(np.abs(ours_r["vx"].values[:, r, c] - fit["mean"]))
    print(
        f"robust on the real cube ({len(pixels)} pixels, vx): Tukey IRLS vs the production "
        f"moving-median filter: median |difference| vx0 {np.nanmedian(d_v0):.2f} m/yr, annual "
        f"means {np.nanmedian(d_annual):.2f} m/yr, vx_amp {np.nanmedian(d_amp):.2f} m/yr, "
        f"vx_phase {np.nanmedian(d_phase):.1f} days; Tukey rejects "
        f"{float(np.nanmedian(ours_r['outlier_percent'].values)):.1f}% (median pixel) of the "
        "window's pairs"
    )

    # 4. recovery of a known truth
    for outliers in (0.0, 0.05):
        kw = dict(n_pairs=800, ny=3, nx=4) if args.tiny else dict(n_pairs=6000, ny=10, nx=10)
        truth = exact_cube(noise=5.0, outlier_fraction=outliers, seed=2, **kw)
        win = (2014, 2023)
        rows = {}
        for label, robust in (("composite robust=True", True), ("composite robust=False", False)):
            fitted = xr_itslive.composite(truth, climatology=win, robust=robust).compute()
            rows[label] = recovery(fitted, truth)
        grid = [(r, c) for r in range(truth.sizes["y"]) for c in range(truth.sizes["x"])]
        with single_threaded_blas():
            prod = loop_composite(truth, grid, "vx", robust="production", window=win)
        rows["lstsq + production filter"] = loop_recovery(prod, truth, grid, first_year=2013)
        print(
            f"synthetic recovery ({kw['n_pairs']} pairs, {kw['ny'] * kw['nx']} pixels, noise "
            f"0.5-2 x 5 m/yr, {outliers:.0%} outliers of 50-300 m/yr), median |error| of vx:"
        )
        for label, errs in rows.items():
            print(
                f"  {label:28s} amp {errs['amp']:.2f} m/yr, phase {errs['phase_days']:.1f} days,"
                f" trend {errs['trend']:.3f} m/yr/yr, vx0 {errs['v0']:.2f} m/yr, annual means "
                f"{errs['annual']:.2f} m/yr"
            )
        report[f"recovery_{outliers}"] = rows
    return report


if __name__ == "__main__":
    main()
