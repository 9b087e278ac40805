"""The glacier map in a real browser: Voilà serves docs/map_widget.ipynb on 127.0.0.1, Debian's
headless Chromium (driven by playwright) clicks the glacier, and the selection must show in the
page's label and in pixels of a screenshot.

Offline: the notebook gets the plain ``blank`` basemap; the widgets' JavaScript comes from the
installed packages. Set ``XR_ITSLIVE_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ITSLIVE_DATA, REPO, SHARED_DATA, _free_port, requires_shared

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = REPO / "docs" / "map_widget.ipynb"
OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous bounds for the slow steps; the whole test takes ~15 s here.
SERVER_START_S = 40.0
RENDER_MS = 40_000
SELECT_MS = 20_000

pytestmark = [
    requires_shared,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent: install Debian's chromium (apt-get install -y "
        "chromium) to run the browser test",
    ),
    pytest.mark.timeout(120),
]


def _rgi_id() -> str:
    import json

    return json.loads(OUTLINE.read_text())["features"][0]["properties"]["rgi_id"]


def _selection_pixels(png: Path) -> int:
    """Pixels of the selected-glacier orange (fill #ff9800 at 0.7 over the outline, or the
    #e65100 stroke); the basemap, the cyan outline and the blue/pink cube lines have none."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((red > 190) & (green > 60) & (green < 210) & (blue < 130)))


def _outline_pixels(png: Path) -> int:
    """Pixels of the unselected outline's cyan fill (#4dd0e1 at 0.5)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((red < 190) & (green > 180) & (blue > 200)))


@pytest.fixture
def voila_url(tmp_path):
    """Voilà serving the map notebook on a free 127.0.0.1 port; stopped afterwards."""
    home = tmp_path / "jupyter"
    env = dict(os.environ)
    env.update(
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        IPYTHONDIR=str(home / "ipython"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        XR_ITSLIVE_SHARED_DATA=str(SHARED_DATA),
        XR_ITSLIVE_MAP_BASEMAP="blank",
        MPLBACKEND="Agg",
    )
    port = _free_port()
    log = (tmp_path / "voila.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "voila",
        str(NOTEBOOK),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--show_tracebacks=True",
    ]
    # Own process group: the kernel Voilà starts goes down with it.
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"voila exited with {server.returncode}: "
                    f"{(tmp_path / 'voila.log').read_text()[-3000:]}"
                )
            # Any HTTP answer means the server listens (GET / would already run the notebook).
            try:
                with urllib.request.urlopen(url + "api/status", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"voila did not answer on {url} within {SERVER_START_S:.0f} s: "
                        f"{(tmp_path / 'voila.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield url
    finally:
        _stop_group(server)
        log.close()
    # Nothing of the server's process group may survive (no stray kernel).
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (Voilà and its kernel), SIGKILL what lingers."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    if server.returncode is None:
        server.wait(timeout=10)


# Finds a point inside the glacier path where the path is really what a click would hit
# (the outline is concave, and other layers or controls may cover parts of it).
_CLICK_POINT_JS = """
() => {
  const path = document.querySelector('path.xr-itslive-glacier');
  if (!path) return null;
  const box = path.getBoundingClientRect();
  const steps = 24;
  const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  const points = [];
  for (let i = 1; i < steps; i++)
    for (let j = 1; j < steps; j++)
      points.push([box.x + box.width * i / steps, box.y + box.height * j / steps]);
  points.sort((a, b) => Math.hypot(a[0] - cx, a[1] - cy) - Math.hypot(b[0] - cx, b[1] - cy));
  for (const [x, y] of points)
    if (document.elementFromPoint(x, y) === path) return [x, y];
  return null;
}
"""


def test_click_glacier_in_chromium(voila_url, tmp_path):
    from playwright.sync_api import sync_playwright

    rgi_id = _rgi_id()
    before_png, after_png = tmp_path / "map_before_click.png", tmp_path / "map_selected.png"
    console_errors: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 800},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda msg: console_errors.append(msg.text) if msg.type == "error" else None,
            )
            page.goto(voila_url, wait_until="domcontentloaded")
            page.wait_for_selector(".leaflet-container", timeout=RENDER_MS)
            page.wait_for_selector("path.xr-itslive-glacier", timeout=RENDER_MS)
            page.wait_for_selector("path.xr-itslive-cube", state="attached", timeout=RENDER_MS)
            label = page.locator(".xr-itslive-selection")
            label.wait_for(timeout=RENDER_MS)
            assert rgi_id not in label.inner_text()
            assert page.locator("path.xr-itslive-selected-glacier").count() == 0
            page.screenshot(path=str(before_png))

            point = page.evaluate(_CLICK_POINT_JS)
            assert point is not None, "no point of the glacier outline is clickable on screen"
            page.mouse.click(*point)

            # The kernel handled the click: the label names the glacier and its cube, and the
            # highlight layer came back from Python and was drawn.
            page.wait_for_function(
                "id => document.querySelector('.xr-itslive-selection')?.innerText.includes(id)",
                arg=rgi_id,
                timeout=SELECT_MS,
            )
            page.wait_for_selector("path.xr-itslive-selected-glacier", timeout=SELECT_MS)
            text = label.inner_text()
            map_box = page.locator(".leaflet-container").bounding_box()
            page.screenshot(path=str(after_png))
        finally:
            context.close()

    assert f"Glacier {rgi_id}" in text
    assert "Cube ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr" in text
    assert map_box["width"] > 500 and map_box["height"] > 300
    # The screenshots show the map: the outline drawn before, the selection drawn after.
    assert after_png.stat().st_size > 10_000
    assert _outline_pixels(before_png) > 5_000
    assert _selection_pixels(before_png) < 50
    assert _selection_pixels(after_png) > 5_000
    # Only the two Font Awesome stylesheets Voilà's template asks a CDN for may fail.
    allowed = ("font-awesome", "net::err", "failed to load resource")
    unexpected = [e for e in console_errors if not any(a in e.lower() for a in allowed)]
    assert not unexpected, unexpected

    keep = os.environ.get("XR_ITSLIVE_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in (before_png, after_png):
            shutil.copy(png, Path(keep) / png.name)
