"""plot_series: pairs as bars, an inverted series and a GP band, rendered with Agg."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import LineCollection

import xr_itslive
from xr_itslive.errors import InvalidParameterError, MissingVariableError, NotAnITSLiveCubeError


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
    assert labels == ["image pairs (100)", "inverted series", "GP 90% band", "GP mean"]
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
