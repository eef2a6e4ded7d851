import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # the mutants library

from mha_checks.backends import gpu_available  # noqa: E402
from autograder.notebooks import solution_namespace  # noqa: E402
from autograder.paths import SOLUTIONS_DIR  # noqa: E402

NEEDS_GPU = pytest.mark.skipif(
    not gpu_available(),
    reason="needs a CUDA GPU: CuPy is installed but cupy.is_available() is False on this machine")


def solution_notebook(assignment: str, notebook: str) -> Path:
    return SOLUTIONS_DIR / assignment / f"{notebook}.ipynb"


@pytest.fixture(scope="session")
def ch01_solutions():
    """The chapter 1 solution namespaces that run on this machine, by track."""
    spaces = {"numpy": solution_namespace(solution_notebook("ch01_single_head", "1_numpy")),
              "torch": solution_namespace(solution_notebook("ch01_single_head", "3_pytorch"))}
    if gpu_available():
        spaces["cupy"] = solution_namespace(solution_notebook("ch01_single_head", "2_cupy"))
    return spaces
