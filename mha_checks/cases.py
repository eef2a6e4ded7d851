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

import io
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
            if isinstance(a, (dict, list)):
                parts.append(f"{name}: {_describe_tree(a)}")
            elif a.ndim == 0:
                parts.append(f"{name}={a.item()!r}")
            else:
                parts.append(f"{name}: {a.dtype} {tuple(a.shape)}")
        return f"{self.function}({', '.join(parts)})"


def _describe_tree(tree) -> str:
    """``float32 {w_q (8, 12), ...}``, or for a model ``{embed (11, 24), layers [2 × {...}], ...}``."""
    if isinstance(tree, list):
        return f"[{len(tree)} × {_describe_tree(tree[0])}]"
    leaves = [v for v in tree.values() if not isinstance(v, (dict, list))]
    dtypes = "/".join(sorted({str(v.dtype) for v in leaves if v.dtype.kind == "f"}))
    inner = ", ".join(f"{k} {_describe_tree(v)}" if isinstance(v, (dict, list))
                      else f"{k} {tuple(v.shape)}" if v.ndim else f"{k}={v.item()!r}"
                      for k, v in tree.items())
    return f"{dtypes} {{{inner}}}".strip()


# A dict argument (a layer's ``params``) is stored as one array per entry,
# ``params.w_q``, ``params.b_o``...; the function receives the dict back. Entries
# nest: a model's list of layers is ``model.layers.0.w_q``, ``model.layers.1.w_q``...,
# and comes back as a list of dicts (keys that are all 0, 1, 2... make a list).
DICT_SEPARATOR = "."


def _spread(prefix: str, value, flat: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _spread(f"{prefix}{DICT_SEPARATOR}{k}", v, flat)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            _spread(f"{prefix}{DICT_SEPARATOR}{i}", v, flat)
    else:
        flat[prefix] = np.asarray(value)


def stored_args(args: dict) -> dict:
    """Arguments as stored: NumPy arrays, with a dict argument spread over ``name.key`` entries."""
    flat = {}
    for name, value in args.items():
        _spread(name, value, flat)
    return flat


def _as_lists(tree: dict):
    """Dicts whose keys are 0, 1, 2... (a list of layers, as stored) become lists again."""
    tree = {k: _as_lists(v) if isinstance(v, dict) else v for k, v in tree.items()}
    if tree and all(k.isdigit() for k in tree) and sorted(map(int, tree)) == list(range(len(tree))):
        return [tree[str(i)] for i in range(len(tree))]
    return tree


def grouped_args(args: dict) -> dict:
    """Stored arguments with the ``name.key`` entries gathered back into dicts, in stored order."""
    grouped = {}
    for name, value in args.items():
        *outer, key = name.split(DICT_SEPARATOR)
        node = grouped
        for part in outer:
            node = node.setdefault(part, {})
        node[key] = value
    return {k: _as_lists(v) if isinstance(v, dict) else v for k, v in grouped.items()}


def plain_arg(value):
    """A stored argument as a student's function gets it: a 0-d array becomes a Python number."""
    if isinstance(value, dict):
        return {k: plain_arg(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_arg(v) for v in value]
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
    return _cases_in(files)


def add_case_inputs(assignment: str, data: bytes) -> None:
    """Add the cases in ``data`` (an ``.npz`` file's bytes) to the assignment's loaded ones: in the
    grader's sandbox, the hidden cases' inputs, which arrive only after the student's cells ran."""
    load_cases(assignment).update(_cases_in([io.BytesIO(data)]))


def _cases_in(files) -> dict:
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
            if question.run is not None:
                continue  # judged against the student's own run: nothing to store
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
