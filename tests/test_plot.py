"""Plots rendered with Agg: a point series (pairs as bars, an inverted series, a daily GP band),
a composite map with the glacier outline, a point's series against its composite."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import struct

import numpy as np
import pytest
import xarray as xr
from conftest import ITSLIVE_DATA, requires_shared
from matplotlib.collections import LineCollection

import xr_itslive
from xr_itslive.errors import InvalidParameterError, MissingVariableError, NotAnITSLiveCubeError
from xr_itslive.plot import seasonal_curve


def _png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def series():
    rng = np.random.default_rng(3)
    start = np.datetime64("2019-01-01", "ns")
    days = rng.uniform(0, 600, 250)
    dt = rng.uniform(10, 120, 250)
    t1 = start + (days * 86400e9).astype("timedelta64[ns]")
    t2 = t1 + (dt * 86400e9).astype("timedelta64[ns]")
    v = 40 + 10 * np.sin(2 * np.pi * (days + dt / 2) / 365.25) + rng.normal(0, 300 / dt)
    return xr.Dataset(
        {"v": ("mid_date", v, {"units": "m/yr"})},
        coords={
            "mid_date": t1 + (t2 - t1) / 2,
            "acquisition_date_img1": ("mid_date", t1),
            "acquisition_date_img2": ("mid_date", t2),
        },
    )


def _inverted(series, bounds: bool):
    edges = np.arange(
        np.datetime64("2019-01-01", "ns"), np.datetime64("2020-10-01", "ns"),
        np.timedelta64(12, "D"),
    )  # fmt: skip
    centres = edges[:-1] + (edges[1:] - edges[:-1]) / 2
    values = 40 + 10 * np.sin(2 * np.pi * np.arange(centres.size) * 12 / 365.25)
    ds = xr.Dataset({"v": ("time", values)}, coords={"time": centres})
    if bounds:
        ds["time_bounds"] = (("time", "bnds"), np.stack([edges[:-1], edges[1:]], axis=1))
    return ds


def test_plot_everything_to_png(series, tmp_path):
    fit = xr_itslive.gp_fit_series(series, "v", likelihood="gaussian")
    path = tmp_path / "series.png"
    fig, ax = xr_itslive.plot_series(
        series, "v", inverted=_inverted(series, bounds=True), gp=fit, path=path
    )
    assert path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(bars) == 1 and len(bars[0].get_segments()) == 250
    # each bar spans its pair's interval at the pair's value
    first = bars[0].get_segments()[0]
    assert first[0, 1] == first[1, 1] == pytest.approx(series["v"].values[0])
    assert first[1, 0] > first[0, 0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["image pairs (250)", "inverted series", "GP 95% band", "GP mean"]
    assert ax.get_ylabel() == "v [m/yr]"


def test_plot_accessor_dataarray_and_axes(series, tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    inverted = _inverted(series, bounds=False)["v"]
    out_fig, out_ax = series.itslive.plot_series(
        "v", inverted=inverted, gp=True, ax=ax, level=0.9, max_pairs=100
    )
    assert out_ax is ax and out_fig is fig
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["image pairs (100)", "inverted series", "GP 90% band", "GP mean (daily)"]
    fig.savefig(tmp_path / "accessor.png")
    plt.close(fig)


def test_plot_bad_inputs(series, tmp_path):
    with pytest.raises(MissingVariableError, match="variable 'vx' not found"):
        xr_itslive.plot_series(series, "vx", path=tmp_path / "x.png")
    with pytest.raises(NotAnITSLiveCubeError, match="select a pixel first"):
        xr_itslive.plot_series(series.expand_dims(x=[0.0, 1.0]), path=tmp_path / "x.png")
    with pytest.raises(InvalidParameterError, match="gp must be a GaussianProcessFit"):
        xr_itslive.plot_series(series, gp="yes", path=tmp_path / "x.png")
    two_pixels = _inverted(series, False)["v"].expand_dims(x=[0.0, 1.0])
    with pytest.raises(InvalidParameterError, match="expected one series along 'time'"):
        xr_itslive.plot_series(series, inverted=two_pixels, path=tmp_path / "x.png")
    with pytest.raises(InvalidParameterError, match="level must be in"):
        xr_itslive.plot_series(series, level=95, path=tmp_path / "x.png")


def test_gp_of_the_components_daily_with_its_band(series, tmp_path):
    """gp=True on a series with vx and vy: the speed of the components' GPs, every day, with
    a band that never goes below zero."""
    rng = np.random.default_rng(4)
    n = series.sizes["mid_date"]
    dt = (series.acquisition_date_img2 - series.acquisition_date_img1).dt.days.values
    noise = 150.0 / dt
    with_components = series.assign(
        vx=("mid_date", 1.0 + rng.normal(0, noise, n), {"units": "m/yr"}),
        vy=("mid_date", -1.0 + rng.normal(0, noise, n), {"units": "m/yr"}),
    )
    with_components["v"] = np.hypot(with_components.vx, with_components.vy)
    path = tmp_path / "gp.png"
    fig, ax = xr_itslive.plot_series(with_components, "v", gp=True, path=path)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-2:] == ["GP 95% band", "GP mean of vx, vy (daily)"]
    line = ax.get_lines()[-1]
    days = np.diff(np.asarray(line.get_xdata(), dtype="datetime64[ns]")) / np.timedelta64(1, "D")
    assert np.all(days == 1.0) and len(days) > 500
    band = ax.collections[-1].get_paths()[0].vertices[:, 1]
    assert band.min() >= 0.0
    assert np.min(line.get_ydata()) >= 0.0
    assert path.stat().st_size > 20_000


def _fake_composite(x, y, years=(2019, 2020, 2021), crs="EPSG:32646"):
    """A small composite with ITS_LIVE's names: per year v, vx, vy, *_error, count; the
    climatology v0, v_amp, v_phase, dv_dt (phase across New Year, so the cyclic map shows)."""
    rng = np.random.default_rng(0)
    ny, nx = len(y), len(x)
    shape = (len(years), ny, nx)
    edges = np.array([np.datetime64(f"{yr}-01-01", "ns") for yr in (*years, years[-1] + 1)])
    centres = edges[:-1] + (edges[1:] - edges[:-1]) / 2
    flow = np.linspace(5, 120, nx)[None, :] * np.ones((ny, 1))
    vx = flow[None] + rng.normal(0, 3, shape)
    vy = -0.3 * flow[None] + rng.normal(0, 3, shape)
    per_year = {"units": "meter/year"}
    ds = xr.Dataset(
        {
            "vx": (("time", "y", "x"), vx, per_year),
            "vy": (("time", "y", "x"), vy, per_year),
            "v": (("time", "y", "x"), np.hypot(vx, vy), {**per_year, "long_name": "speed"}),
            "vx_error": (("time", "y", "x"), np.full(shape, 3.0), per_year),
            "vy_error": (("time", "y", "x"), np.full(shape, 3.0), per_year),
            "v_error": (("time", "y", "x"), np.full(shape, 3.0), per_year),
            "count": (("time", "y", "x"), rng.integers(0, 400, shape)),
            "v0": (("y", "x"), np.hypot(flow, 0.3 * flow), per_year),
            "v_amp": (("y", "x"), 0.1 * flow, per_year),
            "v_phase": (("y", "x"), (330 + np.linspace(0, 90, nx))[None, :] % 365.25
                        * np.ones((ny, 1)), {"units": "day of year"}),
            "dv_dt": (("y", "x"), rng.normal(0, 2, (ny, nx)), {"units": "meter/year^2"}),
            "time_bounds": (("time", "bnds"), np.stack([edges[:-1], edges[1:]], axis=1)),
        },
        coords={"time": centres, "y": y, "x": x},
        attrs={"center_date": "2020-07-02", "climatology_years": [2019, 2021]},
    )  # fmt: skip
    return ds.rio.write_crs(crs)


@pytest.mark.parametrize("variable", ["v_phase", "v_amp", "dv_dt", "v"])
def test_composite_map_renders_with_its_outline(variable, tmp_path):
    import shapely

    x = 784_000.0 + 120.0 * np.arange(12)
    y = 3_316_000.0 - 120.0 * np.arange(9)
    composite = _fake_composite(x, y)
    outline = shapely.Polygon([(784_200, 3_315_100), (785_100, 3_315_300), (785_000, 3_315_900),
                               (784_300, 3_315_800)])  # fmt: skip
    path = tmp_path / f"{variable}.png"
    fig, ax = xr_itslive.plot_composite_map(composite, variable, outline=outline, path=path)
    assert _png_size(path) == (6.5 * 120, 5.5 * 120)
    assert path.stat().st_size > 10_000
    mesh = ax.collections[0]
    if variable == "v_phase":
        assert mesh.get_cmap().name == "twilight" and mesh.get_clim() == (0.0, 365.25)
        labels = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
        assert "0\nJan 1" in labels and "181\nJul 1" in labels
    elif variable == "dv_dt":
        low, high = mesh.get_clim()
        assert mesh.get_cmap().name == "RdBu_r" and low == -high
    else:
        assert mesh.get_cmap().name == "viridis" and mesh.get_clim()[0] == 0.0
    outline_line = [line for line in ax.get_lines() if line.get_label() == "glacier outline"]
    assert len(outline_line) == 1 and len(outline_line[0].get_xdata()) == 5
    if variable == "v":  # per year: the last by default, or the one asked for
        assert ax.get_title().startswith("v 2021")
        _, ax2 = xr_itslive.plot_composite_map(composite, "v", time=2019, path=tmp_path / "a.png")
        assert ax2.get_title().startswith("v 2019")
        np.testing.assert_array_equal(
            ax2.collections[0].get_array().reshape(9, 12), composite["v"].isel(time=0).values
        )


def test_composite_map_bad_inputs(tmp_path):
    composite = _fake_composite(np.arange(4) * 120.0 + 784_000, 3_316_000 - np.arange(3) * 120.0)
    with pytest.raises(MissingVariableError, match=r"'v_amplitude' not found.*'v_amp'"):
        xr_itslive.plot_composite_map(composite, "v_amplitude", path=tmp_path / "x.png")
    with pytest.raises(InvalidParameterError, match=r"no year 1999; it has 2019..2021"):
        xr_itslive.plot_composite_map(composite, "v", time=1999, path=tmp_path / "x.png")
    with pytest.raises(InvalidParameterError, match="climatology .no 'time'"):
        xr_itslive.plot_composite_map(composite, "v_amp", time=2020, path=tmp_path / "x.png")
    with pytest.raises(InvalidParameterError, match="time must be a year"):
        xr_itslive.plot_composite_map(composite, "v", time="next year", path=tmp_path / "x.png")


@requires_shared
def test_composite_map_on_the_real_glacier_grid_and_outline(tmp_path):
    """The real glacier's RGI7 outline (a file, EPSG:32646) over a composite on its cube's
    grid (the composite's values are made up here; the grid and outline are real)."""
    cube = xr.open_zarr(ITSLIVE_DATA / "N30E090_glacier_cube.zarr")
    composite = _fake_composite(cube["x"].values, cube["y"].values)
    path = tmp_path / "real.png"
    outline = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
    fig, ax = xr_itslive.plot_composite_map(composite, "v_phase", outline=outline, path=path)
    assert _png_size(path) == (780, 660)
    (line,) = [line for line in ax.get_lines() if line.get_label() == "glacier outline"]
    xs = np.asarray(line.get_xdata())
    # the clipped cube's pixel centres reach to within a pixel of the outline
    assert float(cube["x"].min()) - 120 <= xs.min() and xs.max() <= float(cube["x"].max()) + 120


def test_point_series_with_its_composite(series, tmp_path):
    composite = _fake_composite(np.array([784_000.0, 784_120.0]), np.array([3_316_000.0]),
                                years=(2019, 2020))  # fmt: skip
    point = composite.sel(x=784_120.0, y=3_316_000.0)
    # the seasonal fit peaks on the phase day and spans v0 ± v_amp
    days = np.arange(np.datetime64("2020-01-01", "ns"), np.datetime64("2021-01-01", "ns"),
                     np.timedelta64(1, "D"))  # fmt: skip
    curve = seasonal_curve(point, days)
    peak = (days[np.argmax(curve)] - days[0]) / np.timedelta64(1, "D")
    assert abs(peak - float(point.v_phase)) <= 1.5 or abs(peak - float(point.v_phase)) >= 364
    assert np.ptp(curve) == pytest.approx(2 * float(point.v_amp), rel=0.05)

    path = tmp_path / "point.png"
    fig, ax = xr_itslive.plot_point_composite(series, point, "v", path=path)
    assert _png_size(path) == (11 * 120, 4.5 * 120)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "image pairs (250)"
    assert "composite annual mean" in labels and "annual mean ± error" in labels
    assert "seasonal fit (2019-2021 climatology)" in labels
    means = [line for line in ax.get_lines() if line.get_label() == "composite annual mean"]
    assert np.asarray(means[0].get_ydata()).tolist() == [float(point.v[0])] * 2
    # a regular series (an inversion of the pixel) works too
    inverted = _inverted(series, bounds=True)
    _, ax2 = xr_itslive.plot_point_composite(inverted, point, "v", path=tmp_path / "inv.png")
    assert ax2.get_legend().get_texts()[0].get_text() == "series"
    with pytest.raises(InvalidParameterError, match="select the point first"):
        xr_itslive.plot_point_composite(series, composite, "v", path=tmp_path / "x.png")
    with pytest.raises(MissingVariableError, match="composite has no 'w'"):
        xr_itslive.plot_point_composite(series, point, "w", path=tmp_path / "x.png")
