"""Reference outputs: generated from the solution notebooks, stored as .npz,
loaded by the checks.

``python -m autograder references`` regenerates them; ``stale_references``
tells whether the committed files still match what the solutions produce.
Keys are ``function/split/NN/group/name`` where group is ``args``,
``expected``, ``flags`` or ``variant.<label>``.
"""
import importlib
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from .checking import Case
from .paths import ASSIGNMENTS, REFERENCES_DIR, SOLUTIONS_DIR


def chapter_module(assignment: str):
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    return importlib.import_module(f"autograder.{assignment}")


def reference_path(assignment: str, references_dir: Path = REFERENCES_DIR) -> Path:
    return Path(references_dir) / f"{assignment}.npz"


def build_references(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> dict:
    """Run the assignment's reference solution on its cases; returns the flat key -> array dict."""
    from .notebooks import solution_namespace  # needs nbformat: instructors only
    module = chapter_module(assignment)
    namespace = solution_namespace(Path(solutions_dir) / assignment / f"{module.REFERENCE_NOTEBOOK}.ipynb")
    return flatten(module.build_cases(namespace))


def flatten(cases: dict) -> dict:
    """{(function, split): [ {group: {name: array}} ]} -> {"function/split/NN/group/name": array}."""
    flat = {}
    for (function, split), items in cases.items():
        for i, groups in enumerate(items):
            for group, arrays in groups.items():
                for name, value in arrays.items():
                    flat[f"{function}/{split}/{i:02d}/{group}/{name}"] = np.asarray(value)
    return flat


def write_references(assignment: str, references_dir: Path = REFERENCES_DIR,
                     solutions_dir: Path = SOLUTIONS_DIR) -> list:
    path = reference_path(assignment, references_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **build_references(assignment, solutions_dir))
    load_cases.cache_clear()
    return [path]


def stale_references(assignments=ASSIGNMENTS, solutions_dir: Path = SOLUTIONS_DIR,
                     references_dir: Path = REFERENCES_DIR) -> list:
    """Descriptions of every committed reference that differs from a fresh build."""
    stale = []
    for assignment in assignments:
        path = reference_path(assignment, references_dir)
        if not path.exists():
            stale.append(f"{path}: missing")
            continue
        fresh = build_references(assignment, solutions_dir)
        with np.load(path) as stored:
            stored = {k: stored[k] for k in stored.files}
        for key in sorted(set(fresh) ^ set(stored)):
            stale.append(f"{path.name}:{key}: {'only in the fresh build' if key in fresh else 'no longer produced'}")
        for key in sorted(set(fresh) & set(stored)):
            if not same_array(fresh[key], stored[key]):
                stale.append(f"{path.name}:{key}: values differ")
    return stale


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        # Bit-for-bit is too strict across NumPy builds (BLAS summation order);
        # a hundred ulps is far below anything a check could notice.
        return bool(np.allclose(a, b, rtol=100 * np.finfo(a.dtype).eps, atol=0, equal_nan=True))
    return bool(np.array_equal(a, b))


def write_case_inputs(assignment: str, path: Path, references_dir: Path = REFERENCES_DIR) -> Path:
    """A copy of the references holding only the case inputs: what a sandbox may see."""
    with np.load(reference_path(assignment, references_dir)) as data:
        inputs = {key: data[key] for key in data.files if key.split("/")[3] == "args"}
    np.savez(path, **inputs)
    return Path(path)


@lru_cache(maxsize=None)
def load_cases(assignment: str, references_dir: str = str(REFERENCES_DIR)) -> dict:
    """{(function, split): [Case, ...]} from the stored references."""
    path = reference_path(assignment, Path(references_dir))
    if not path.exists():
        raise FileNotFoundError(
            f"reference outputs {path} are missing: an instructor regenerates them with "
            "`python -m autograder references`; a student reinstalls the course package.")
    grouped = defaultdict(lambda: defaultdict(dict))
    with np.load(path) as data:
        for key in data.files:
            function, split, index, group, name = key.split("/")
            grouped[(function, split, int(index))][group][name] = data[key]
    cases = defaultdict(list)
    for (function, split, index), groups in sorted(grouped.items()):
        variants = {g.split(".", 1)[1]: arrays for g, arrays in groups.items() if g.startswith("variant.")}
        cases[(function, split)].append(Case(
            function, split, index, dict(groups.get("args", {})), dict(groups.get("expected", {})),
            variants, {k: bool(v) for k, v in groups.get("flags", {}).items()}))
    return dict(cases)
