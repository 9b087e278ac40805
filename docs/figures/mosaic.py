"""The README's mosaic figure: the real glacier cube as two cubes, mosaicked back.

Run from the repository root: ``python docs/figures/mosaic.py`` (writes docs/images/mosaic.png).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import xr_itslive  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "itslive"


def main() -> None:
    cube = xr_itslive.open_cube(DATA / "N30E090_glacier_cube.zarr", variables=NAMES)
    west, east = cube.isel(x=slice(0, 20)), cube.isel(x=slice(20, None))
    mosaic = xr_itslive.invert_mosaic(
        [west, east],
        mask=DATA / "N30E090_glacier_outline_rgi7.geojson",
        step=12,
        weights="error",
        robust=True,
    ).compute()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    source = mosaic["source"].where(mosaic["source"] >= 0)
    source.plot(ax=axes[0], cmap="coolwarm", levels=[-0.5, 0.5, 1.5], cbar_kwargs={
        "ticks": [0, 1], "label": "cube (0: west half, 1: east half)"})  # fmt: skip
    axes[0].set_title("source: the cube each pixel came from")
    mosaic["v"].sel(time="2020").mean("time").plot(
        ax=axes[1], cmap="viridis", cbar_kwargs={"label": "speed, m/yr"}
    )
    axes[1].set_title("mean speed of 2020, one mosaic")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlabel("x (EPSG:32646), m")
        ax.set_ylabel("y, m")
    out = ROOT / "docs" / "images" / "mosaic.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


NAMES = ["vx", "vy", "vx_error", "vy_error"]

if __name__ == "__main__":
    main()
