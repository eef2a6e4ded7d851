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
    flat = flatten(build_cases(chapter(assignment), _solutions(assignment, solutions_dir), split, seed))
    flat[SEED_KEY] = np.asarray(seed, dtype=np.int64)
    return flat


def _solutions(assignment: str, solutions_dir: Path):
    """``solution(notebook)``: a solution notebook's namespace, run once in this process for all the
    files built from it (the visible and hidden cases, the generated files)."""
    from .notebooks import solution_run  # needs nbformat: instructors only
    return lambda notebook: solution_run(Path(solutions_dir) / assignment / f"{notebook}.ipynb")


def build_generated(assignment: str, generated, solutions_dir: Path = SOLUTIONS_DIR) -> dict:
    """One generated data file's arrays, built from its solution notebook."""
    sol = _solutions(assignment, solutions_dir)(generated.notebook)
    return {name: np.asarray(value) for name, value in generated.build(sol).items()}


def write_generated(assignment: str, solutions_dir: Path = SOLUTIONS_DIR, retrain: bool = False) -> list:
    """The chapter's generated data files, written before its cases, which may read them. A trained
    one (a model) is a committed artifact: written only when missing or when ``retrain`` asks."""
    written = []
    for generated in chapter(assignment).generated:
        path = Path(generated.path)
        if generated.trained and path.exists() and not retrain:
            continue
        np.savez_compressed(path, **build_generated(assignment, generated, solutions_dir))
        written.append(path)
    return written


def _stored(path: Path) -> dict:
    with np.load(path) as stored:
        return {k: stored[k] for k in stored.files}


def stale_generated(assignment: str, solutions_dir: Path = SOLUTIONS_DIR) -> list:
    """What is wrong with the chapter's generated files: a file built from committed data that a fresh
    build no longer equals, or a trained file that no longer does what the chapter says of it."""
    stale = []
    for generated in chapter(assignment).generated:
        path = Path(generated.path)
        label = f"{path.parent.name}/{path.name}"
        if not path.exists():
            stale.append(f"{path}: missing")
        elif generated.trained:
            stale += [f"{label}: {problem}" for problem in
                      generated.behaviour(_stored(path), _solutions(assignment, solutions_dir))]
        else:
            stale += _differences(label, build_generated(assignment, generated, solutions_dir), _stored(path))
    return stale


def _differences(label: str, fresh: dict, stored: dict, bounds=None) -> list:
    """``label:key: ...`` for every array of a fresh build that is missing from, or differs from, the stored
    one. ``bounds(key)`` names the tolerance of a key's comparison (default ``reproducible``)."""
    found = [f"{label}:{key}: {'only in the fresh build' if key in fresh else 'no longer produced'}"
             for key in sorted(set(fresh) ^ set(stored))]
    return found + [f"{label}:{key}: values differ" for key in sorted(set(fresh) & set(stored))
                    if not same_array(fresh[key], stored[key], bounds(key) if bounds else "reproducible")]


def write_references(assignment: str, hidden_seed: int = DEFAULT_HIDDEN_SEED,
                     references_dir: Path = VISIBLE_CASES_DIR, hidden_dir: Path = HIDDEN_CASES_DIR,
                     solutions_dir: Path = SOLUTIONS_DIR, retrain: bool = False) -> list:
    written = write_generated(assignment, solutions_dir, retrain) if references_dir == VISIBLE_CASES_DIR else []
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
            label = f"{path.parent.name}/{path.name}"
            stale += _differences(label, fresh, _stored(path), lambda key: _bound(assignment, key))
    return stale


def _bound(assignment: str, key: str) -> str:
    """The named tolerance that a stored case's array is regenerated within: its check's own, when it
    declares one (``Function.reproducible``)."""
    check = chapter(assignment).checks.get(key.split("/")[0])
    return getattr(check, "reproducible", "reproducible")


def same_array(a: np.ndarray, b: np.ndarray, bound: str = "reproducible") -> bool:
    """Equal, up to what another CPU or BLAS build changes: the order of float sums. A value near zero
    made by cancellation can differ in every digit while the array agrees to a few ulps of its largest
    value, so the bound is in units of the dtype's epsilon times that value (the named bound ``bound``)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    ulps, _ = named(bound)
    finite = np.abs(b[np.isfinite(b)])
    tolerance = ulps * np.finfo(a.dtype).eps
    scale = float(finite.max()) if finite.size else 0.0
    return bool(np.allclose(a, b, rtol=tolerance, atol=tolerance * scale, equal_nan=True))


def write_case_inputs(assignment: str, path, references_dir: Path = VISIBLE_CASES_DIR,
                      hidden_dir: Path = HIDDEN_CASES_DIR, splits=("visible",)):
    """One file (a path, or a binary stream) holding only the inputs of the cases of ``splits``: what a
    sandbox may see. The visible ones are in its file system; the hidden ones reach it only after the
    student's cells and visible checks ran (:mod:`autograder.protocol`)."""
    inputs = {}
    for split in splits:
        with np.load(case_file(assignment, split, references_dir, hidden_dir)) as data:
            inputs.update({key: data[key] for key in data.files
                           if not key.startswith(META + "/") and key.split("/")[3] == "args"})
    np.savez(path, **inputs)
    return path
