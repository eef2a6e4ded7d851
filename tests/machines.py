"""Processor settings other than this machine's own, for the tests of everything that trains.

A training run is bit-reproducible only on one instruction set, math library build and thread
count: each changes the order of float sums, and the differences grow over the steps. Another
student's laptop, Colab or a grader's server is another such machine. The tests of what trains
(chapter pages, notebooks, the course's models, questions about a student's run) therefore run
under settings this machine can imitate: PyTorch's CPU kernels (``ATEN_CPU_CAPABILITY``), the
thread count, and MKL's reproducibility mode (``MKL_CBWR``). PyTorch reads them once, when a
process starts, so each setting runs in a fresh process. ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are never changed: some machines set them so that OpenBLAS does not crash.

By default each test takes the settings of ``SETTINGS`` that its cost allows (``settings(n)``);
``MHA_ALL_SETTINGS=1`` runs every test under every setting (a few minutes more, before a release).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setting:
    name: str
    env: dict
    threads: int

    def __str__(self) -> str:
        return self.name


# The kernels other than the native one (which the rest of the suite uses), with one and two threads,
# and MKL's reproducibility mode. "avx2" on a machine without AVX2 falls back to the default kernels.
SETTINGS = (
    Setting("kernels-default-1-thread", {"ATEN_CPU_CAPABILITY": "default"}, 1),
    Setting("kernels-avx2-2-threads", {"ATEN_CPU_CAPABILITY": "avx2"}, 2),
    Setting("mkl-compatible-2-threads", {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, 2),
    Setting("kernels-avx2-1-thread", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}, 1),
)


def all_settings() -> bool:
    return os.environ.get("MHA_ALL_SETTINGS") == "1"


def settings(n: int = len(SETTINGS), first: int = 0) -> list:
    """``n`` settings from the ``first`` on (every one with ``MHA_ALL_SETTINGS=1``), as pytest parameters.
    Tests that cost more take fewer; between them, the default run covers every setting."""
    chosen = SETTINGS if all_settings() else SETTINGS[first:first + n]
    return [pytest.param(s, id=s.name) for s in chosen]


_RUNNER = """
import json, sys
import torch
threads = {threads}
set_threads = torch.set_num_threads
set_threads(threads)
# The code under test pins its own thread count (one, for speed on a busy machine); the setting decides.
torch.set_num_threads = lambda n: set_threads(threads)
sys.path[:0] = [{tests!r}, {repo!r}]
from {module} import {function}
print("\\n@@RESULT@@" + json.dumps({function}(*json.loads({args!r}))))
"""


def run_under(setting: Setting, module: str, function: str, *args, timeout: float = 600):
    """``module.function(*args)`` in a fresh process under ``setting``; its JSON-able result.
    ``module`` is a module of tests/ (or the repository), ``args`` JSON-able."""
    code = _RUNNER.format(threads=setting.threads, tests=str(TESTS), repo=str(REPO_ROOT), module=module,
                          function=function, args=json.dumps(args))
    env = {**os.environ, **setting.env, "OMP_NUM_THREADS": str(setting.threads),
           "MKL_NUM_THREADS": str(setting.threads)}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if run.returncode != 0 or "@@RESULT@@" not in run.stdout:
        raise AssertionError(f"{module}.{function} under {setting} failed (exit {run.returncode}):\n"
                             f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.rsplit("@@RESULT@@", 1)[1])


def capability() -> str:
    """What PyTorch's CPU kernels are in this process (to show in a report)."""
    import torch
    return torch.backends.cpu.get_cpu_capability()
