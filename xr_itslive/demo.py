"""``xr-itslive demo``: invert the bundled real cube subset, say what is signal and what is
noise, save a plot.

The bundled 3×3 pixels are slow ice near a glacier margin: the flow is a couple of m/yr,
while a 12-day cell's components scatter by about 10 m/yr. The demo therefore reports the
speed of the mean velocity vector (the signal) and the size of the noise, and not the median
of per-cell speeds: the magnitude of noisy components is biased high (``E|v̂|² = |v|² + σx² +
σy²``), so that median measures the noise (see :mod:`xr_itslive.kernels.speed`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from .io.cube import demo_cube_path
from .io.open import open_cube
from .workflows.gp import gp_regress
from .workflows.invert import invert
from .workflows.speed import flow_and_noise

#: The GP's cell size in the demo, days: coarser than the default 4 days, so that the two
#: component fits take seconds; the length scale (at least 60 days) is far longer anyway.
GP_STEP = 8.0


#: The demo's settings: :func:`run_demo`'s defaults, and the flags' of ``xr-itslive demo``
#: (one place, so the two cannot drift apart).
DEMO_DEFAULTS: dict = {
    "out_dir": "xr_itslive_demo",
    "step": 12.0,
    "lam": 30.0,
    "start": "2013-06-01",
    "end": "2024-11-14",
}


def run_demo(
    out_dir: str | Path = DEMO_DEFAULTS["out_dir"],
    step: float = DEMO_DEFAULTS["step"],
    lam: float = DEMO_DEFAULTS["lam"],
    start: str = DEMO_DEFAULTS["start"],
    end: str = DEMO_DEFAULTS["end"],
) -> dict:
    """Invert the bundled 3×3 ITS_LIVE subset (robust, error-weighted, with uncertainty).

    Prints what is signal (the speed of the mean velocity) and what is noise (the scatter of
    a cell's components, the per-cell speeds it makes, and how often a cell points
    upstream), fits a GP to the centre pixel's ``vx`` and ``vy`` (daily, with its band), and
    writes ``inverted.zarr`` and ``demo.png`` into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for the outputs (created).
    step, lam
        Cell length (days) and smoothness weight of the inversion.
    start, end
        The time window.

    Returns
    -------
    dict
        Paths written and the figures printed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = demo_cube_path()
    cube = open_cube(path)
    first = np.datetime_as_string(cube["acquisition_date_img1"].values.min(), "D")
    last = np.datetime_as_string(cube["acquisition_date_img2"].values.max(), "D")
    print(f"cube: {path}")
    print(
        f"  {cube.sizes['mid_date']} image pairs x {cube.sizes['y']} x {cube.sizes['x']} pixels, "
        f"{first} .. {last}, CRS {cube.rio.crs}"
    )
    t0 = time.perf_counter()
    result = invert(
        cube, step=step, lam=lam, start=start, end=end,
        weights="error", robust=True, uncertainty=True,
    ).compute()  # fmt: skip
    seconds = time.perf_counter() - t0
    print(
        f"inverted vx, vy to {result.sizes['time']} cells of {step:g} days "
        f"({result.attrs['start'][:10]} .. {result.attrs['end'][:10]}), lam={lam:g}, "
        f"error weights, robust (Tukey): {seconds:.2f} s (the first run also compiles the kernels)"
    )
    print(
        f"  pairs used: {int(result.attrs['n_pairs_used'])}, median valid pairs per pixel: "
        f"{float(result['n_obs'].median()):.0f}"
    )
    noise = flow_and_noise(result)
    figures = {name: np.asarray(noise[name].values) for name in noise.data_vars}
    iy, ix = cube.sizes["y"] // 2, cube.sizes["x"] // 2
    centre = {name: float(value[iy, ix]) for name, value in figures.items() if value.ndim == 2}
    speeds = figures["mean_speed"]
    print("signal (slow ice near the glacier margin):")
    print(
        f"  speed of the mean velocity over all cells: {speeds.min():.1f} .. {speeds.max():.1f} "
        f"m/yr across the 9 pixels (centre: vx {centre['mean_vx']:.1f}, vy "
        f"{centre['mean_vy']:.1f} -> {centre['mean_speed']:.1f} m/yr)"
    )
    annual_all = noise["annual_speed"].isel(y=iy, x=ix)
    full = np.isfinite(annual_all.values)
    annual = annual_all.values[full]
    years = annual_all["year"].values[full]
    print(
        "  speed of each full year's mean velocity, centre (m/yr): "
        + ", ".join(f"{y} {v:.1f}" for y, v in zip(years, annual, strict=True))
        + f"; their spread (std {np.std(annual):.1f} m/yr) is the noise of an annual mean"
    )
    print("noise:")
    print(
        f"  a cell's velocity scatters by {np.median(figures['across_std']):.1f} m/yr (median "
        "over pixels, across the mean flow, which carries none), against a posterior std of "
        f"{np.median(figures['posterior_std']):.1f} m/yr: the images' seasonal errors are "
        "not in it"
    )
    print(
        f"  so per-cell speeds (median {np.median(figures['cell_speed']):.1f} m/yr, the "
        "magnitude of noisy components) measure the noise, not the flow: "
        f"{100 * np.median(figures['upstream_fraction']):.0f}% of cells point upstream, and only "
        f"{100 * np.median(figures['significant_fraction']):.0f}% exceed that noise at 95% "
        f"(v_significant, by the posterior std: "
        f"{100 * np.median(figures['significant_fraction_posterior']):.0f}%)"
    )
    pixel_cube = cube.isel(y=iy, x=ix).sel(
        mid_date=slice(result.attrs["start"], result.attrs["end"])
    ).compute()  # fmt: skip
    t0 = time.perf_counter()
    gp = gp_regress(pixel_cube, "v", step=GP_STEP)
    gp_seconds = time.perf_counter() - t0
    gp_mean_speed = float(np.hypot(gp["vx"].mean(), gp["vy"].mean()))
    bounds = gp.attrs.get("gp_at_bounds") or "none"
    print(
        f"GP of the centre pixel's vx and vy (daily; length scales "
        f"{gp.attrs['gp_vx_length_scale']:.0f} / {gp.attrs['gp_vy_length_scale']:.0f} d, at "
        f"a bound: {bounds}; {gp_seconds:.1f} s): speed of the mean velocity "
        f"{gp_mean_speed:.1f} m/yr; the daily speed (median {float(gp['v'].median()):.1f}, "
        f"95% band {float(gp['v_lower'].median()):.1f} .. {float(gp['v_upper'].median()):.1f} "
        "m/yr) follows the same seasonal swing of the components, which no fit to these "
        "pairs can tell from flow"
    )
    summary = {
        "pairs_used": int(result.attrs["n_pairs_used"]),
        "median_pairs_per_pixel": float(result["n_obs"].median()),
        "mean_speed": centre["mean_speed"],
        "mean_speed_range": (float(speeds.min()), float(speeds.max())),
        "annual_mean_speed": dict(zip(map(int, years), map(float, annual), strict=True)),
        "cell_noise_std": float(np.median(figures["across_std"])),
        "posterior_std": float(np.median(figures["posterior_std"])),
        "median_cell_speed": float(np.median(figures["cell_speed"])),
        "upstream_fraction": float(np.median(figures["upstream_fraction"])),
        "significant_fraction": float(np.median(figures["significant_fraction"])),
        "gp_mean_speed": gp_mean_speed,
        "seconds": seconds,
    }
    store = out_dir / "inverted.zarr"
    result.to_zarr(store, mode="w", consolidated=False)
    figure = out_dir / "demo.png"
    _plot(pixel_cube, result.isel(y=iy, x=ix), gp, centre, figure)
    print(f"wrote {store} and {figure}")
    return {"store": str(store), "figure": str(figure), **summary}


def _plot(pixel_cube: xr.Dataset, pixel_result: xr.Dataset, gp: xr.Dataset, centre, path):
    from matplotlib.figure import Figure

    from .plot import plot_series

    fig = Figure(figsize=(11.0, 8.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    plot_series(
        pixel_cube, "v", inverted=pixel_result, gp=gp, ax=top,
        title="centre pixel: speed. Pairs, inverted cells and the GP follow the components' noise",
    )  # fmt: skip
    top.axhline(centre["mean_speed"], color="k", linestyle="--", linewidth=1.2,
                label=f"speed of the mean velocity ({centre['mean_speed']:.1f} m/yr)")  # fmt: skip
    top.legend(loc="upper right", fontsize="small")
    top.set_xlabel("")
    for name, color in (("vx", "tab:blue"), ("vy", "tab:green")):
        bounds = np.asarray(pixel_result["time_bounds"].values)
        edges = np.concatenate([bounds[:, 0], bounds[-1:, 1]])
        bottom.stairs(pixel_result[name].values, edges, baseline=None, color=color, alpha=0.5,
                      linewidth=1.0, label=f"{name}, inverted cells")  # fmt: skip
        half = 1.96 * gp[f"{name}_std"].values
        bottom.fill_between(gp["time"].values, gp[name] - half, gp[name] + half, color=color,
                            alpha=0.2, linewidth=0)  # fmt: skip
        bottom.plot(gp["time"].values, gp[name].values, color=color, linewidth=1.6,
                    label=f"{name}, GP daily mean and 95% band")  # fmt: skip
    bottom.axhline(0.0, color="k", linewidth=0.8)
    bottom.set_ylabel("velocity component [m/yr]")
    bottom.set_title(
        "components: a seasonal swing of about ±10 m/yr that reverses the flow (vy changes "
        "sign each year): errors of the images, not flow",
        fontsize="medium",
    )
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper right", fontsize="small", ncols=2)
    fig.savefig(path, dpi=110)
