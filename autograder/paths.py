"""Where things live in a checkout of the course.

Everything that reads or writes course files goes through these names, so the
layout is stated once.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"   # nbgrader source notebooks
EXERCISES_DIR = REPO_ROOT / "exercises"   # nbgrader release notebooks (generated)
REFERENCES_DIR = PACKAGE_DIR / "references"  # reference outputs (generated)

ASSIGNMENTS = ("ch01_single_head",)
NOTEBOOKS = ("1_numpy", "2_cupy", "3_pytorch")
GPU_NOTEBOOKS = ("2_cupy",)
