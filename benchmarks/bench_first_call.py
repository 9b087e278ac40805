"""The first inversion of a fresh install: numba's compilation, with a cold and a warm cache.

The numba kernels are compiled on first use and cached on disk (``cache=True``), so only the
first process on a machine pays for the compilation. Each run here is a new Python process
with its own ``NUMBA_CACHE_DIR``:

1. **cold**: an empty cache folder, as after ``pip install``;
2. **warm**: the same folder again, filled by the cold run.

Each process times ``import xr_itslive``, the first ``invert(...).compute()`` of the bundled
demo cube (``xr_itslive.demo_cube_path()``, the settings of ``xr-itslive demo``: error
weights, robust, uncertainty) and then the README's first example, as written (it needs
``../shared/data``; skipped without it), and last the demo cube again with the steps compiled
as one kernel (what an inversion of a whole cube runs, from
``COMPILED_STEPS_MIN_PIXELS`` pixel-variables up: on a cold cache, what its first task adds).
It also reports whether the one-line notice about the compilation appeared on stderr.

Run: ``python benchmarks/bench_first_call.py [--repeat 1] [--no-readme]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
started = time.perf_counter()
import xr_itslive
timings = {"import": time.perf_counter() - started}
cube = xr_itslive.open_cube(xr_itslive.demo_cube_path())
started = time.perf_counter()
xr_itslive.invert(cube, weights="error", robust=True, uncertainty=True).compute()
timings["demo invert"] = time.perf_counter() - started
if len(sys.argv) > 1:
    code = open(sys.argv[1]).read()
    started = time.perf_counter()
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    timings["README example"] = time.perf_counter() - started
# what a whole cube's first task adds: its steps run as one compiled kernel (from
# COMPILED_STEPS_MIN_PIXELS pixel-variables up), the other kernels are loaded by now
from xr_itslive.workflows import invert as workflow
workflow.COMPILED_STEPS_MIN_PIXELS = 1
started = time.perf_counter()
xr_itslive.invert(cube, weights="error", robust=True).compute()
timings["compiled steps"] = time.perf_counter() - started
print("TIMINGS " + json.dumps(timings))
"""

NOTICE = re.compile(r"compiling the numba kernels", re.I)


def readme_example() -> str | None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    shared = REPO.parent / "shared" / "data" / "itslive"
    if not blocks or not shared.exists():
        return None
    return "import matplotlib\nmatplotlib.use('Agg')\n" + blocks[0]


def run_child(cache_dir: Path, readme: Path | None) -> tuple[dict, float, bool]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    command = [sys.executable, "-c", CHILD, *([str(readme)] if readme else [])]
    import time

    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"the child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("TIMINGS "))
    return json.loads(line[len("TIMINGS ") :]), total, bool(NOTICE.search(out.stderr))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="cold + warm pairs to run")
    parser.add_argument("--no-readme", action="store_true", help="only the demo cube")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="first_call_"))
    try:
        readme = None
        code = None if args.no_readme else readme_example()
        if code is not None:
            readme = work / "readme_example.py"
            readme.write_text(code)
        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
        for attempt in range(args.repeat):
            cache = work / f"numba_cache_{attempt}"
            cache.mkdir()
            for label in ("cold", "warm"):
                timings, total, notice = run_child(cache, readme)
                parts = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
                print(f"{label} cache: process {total:.2f} s ({parts}); notice: "
                      f"{'yes' if notice else 'no'}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
