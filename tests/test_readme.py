"""The README's examples run offline, as written, from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO, requires_shared

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 2


@requires_shared
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    script = tmp_path / f"readme_{index}.py"
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\n" + BLOCKS[index])
    out = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
