"""The whole-cube benchmarks of S3 and clusters run, on tiny cubes, and check what they claim.

``benchmarks/bench_whole_cube.py`` (threads, a LocalCluster, a remote ``dask scheduler`` with
two workers, one of them SIGKILLed mid-run, a CLI SIGKILLed and resumed, every store compared)
and ``benchmarks/bench_whole_cube_s3.py`` (moto S3 with a counting middleware). No timings are
checked: the figures in docs/scaling.md come from running the scripts on the 1/16 cube.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

pytestmark = pytest.mark.slow


def run_script(name: str, *flags: str, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), "--quick", "--json", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return {"stdout": done.stdout, **json.loads(out.read_text())}


def test_cluster_runs_kill_and_resume_give_the_threaded_store(tmp_path):
    flags = ("--cluster", "--remote", "--kill-worker", "--resume", "--compare")
    figures = run_script("bench_whole_cube.py", *flags, out=tmp_path / "figures.json")
    runs = figures["runs"]
    assert set(runs) == {
        "threads", "LocalCluster(2)", "remote scheduler + 2 workers",
        "remote, a worker killed", "resume",
    }  # fmt: skip
    remote = runs["remote scheduler + 2 workers"]["peak_each"]
    assert {"scheduler", "worker w0", "worker w1"} <= set(remote)  # memory of each process
    killed = runs["remote, a worker killed"]
    assert killed["done_at_kill"] is not None and killed["killed_exit"] == -9
    assert killed["complete"] == 16  # every chunk written although a worker died
    assert 0 <= killed["w1_chunks_redone"] <= killed["w1_done_at_kill"] <= 16
    assert killed["cpu_each"]["worker w0"] > 0
    resume = runs["resume"]
    assert resume["first_exit"] == -9 and resume["consistent"]
    assert resume["second_written"] == 16 - resume["done_before"] and resume["done_before"] > 0
    assert figures["compare"] == dict.fromkeys(
        ("localcluster", "remote", "remote_killed", "resumed"), "identical"
    )
    assert "compare remote_killed with threads: identical" in figures["stdout"]


def test_s3_benchmark_counts_requests_and_bytes(tmp_path):
    figures = run_script("bench_whole_cube_s3.py", out=tmp_path / "figures.json")
    n_chunks = figures["stored_chunks"]
    reads = {k: v for k, v in figures["runs"].items() if k.startswith("S3 read")}
    clis = {k: v for k, v in figures["runs"].items() if k.startswith("CLI")}
    assert len(reads) == 3 and len(clis) == 2
    for name, run in {**reads, **clis}.items():
        assert run["errors"] == 0, (name, run["error_examples"])
        # every stored vx/vy chunk read exactly once, its bytes all answered
        assert run["chunk_GET"] == run["chunk_keys_read"] == n_chunks, name
        assert run["chunk_bytes"] == figures["stored_chunk_bytes"], name
        assert run["max_in_flight"] >= 2, name  # reads overlap (2 threads at least)
    for name, run in reads.items():
        assert run["same_values"], name
    for name, run in {**reads, **clis}.items():
        if "max_concurrency=1" in name:
            assert run["chunk_HEAD"] == 0, name  # the setting docs/scaling.md recommends
        else:
            assert run["chunk_HEAD"] == n_chunks, (
                f"{name}: s3fs sent {run['chunk_HEAD']} HEADs for {n_chunks} chunks; "
                "docs/scaling.md says one HEAD per chunk with its defaults: update it"
            )
    assert figures["settings (defaults)"]["s3fs.max_concurrency"] == 10
    assert figures["compare defaults / max_concurrency=1"] == "identical"
