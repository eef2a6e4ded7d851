"""tests/gpu/run_all.sh, the GPU verification script, where no GPU is present:
every item is SKIP with the reason, one line each, a TOTAL line, exit 0; and with
MHA_GPU_REQUIRED=1 the same items FAIL (exit 1). The environment is this
Python's (MHA_GPU_NO_INSTALL=1: no offline install). On a machine with a GPU
these skip: run the script itself there (a few minutes)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "gpu" / "run_all.sh"
NO_GPU = "no CUDA GPU (cupy.is_available() is False)"

try:
    from mha_checks.registry import gpu_notebooks
except ImportError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(REPO_ROOT))
    from mha_checks.registry import gpu_notebooks


def gpu_present() -> bool:
    try:
        import cupy
        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001 - no CuPy, or a broken CUDA install: no GPU
        return False


def run_script(tmp_path, *args, **extra) -> subprocess.CompletedProcess:
    if gpu_present():
        pytest.skip("this machine has a usable CUDA GPU: run `bash tests/gpu/run_all.sh` itself")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHA_GPU_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MHA_GPU_NO_INSTALL="1", MHA_GPU_OUT=str(tmp_path / "out"), **extra)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def results(proc) -> list:
    return [row for row in proc.stdout.splitlines() if row.startswith(("PASS", "FAIL", "SKIP"))]


def expected_items() -> int:
    # each notebook executed and graded, the pytest GPU tests, the three GPU benchmarks (mha, online, pruning)
    return 2 * len(gpu_notebooks()) + 4


@pytest.mark.timeout(120)
def test_without_a_gpu_every_item_is_skipped(tmp_path):
    proc = run_script(tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    rows, n = results(proc), expected_items()
    assert len(rows) == n, output
    assert all(row.startswith("SKIP  ") and NO_GPU in row for row in rows), output
    assert sum("pytest GPU tests" in row for row in rows) == 1
    assert re.fullmatch(rf"TOTAL  {n} items: 0 passed, 0 failed, {n} skipped \(\d+\.\d s\)",
                        proc.stdout.splitlines()[-1]), output


@pytest.mark.timeout(60)
def test_a_required_gpu_that_is_missing_fails(tmp_path):
    proc = run_script(tmp_path, MHA_GPU_REQUIRED="1")
    rows, n = results(proc), expected_items()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(rows) == n and all(row.startswith("FAIL  ") and "MHA_GPU_REQUIRED=1" in row for row in rows)
    assert proc.stdout.splitlines()[-1].startswith(f"TOTAL  {n} items: 0 passed, {n} failed, 0 skipped")


@pytest.mark.timeout(60)
def test_only_runs_the_items_it_names(tmp_path):
    proc = run_script(tmp_path, "--only", "grading,mha", MHA_GPU_REQUIRED="1")
    rows = results(proc)
    assert len(rows) == len(gpu_notebooks()) + 1, proc.stdout + proc.stderr
    assert all(" grading: " in row or row.startswith("FAIL  mha benchmark") for row in rows)
