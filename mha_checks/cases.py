"""Stored test cases: the arguments, the expected outputs, and the outputs that
known mistakes give, as ``.npz`` files of NumPy arrays.

- Visible cases ship with the course package (``mha_checks/references/``).
- Hidden cases stay with the instructor (``autograder/hidden_cases/`` in a
  checkout of the repository; never in the package students install). The
  grader's sandbox sees their *inputs* only.

Keys are ``function/split/NN/group/name`` where group is ``args``,
``expected`` or ``variant.<label>``; keys under ``meta/`` describe the file
(for example the seed the hidden cases were drawn with).
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCES_DIR = PACKAGE_DIR / "references"
# Only a checkout of the repository has this folder beside the package.
HIDDEN_DIR = PACKAGE_DIR.parent / "autograder" / "hidden_cases"

SPLITS = ("visible", "hidden")
VISIBLE_SEED = 2026  # visible cases are public: their seed is fixed
META = "meta"


class Case:
    """One stored test case: the arguments, the expected outputs, and the outputs
    that known mistakes would give (``variants``, label -> outputs)."""

    def __init__(self, function, split, index, args, expected, variants):
        self.function, self.split, self.index = function, split, index
        self.args, self.expected, self.variants = args, expected, variants

    @property
    def has_floats(self) -> bool:
        return any(a.dtype.kind == "f" for a in self.args.values())

    @property
    def dtype(self) -> str:
        floats = [a.dtype for a in self.args.values() if a.dtype.kind == "f"]
        return str(floats[0]) if floats else "float64"

    def describe(self) -> str:
        parts = []
        for name, a in grouped_args(self.args).items():
            if isinstance(a, dict):
                inner = ", ".join(f"{k} {tuple(v.shape)}" for k, v in a.items())
                dtypes = sorted({str(v.dtype) for v in a.values()})
                parts.append(f"{name}: {'/'.join(dtypes)} {{{inner}}}")
            elif a.ndim == 0:
                parts.append(f"{name}={a.item()!r}")
            else:
                parts.append(f"{name}: {a.dtype} {tuple(a.shape)}")
        return f"{self.function}({', '.join(parts)})"


# A dict argument (a layer's ``params``) is stored as one array per entry,
# ``params.w_q``, ``params.b_o``...; the function receives the dict back.
DICT_SEPARATOR = "."


def stored_args(args: dict) -> dict:
    """Arguments as stored: NumPy arrays, with a dict argument spread over ``name.key`` entries."""
    flat = {}
    for name, value in args.items():
        if isinstance(value, dict):
            flat.update({f"{name}{DICT_SEPARATOR}{k}": np.asarray(v) for k, v in value.items()})
        else:
            flat[name] = np.asarray(value)
    return flat


def grouped_args(args: dict) -> dict:
    """Stored arguments with the ``name.key`` entries gathered back into dicts, in stored order."""
    grouped = {}
    for name, value in args.items():
        if DICT_SEPARATOR in name:
            outer, key = name.split(DICT_SEPARATOR, 1)
            grouped.setdefault(outer, {})[key] = value
        else:
            grouped[name] = value
    return grouped


def plain_arg(value):
    """A stored argument as a student's function gets it: a 0-d array becomes a Python number."""
    if isinstance(value, dict):
        return {k: plain_arg(v) for k, v in value.items()}
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value


def plain_args(args: dict) -> dict:
    return {name: plain_arg(value) for name, value in grouped_args(args).items()}


def case_file(assignment: str, split: str, references_dir=REFERENCES_DIR, hidden_dir=HIDDEN_DIR) -> Path:
    return Path(hidden_dir if split == "hidden" else references_dir) / f"{assignment}.npz"


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def load_cases(assignment: str, references_dir: str = str(REFERENCES_DIR),
               hidden_dir: str = str(HIDDEN_DIR)) -> dict:
    """{(function, split): [Case, ...]} from every case file of the assignment found here.

    The package's file holds the visible cases (in a sandbox: the inputs of all
    cases); the hidden file exists only on the instructor's side.
    """
    files = [p for p in (case_file(assignment, "visible", references_dir),
                         case_file(assignment, "hidden", hidden_dir=hidden_dir)) if p.exists()]
    if not files:
        raise FileNotFoundError(
            f"the cases of {assignment} are missing ({case_file(assignment, 'visible', references_dir)}): "
            "an instructor regenerates them with `python -m autograder references`; a student "
            "reinstalls the course package.")
    grouped = defaultdict(lambda: defaultdict(dict))
    for path in files:
        with np.load(path) as data:
            for key in data.files:
                if key.startswith(META + "/"):
                    continue
                function, split, index, group, name = key.split("/")
                grouped[(function, split, int(index))][group][name] = data[key]
    cases = defaultdict(list)
    for (function, split, index), groups in sorted(grouped.items()):
        variants = {g.split(".", 1)[1]: arrays for g, arrays in groups.items() if g.startswith("variant.")}
        cases[(function, split)].append(Case(
            function, split, index, dict(groups.get("args", {})), dict(groups.get("expected", {})),
            variants))
    return dict(cases)


# --------------------------------------------------------------------------
# Building (from a solution namespace; the instructor's command drives it)
# --------------------------------------------------------------------------

def case_rng(seed: int, function: str) -> np.random.Generator:
    """One generator per (seed, function): adding a function leaves the others' cases alone."""
    return np.random.default_rng([seed, zlib.crc32(function.encode())])


def build_cases(chapter, solution, split: str, seed: int) -> dict:
    """{(check, split): [{group: {name: array}}]} for every declared function and question.

    ``solution(notebook)`` is the namespace of one of the chapter's solution
    notebooks: functions' expected outputs come from the reference notebook,
    a question's answer from the notebook that asks it. Known mistakes are
    produced by the same solution on transformed inputs, so no second
    implementation of anything lives in the checks.
    """
    sol = solution(chapter.reference_notebook)
    cases = {}
    for function in chapter.functions:
        make_inputs = function.hidden if split == "hidden" else function.visible
        items = []
        for args in make_inputs(case_rng(seed, function.name)):
            args = stored_args(args)
            groups = {"args": args, "expected": function.expected(sol, args)}
            for mistake in (*function.mistakes, *function.inherited):
                groups.update(_variants(function, mistake, sol, args))
            items.append(groups)
        cases[(function.name, split)] = items
    if split == "visible":
        for custom in chapter.custom:
            if custom.reference is not None:
                produced = custom.reference(sol)
                cases[(custom.name, split)] = [{"expected": {n: np.asarray(v) for n, v in produced.items()}}]
    if split == "hidden":  # a question's answer is never shipped to students
        for question in chapter.questions:
            asked = solution(question.notebook)
            groups = {"expected": {"answer": np.asarray(question.answer(asked))}}
            groups.update({f"variant.{m.label}": {"answer": np.asarray(m.outputs(asked))}
                           for m in question.mistakes})
            cases[(question.name, split)] = [groups]
    return cases


def _variants(function, mistake, sol: dict, args: dict) -> dict:
    produced = mistake.outputs(sol, **plain_args(args))
    label = getattr(mistake, "key", mistake.label)
    if produced is None:
        return {}
    if isinstance(produced, list):
        return {f"variant.{label}_{i}": function.as_outputs(p) for i, p in enumerate(produced)}
    return {f"variant.{label}": function.as_outputs(produced)}


def flatten(cases: dict) -> dict:
    """{(function, split): [ {group: {name: array}} ]} -> {"function/split/NN/group/name": array}."""
    flat = {}
    for (function, split), items in cases.items():
        for i, groups in enumerate(items):
            for group, arrays in groups.items():
                for name, value in arrays.items():
                    flat[f"{function}/{split}/{i:02d}/{group}/{name}"] = np.asarray(value)
    return flat
