"""Where things live in a checkout of the course.

Everything that reads or writes course files goes through these names, so the
layout is stated once. Which chapters and notebooks exist is the registry's
business (:mod:`mha_checks.registry`), not this module's.
"""
from pathlib import Path

from mha_checks.cases import HIDDEN_DIR, REFERENCES_DIR

PACKAGE_DIR = Path(__file__).resolve().parent       # the grader (this package)
REPO_ROOT = PACKAGE_DIR.parent
CHECKS_DIR = REPO_ROOT / "mha_checks"               # the package students install
SOLUTIONS_DIR = REPO_ROOT / "solutions"             # nbgrader source notebooks
EXERCISES_DIR = REPO_ROOT / "exercises"             # nbgrader release notebooks (generated)
VISIBLE_CASES_DIR = REFERENCES_DIR                  # visible cases, shipped to students (generated)
HIDDEN_CASES_DIR = HIDDEN_DIR                       # hidden cases, the instructor's only (generated)
