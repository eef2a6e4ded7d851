"""Reference outputs: generated from the solution notebooks, stored as .npz.

``python -m autograder references [--hidden-seed N]`` regenerates them:

- the visible cases, into the course package students install
  (``mha_checks/references/<assignment>.npz``), always from the course's
  fixed seed;
- the hidden cases, into ``autograder/hidden_cases/<assignment>.npz``, which
  no student package contains, drawn from ``--hidden-seed`` (the course's
  default, or an instructor's private one). The file records its seed, so the
  staleness check rebuilds it from the same seed and grading uses whatever
  hidden cases the instructor generated.

``stale_references`` tells whether the committed files still match what the
solutions produce.
"""
from pathlib import Path

import numpy as np

from mha_checks import registry
from mha_checks.cases import META, VISIBLE_SEED, build_cases, case_file, flatten, load_cases
from mha_checks.chapters import chapter
from mha_checks.tolerances import named

from .paths import HIDDEN_CASES_DIR, SOLUTIONS_DIR, VISIBLE_CASES_DIR

DEFAULT_HIDDEN_SEED = 1  # the course's; an instructor's private seed makes memorised outputs useless
SEED_KEY = f"{META}/seed"


def build_references(assignment: str, split: str, seed: int, solutions_dir: Path = SOLUTIONS_DIR) -> dict:
    """Run the assignment's reference solution on one split's cases; the flat key -> array dict."""
    from .notebooks import solution_namespace  # needs nbformat: instructors only
    namespaces = {}

    def solution(notebook: str) -> dict:
        if notebook not in namespaces:
            namespaces[notebook] = solution_namespace(Path(solutions_dir) / assignment / f"{notebook}.ipynb")
        return namespaces[notebook]

    flat = flatten(build_cases(chapter(assignment), solution, split, seed))
    flat[SEED_KEY] = np.asarray(seed, dtype=np.int64)
    return flat


def build_generated(assignment: str, generated, solutions_dir: Path = SOLUTIONS_DIR) -> dict:
    """One generated data file's arrays, built from its solution notebook."""
    from .notebooks import solution_namespace
    sol = solution_namespace(Path(solutions_dir) / assignment / f"{generated.notebook}.ipynb")
    return {name: np.asarray(value) for name, value in generated.build(sol).items()}


def write_generated(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> list:
    """The chapter's generated data files (a trained model), written before its cases, which may read them."""
    written = []
    for generated in chapter(assignment).generated:
        path = Path(generated.path)
        np.savez_compressed(path, **build_generated(assignment, generated, solutions_dir))
        written.append(path)
    return written


def stale_generated(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> list:
    stale = []
    for generated in chapter(assignment).generated:
        path = Path(generated.path)
        if not path.exists():
            stale.append(f"{path}: missing")
            continue
        fresh = build_generated(assignment, generated, solutions_dir)
        with np.load(path) as stored:
            stored = {k: stored[k] for k in stored.files}
        label = f"{path.parent.name}/{path.name}"
        stale += [f"{label}:{key}: {'only in the fresh build' if key in fresh else 'no longer produced'}"
                  for key in sorted(set(fresh) ^ set(stored))]
        stale += [f"{label}:{key}: values differ" for key in sorted(set(fresh) & set(stored))
                  if not same_array(fresh[key], stored[key])]
    return stale


def write_references(assignment: str, hidden_seed: int = DEFAULT_HIDDEN_SEED,
                     references_dir: Path = VISIBLE_CASES_DIR, hidden_dir: Path = HIDDEN_CASES_DIR,
                     solutions_dir: Path = SOLUTIONS_DIR) -> list:
    written = write_generated(assignment, solutions_dir) if references_dir == VISIBLE_CASES_DIR else []
    for split, seed in (("visible", VISIBLE_SEED), ("hidden", hidden_seed)):
        path = case_file(assignment, split, references_dir, hidden_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **build_references(assignment, split, seed, solutions_dir))
        written.append(path)
    load_cases.cache_clear()
    return written


def stored_seed(path: Path):
    with np.load(path) as data:
        return int(data[SEED_KEY]) if SEED_KEY in data.files else None


def stale_references(assignments=None, solutions_dir: Path = SOLUTIONS_DIR,
                     references_dir: Path = VISIBLE_CASES_DIR, hidden_dir: Path = HIDDEN_CASES_DIR) -> list:
    """Descriptions of every committed reference that differs from a fresh build from its own seed."""
    stale = []
    for assignment in assignments or registry.assignments():
        if references_dir == VISIBLE_CASES_DIR:
            stale += stale_generated(assignment, solutions_dir)
        for split in ("visible", "hidden"):
            path = case_file(assignment, split, references_dir, hidden_dir)
            if not path.exists():
                stale.append(f"{path}: missing")
                continue
            seed = VISIBLE_SEED if split == "visible" else stored_seed(path)
            if seed is None:
                stale.append(f"{path}: records no seed")
                continue
            fresh = build_references(assignment, split, seed, solutions_dir)
            with np.load(path) as stored:
                stored = {k: stored[k] for k in stored.files}
            label = f"{path.parent.name}/{path.name}"
            for key in sorted(set(fresh) ^ set(stored)):
                stale.append(f"{label}:{key}: {'only in the fresh build' if key in fresh else 'no longer produced'}")
            for key in sorted(set(fresh) & set(stored)):
                if not same_array(fresh[key], stored[key]):
                    stale.append(f"{label}:{key}: values differ")
    return stale


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        # Bit-for-bit is too strict across NumPy builds (BLAS summation order).
        ulps, _ = named("reproducible_ulps")
        return bool(np.allclose(a, b, rtol=ulps * np.finfo(a.dtype).eps, atol=0, equal_nan=True))
    return bool(np.array_equal(a, b))


def write_case_inputs(assignment: str, path: Path, references_dir: Path = VISIBLE_CASES_DIR,
                      hidden_dir: Path = HIDDEN_CASES_DIR) -> Path:
    """One file holding only the inputs of every case, visible and hidden: what a sandbox may see."""
    inputs = {}
    for split in ("visible", "hidden"):
        with np.load(case_file(assignment, split, references_dir, hidden_dir)) as data:
            inputs.update({key: data[key] for key in data.files
                           if not key.startswith(META + "/") and key.split("/")[3] == "args"})
    np.savez(path, **inputs)
    return Path(path)
