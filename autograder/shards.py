"""Grade a class on many machines: ``grade --shard K/N`` on each, then ``merge``.

**The partition.** Shard K of N (K counts from 1, so the shards of a
4-way split are ``1/4`` … ``4/4``) grades the notebooks whose key
``"<student>/<assignment>/<notebook>"`` (the ids of ``grades.csv``) hashes to
K: the first 8 bytes of the key's SHA-256, read as a big-endian number,
modulo N, plus 1 (:func:`shard_of`). Every shard discovers the whole class,
exactly as a single run would (student ids are decided from all the
submissions together), and keeps its part. The choice depends on nothing but
the key and N: not on the machine, ``--jobs``, the order in which the file
system lists the submissions, or which other shards ran.

*Why a hash and not "sort the class and take every N-th notebook".* Sorted
round-robin balances to within one notebook, but a late submission from a new
student shifts every notebook sorted after it to another shard, and a shard's
saved results live in its own output folder, so re-running the shards after
a late submission would regrade most of the class. With the hash, a new
notebook lands in one shard and every other notebook stays where it was: each
shard re-run reuses its saved results (``results/``) and grades only what is
new or changed. The price is balance: shard sizes vary like a binomial
count, about ``sqrt(M / N)`` notebooks around the mean for M notebooks, e.g.
about ±1.5 % for 30 000 notebooks on 8 shards (the test suite checks that
such a split stays within 5 % of the mean). Changing N moves most notebooks
with either scheme; keep N fixed for a term.

**What a shard writes.** What a normal run writes, limited to its notebooks
(``results/``, ``logs/``, ``feedback/``, ``grades.csv``), the whole
``students.csv`` (the same in every shard), and, once it has finished,
``shard.json``: K, N, the grading settings, the keys of the whole class, and
for each of its own notebooks the digest of what decided its grade and the
SHA-256 of its saved result file as it was when the shard finished. A shard
folder without ``shard.json`` is a shard that did not finish.

**The merge** (:func:`merge`) reads only the shards' ``shard.json``,
``students.csv`` and saved results; it needs neither the submissions nor a
sandbox. A shard folder may have been edited after it finished, by mistake or
not, so nothing in it is counted unchecked. Merge refuses, and writes
nothing, when:

- a name in a ``shard.json`` is not one the grader gives: a student id that
  the safe-name rule of :mod:`submissions` would change (``../x``, ``/x``), or
  an assignment or notebook the course registry does not have; such names
  would become paths outside the shard or output folder;
- a shard is absent (naming the shard and its notebooks), or two folders
  claim the same shard and are not identical copies;
- the shards come from different classes, splits or settings;
- the class the shards recorded is not every notebook of every student in
  ``students.csv`` (a student or notebook dropped from, or added to, every
  ``shard.json``), or ``students.csv`` differs between shards;
- a saved result is missing, lies outside its shard folder (a link), is not
  the result of the notebook and file its shard recorded, or its bytes are
  not those its shard recorded when it finished (edited since);
- a saved result is not one the grader could write for its notebook: its
  maximum is not the instructor's notebook's points
  (:func:`instructor.load_assignment`), its tests are not that notebook's tests,
  a test scores neither 0 nor its points, its score is not the sum of its
  tests' scores, or a field has the wrong type;
- a file merge would write leads out of ``out_dir`` through a link.

The messages name each file, notebook or student concerned and say what to
do (usually: delete the bad result, run its shard again, which regrades only
what is gone, and merge again). The SHA-256 catches a result changed after its
shard finished, not a ``shard.json`` rewritten to match; the checks on the
score still hold then. Otherwise merge writes ``grades.csv``, ``logs/``,
``feedback/``, ``results/`` and ``students.csv`` with the same writers as
:func:`grading.grade` (:mod:`results`), so its output equals a single run's except the
``seconds`` column (and the time in each graded log's first line), which
records how long each notebook took in its shard.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Sequence, Union

from mha_checks import registry

from .instructor import load_assignment
from .results import (FAILED, GRADED, MISSING, NEEDS_GPU, NotebookResult, finish_class,
                      result_path, save_result, write_notebook_outputs)
from .submissions import MAX_ID_LENGTH, GradingInputError, sanitize_student_ids

MANIFEST = "shard.json"
FORMAT = 2  # 2: the SHA-256 of each saved result file, so that merge can tell an edited one
PARTITION = "sha256('<student>/<assignment>/<notebook>')[:8] big-endian mod N, plus 1"
NAMES_SHOWN = 10  # notebooks named in one message before "and N more"


class MergeRefused(Exception):
    """The shards do not add up to one class; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------- the partition


def parse_shard(value: Union[str, Sequence[int]]) -> tuple[int, int]:
    """``"K/N"`` or ``(K, N)`` with 1 <= K <= N; raises GradingInputError saying what is wrong."""
    if isinstance(value, str):
        parts = value.strip().split("/")
        try:
            k, n = (int(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            k, n = None, None
        if k is None:
            raise GradingInputError(f"{value!r} is not K/N: write the shard as two whole numbers, "
                                    "e.g. --shard 2/4 for the second of four shards")
    else:
        k, n = value
    if not (isinstance(k, int) and isinstance(n, int)) or n < 1 or not 1 <= k <= n:
        raise GradingInputError(
            f"shard {k}/{n} does not exist: N must be at least 1 and K between 1 and N "
            "(shards count from 1; a 0-based index such as Kubernetes' JOB_COMPLETION_INDEX "
            "is passed as --shard $((JOB_COMPLETION_INDEX + 1))/N)")
    return k, n


def shard_of(key: Sequence[str], n: int) -> int:
    """The shard (1..n) of the notebook ``(student, assignment, notebook)``."""
    digest = hashlib.sha256("/".join(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def select(submissions: Sequence, k: int, n: int) -> list:
    """The submissions of shard ``k`` of ``n``, in the order given."""
    return [s for s in submissions if shard_of((s.student, s.assignment, s.notebook), n) == k]


# --------------------------------------------------------------------------- the shard's record


def clear_manifest(out_dir: Path) -> None:
    """Forget an earlier run's record: only a finished shard has a ``shard.json``."""
    (Path(out_dir) / MANIFEST).unlink(missing_ok=True)


def write_manifest(out_dir: Path, shard: tuple[int, int], everything: Sequence,
                   results: Sequence, settings: dict) -> Path:
    """Record a finished shard: K, N, settings, the class's keys, this shard's digests, and the
    SHA-256 of each saved result file as it is now (``result_sha256``, in the order of
    ``notebooks``), which merge checks so that a result edited afterwards is not counted."""
    k, n = shard
    out_dir = Path(out_dir)
    record = {"format": FORMAT, "shard": k, "of": n, "partition": PARTITION, "settings": settings,
              "class": [[s.student, s.assignment, s.notebook] for s in everything],
              "notebooks": [[r.student, r.assignment, r.notebook, r.digest] for r in results],
              "result_sha256": [_sha256(result_path(out_dir, r.student, r.assignment, r.notebook)
                                        .read_bytes()) for r in results]}
    path = out_dir / MANIFEST
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False,
                                     encoding="utf-8") as f:
        json.dump(record, f)  # compact: a large class has tens of thousands of keys
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
    return path


@dataclass
class _Shard:
    folder: Path
    k: int
    n: int
    partition: str
    settings: dict
    keys: list           # the whole class, (student, assignment, notebook) tuples
    notebooks: dict      # this shard's key -> digest of what decides its grade
    saved: dict          # this shard's key -> SHA-256 of its result file when the shard finished

    @property
    def name(self) -> str:
        return f"shard {self.k}/{self.n} ({self.folder})"

    def record(self) -> tuple:
        """What the shard recorded, wherever it lies: equal for two identical copies."""
        return (self.k, self.n, self.partition, self.settings, self.keys, self.notebooks, self.saved)

    def command(self) -> str:
        return f"`python -m autograder grade SUBMISSIONS --out {self.folder} --shard {self.k}/{self.n}`"


def _read_manifest(folder: Path) -> _Shard:
    path = folder / MANIFEST
    if not path.is_file():
        raise MergeRefused(f"{folder} has no {MANIFEST}: it is not the output of a finished "
                           "`python -m autograder grade --shard K/N` run (a shard that was "
                           "interrupted writes it only when it finishes; run it again).")
    if not _inside(path, folder):
        raise MergeRefused(f"{path} is a link to a file outside its shard folder; grade that "
                           "shard again.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}: it was written "
                             "by another grader version")
        if not isinstance(record["settings"], dict):
            raise ValueError("its settings are not a mapping")
        keys = [_checked_key(key, path) for key in record["class"]]
        notebooks, saved = _recorded_results(record["notebooks"], record["result_sha256"], path)
        if len(set(keys)) != len(keys):
            raise ValueError("a notebook appears twice in its class")
        return _Shard(folder, int(record["shard"]), int(record["of"]), str(record["partition"]),
                      record["settings"], keys, notebooks, saved)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MergeRefused(f"{path} cannot be read ({err}); grade that shard again.") from None


def _recorded_results(entries: list, sha256s: list, manifest: Path) -> tuple:
    """``{key: digest}`` and ``{key: SHA-256 of its result file}`` of a shard's own notebooks."""
    if len(entries) != len(sha256s):
        raise ValueError("result_sha256 does not list one digest per notebook")
    notebooks, saved = {}, {}
    for entry, sha256 in zip(entries, sha256s):
        if not isinstance(entry, list) or len(entry) != 4:
            raise ValueError(f"{entry!r} is not [student, assignment, notebook, digest]")
        key = _checked_key(entry[:3], manifest)
        if key in notebooks:
            raise ValueError(f"{' '.join(key)} appears twice in its notebooks")
        notebooks[key], saved[key] = str(entry[3]), str(sha256)
    return notebooks, saved


def _checked_key(key, manifest: Path) -> tuple:
    """A key read from a shard record, refused unless its names are ones the grader gives.

    The names become folders under the shard's and the output's ``results/``, ``logs/`` and
    ``feedback/``; a name such as ``../x`` or ``/x`` would read and write elsewhere."""
    why = _unsafe_key(key)
    if why:
        shown = tuple(key) if isinstance(key, list) else key
        raise MergeRefused(f"{manifest} names {shown!r}, but {why}. The grader never records "
                           f"such a name, so {MANIFEST} was edited or damaged: grade that shard "
                           "again, into a new --out folder if you do not trust this one.")
    return tuple(key)


def _unsafe_key(key) -> Optional[str]:
    if not (isinstance(key, list) and len(key) == 3 and all(isinstance(p, str) for p in key)):
        return "it is not three names (student, assignment, notebook)"
    student, assignment, notebook = key
    if sanitize_student_ids([student])[student] != student:
        return (f"{student!r} is not a student id the grader gives (letters, digits, '_', '-' and "
                f"'.', at most {MAX_ID_LENGTH}, neither starting nor ending with '_', '-' or '.')")
    try:
        registry.notebook(assignment, notebook)
    except KeyError:
        return f"{assignment!r} {notebook!r} is not a notebook of the course"
    return None


# --------------------------------------------------------------------------- merging


def merge(shard_dirs: Sequence, out_dir, feedback: bool = True, verbose: bool = True) -> list:
    """Combine finished shards into ``out_dir`` as one ``grade`` run over the class would write it.

    Raises :class:`MergeRefused` (and writes nothing) when the shards do not
    make up exactly one class graded one way, or a saved result is not one
    their grader wrote; returns the results otherwise.
    """
    say = print if verbose else (lambda *a, **k: None)
    out_dir = Path(out_dir).resolve()
    # Sorted, so that the arguments' order (a shell glob's, say) changes nothing.
    shards = sorted((_read_manifest(f) for f in _shard_folders(shard_dirs, out_dir)),
                    key=lambda s: (s.k, str(s.folder)))

    splits = sorted({s.n for s in shards})
    if len(splits) > 1:
        raise MergeRefused("the shards come from different splits (N = "
                           + ", ".join(map(str, splits)) + "): "
                           + "; ".join(f"{s.folder} is {s.k}/{s.n}" for s in shards)
                           + ". Merge the shards of one --shard K/N split.")
    n = splits[0]
    problems = _consistency_problems(shards)
    if problems:
        raise MergeRefused("\n".join(problems))
    keys = shards[0].keys
    problems += _duplicate_claims(shards) + _missing_shards(shards, n)
    students = _students_csv(shards, problems)
    if students is not None:
        problems += _roster_problems(students, keys)
    results, problems_with_results = _checked_results(keys, shards)
    problems += problems_with_results + _outputs_outside(out_dir, results)
    if problems:
        raise MergeRefused("\n".join(problems))

    say(f"Merging {len(results)} notebooks from {len(shards)} shard(s) of {n} into {out_dir}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_manifest(out_dir)  # the merged folder is a whole class, not a shard
    shutil.copyfile(students, out_dir / "students.csv")
    for result in results:
        save_result(result, result_path(out_dir, result.student, result.assignment, result.notebook))
        write_notebook_outputs(result, out_dir, feedback)
    return finish_class(results, out_dir, feedback, say)


def _shard_folders(shard_dirs: Sequence, out_dir: Path) -> list:
    folders = []
    for d in shard_dirs:
        folder = Path(d).resolve()
        if not folder.is_dir():
            raise GradingInputError(f"{d} is not a folder: give the --out folders of the "
                                    "`grade --shard K/N` runs.")
        if out_dir == folder or folder in out_dir.parents:
            raise GradingInputError(f"--out {out_dir} is the shard folder {folder} or inside it: "
                                    "merge into a folder of its own.")
        if folder not in folders:
            folders.append(folder)
    if not folders:
        raise GradingInputError("give at least one shard folder to merge.")
    return folders


def _consistency_problems(shards: list) -> list:
    """Differences that mean the shards are not parts of one run over one class."""
    problems = []
    first = shards[0]
    for shard in shards:
        if shard.partition != PARTITION:
            problems.append(f"{shard.name} was split by another rule ({shard.partition!r}; this "
                            f"grader uses {PARTITION!r}): grade all shards with one grader version.")
            continue
        expected = {key for key in shard.keys if shard_of(key, shard.n) == shard.k}
        if set(shard.notebooks) != expected:
            problems.append(f"{shard.name} does not hold exactly the notebooks of shard "
                            f"{shard.k}/{shard.n} of its class: its {MANIFEST} was changed by hand "
                            "or written by another grader version. Grade that shard again.")
    for shard in shards[1:]:
        if shard.keys != first.keys:
            here, there = set(shard.keys), set(first.keys)
            only_here = [k for k in shard.keys if k not in there]
            only_there = [k for k in first.keys if k not in here]
            problems.append(
                f"{shard.name} and {first.name} saw different classes (were submissions added or "
                "removed between the runs, or another SUBMISSIONS or --assignment given?)"
                + (f"; only in {shard.name}: {_names(' '.join(k) for k in only_here)}" if only_here else "")
                + (f"; only in {first.name}: {_names(' '.join(k) for k in only_there)}" if only_there else "")
                + ". Grade every shard from the same submissions.")
        if shard.settings != first.settings:
            differ = sorted(name for name in set(shard.settings) | set(first.settings)
                            if shard.settings.get(name) != first.settings.get(name))
            problems.append(f"{shard.name} and {first.name} were graded with different settings "
                            f"({', '.join(differ)}): give every shard the same options, grader "
                            "version and kind of machine (GPU or not).")
    return problems


def _duplicate_claims(shards: list) -> list:
    """Folders that claim the same shard must be identical copies: otherwise the grade that
    stands would depend on which folder's name sorts first."""
    problems = []
    by_index: dict = {}
    for shard in shards:
        by_index.setdefault(shard.k, []).append(shard)
    for k, claims in sorted(by_index.items()):
        first = claims[0]
        if all(claim.record() == first.record() for claim in claims[1:]):
            continue
        changed = [key for key in first.notebooks
                   if any((c.notebooks[key], c.saved[key]) != (first.notebooks[key], first.saved[key])
                          for c in claims[1:])]
        problems.append(
            f"{len(claims)} folders claim shard {k}/{first.n} and differ: "
            + " and ".join(str(c.folder) for c in claims)
            + (f"; {len(changed)} notebook(s) have different results: "
               + _names(f"{' '.join(key)} in {' and '.join(c.name for c in claims)}" for key in changed)
               if changed else "")
            + ". Give one folder per shard: keep the one you trust, or grade that shard again "
              "into a new folder, and merge again.")
    return problems


def _missing_shards(shards: list, n: int) -> list:
    problems = []
    present = {s.k for s in shards}
    for k in range(1, n + 1):
        if k in present:
            continue
        lost = [key for key in shards[0].keys if shard_of(key, n) == k]
        problems.append(f"shard {k}/{n} is missing (none of the folders given is shard {k}/{n}), "
                        f"so {len(lost)} notebook(s) have no grade"
                        + (f": {_names(' '.join(key) for key in lost)}" if lost else "")
                        + f". Run `python -m autograder grade SUBMISSIONS --out DIR --shard {k}/{n}` "
                          "with the same settings and merge again with its DIR.")
    return problems


def _students_csv(shards: list, problems: list) -> Optional[Path]:
    """The shards' students.csv, which must be the same in all of them."""
    paths = [s.folder / "students.csv" for s in shards]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        problems.append(f"no students.csv in {_names(missing)}: grade those shards again.")
        return None
    linked = [str(p) for p, s in zip(paths, shards) if not _inside(p, s.folder)]
    if linked:
        problems.append(f"{_names(linked)} link to files outside their shard folders: grade "
                        "those shards again.")
        return None
    first = paths[0].read_bytes()
    differ = [str(p) for p in paths[1:] if p.read_bytes() != first]
    if differ:
        problems.append(f"students.csv differs between {paths[0]} and {_names(differ)}: the "
                        "shards did not see the same submissions. Grade every shard from the "
                        "same submissions.")
    return paths[0]


def _roster_problems(students_csv: Path, keys: list) -> list:
    """The class the shards recorded must be every notebook of every student in students.csv,
    as ``grade`` finds it: a name dropped from (or added to) every shard.json would otherwise
    vanish from (or appear in) grades.csv unnoticed."""
    try:
        with open(students_csv, newline="", encoding="utf-8") as f:
            roster = [row["student"] for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, KeyError, csv.Error) as err:
        return [f"{students_csv} cannot be read ({err}): grade the shards again."]
    again = ("The shards' records were edited, or come from other submissions than their "
             "students.csv: grade every shard again from the same submissions.")
    recorded = set(keys)
    recorded_students = {student for student, _, _ in keys}
    assignments = sorted({assignment for _, assignment, _ in keys})
    problems = []
    vanished = [s for s in roster if s not in recorded_students]
    if vanished:
        problems.append(f"{students_csv} lists {len(vanished)} student(s) of whom no {MANIFEST} "
                        f"records a notebook, so they would vanish from grades.csv: "
                        f"{_names(vanished)}. {again}")
    lacking = [(s, a, nb.name) for s in roster if s in recorded_students for a in assignments
               for nb in registry.chapter(a).notebooks if (s, a, nb.name) not in recorded]
    if lacking:
        problems.append(f"{len(lacking)} notebook(s) of students in {students_csv} are missing "
                        f"from the class the shards' {MANIFEST} record, so they would have no row "
                        f"in grades.csv: {_names(' '.join(key) for key in lacking)}. {again}")
    on_roster = set(roster)
    strangers = [key for key in keys if key[0] not in on_roster]
    if strangers:
        problems.append(f"{len(strangers)} notebook(s) in the class the shards' {MANIFEST} record "
                        f"belong to no student in {students_csv}: "
                        f"{_names(' '.join(key) for key in strangers)}. {again}")
    return problems


# --------------------------------------------------------------------------- checking each result


def _checked_results(keys: list, shards: list) -> tuple:
    """Every notebook's result from the shards that hold it, each copy checked before it counts;
    returns the results and the problems found (one line per bad file)."""
    holders: dict = {}
    for shard in shards:
        for key in shard.notebooks:
            holders.setdefault(key, []).append(shard)
    instructor: dict = {}
    results, bad, to_regrade = [], [], {}
    for key in keys:
        chosen = None
        for shard in holders.get(key, ()):  # none: its missing shard is reported on its own
            result, why = _checked_result(shard, key, _instructor_notebook(key, instructor))
            if why:
                bad.append(f"{result_path(shard.folder, *key)}: {why}")
                to_regrade[shard.folder] = shard
            elif chosen is None:
                chosen = result
        if chosen is not None:
            results.append(chosen)
    if not bad:
        return results, []
    return results, [
        f"{len(bad)} saved result(s) cannot be counted:\n" + _lines(bad)
        + "\nThe grader never leaves such a file: it was edited, damaged or removed after its "
          "shard finished. To fix it, delete those files and run "
        + " and ".join(shard.command() for shard in to_regrade.values())
        + " with the same settings (each regrades only what was deleted), then merge again."]


def _instructor_notebook(key: tuple, loaded: dict):
    _, assignment, notebook = key
    if (assignment, notebook) not in loaded:
        try:
            loaded[assignment, notebook] = load_assignment(assignment, notebook)
        except (OSError, ValueError) as err:
            raise GradingInputError(
                f"the instructor's notebook {assignment}/{notebook} cannot be read ({err}): run "
                "merge in the course checkout the shards were graded with.") from None
    return loaded[assignment, notebook]


def _checked_result(shard: _Shard, key: tuple, spec) -> tuple:
    """``(result, None)`` when the saved result is the one the shard recorded and a score the
    grader could give; ``(None, why not)`` otherwise."""
    path = result_path(shard.folder, *key)
    if not _inside(path, shard.folder):
        return None, "lies outside its shard folder (a link?)"
    try:
        data = path.read_bytes()
    except OSError:
        return None, "is missing or cannot be read"
    # Checked on the bytes that are then parsed: nothing can change between the two.
    if _sha256(data) != shard.saved[key]:
        return None, f"changed since its shard finished (its SHA-256 is not the one in {MANIFEST})"
    try:
        saved = json.loads(data)
    except ValueError:
        return None, "is not JSON"
    why = _shape_problem(saved)
    if why:
        return None, why
    result = NotebookResult(**saved)
    if (result.student, result.assignment, result.notebook) != key:
        return None, f"is the result of {result.student} {result.assignment} {result.notebook}"
    if result.digest != shard.notebooks[key]:
        return None, f"was graded from another file or with other settings than {MANIFEST} records"
    why = _score_problem(result, spec)
    return (None, why) if why else (result, None)


_TEST_FIELDS = {"grade_id", "points", "score", "hidden", "messages"}
_CELL_FIELDS = {"label", "origin", "source", "error"}


def _shape_problem(saved) -> Optional[str]:
    """What makes a saved result unlike every one the grader writes, in the types its writers use."""
    if not isinstance(saved, dict) or set(saved) != {f.name for f in fields(NotebookResult)}:
        return "its fields are not those of a saved result"
    for name in ("student", "assignment", "notebook", "status", "output", "source", "digest"):
        if not isinstance(saved[name], str):
            return f"{name} is not text"
    for name in ("score", "max_score", "seconds"):
        if saved[name] is not None and not _is_number(saved[name]):
            return f"{name} is not a number"
    for name in ("notes", "grader_errors"):
        if not _strings(saved[name]):
            return f"{name} is not a list of strings"
    tests = _dicts(saved["tests"], _TEST_FIELDS)
    if tests is None or not all(isinstance(t["grade_id"], str) and _is_number(t["points"])
                                and _is_number(t["score"]) and isinstance(t["hidden"], bool)
                                and _strings(t["messages"]) for t in tests):
        return "tests is not a list of test results"
    cells = _dicts(saved["cells"], _CELL_FIELDS)
    if cells is None or not all(isinstance(c["label"], str) and isinstance(c["origin"], str)
                                and isinstance(c["source"], str)
                                and (c["error"] is None or isinstance(c["error"], str))
                                for c in cells):
        return "cells is not a list of cells"
    return None


def _score_problem(result: NotebookResult, spec) -> Optional[str]:
    """Why a result's score is not one the grader gives for this notebook, or None."""
    if result.max_score != spec.max_score:
        return (f"its maximum is {_number(result.max_score)}, but the instructor's notebook "
                f"gives {spec.max_score:g} points")
    planned = [(test.grade_id, test.points) for test in spec.plan]
    if result.tests and [(t["grade_id"], t["points"]) for t in result.tests] != planned:
        return "its tests are not the instructor's notebook's (other grade ids or points)"
    for test in result.tests:
        if test["score"] not in (0, test["points"]):
            return (f"test {test['grade_id']} scored {test['score']:g}, but a test scores 0 or "
                    f"all its {test['points']:g} points")
    if result.status != GRADED:
        if not (result.status in (MISSING, NEEDS_GPU) or result.status.startswith(f"{FAILED}: ")):
            return f"status {result.status!r} is not one the grader writes"
        return None if result.score is None else f"status {result.status!r} has a score"
    if result.score is None or len(result.tests) != len(planned):
        return "it is graded without a score for each test"
    total = sum(test["score"] for test in result.tests)
    if result.score != total:
        return f"its score {result.score:g} is not the sum of its tests' scores ({total:g})"
    return None


def _outputs_outside(out_dir: Path, results: list) -> list:
    """The files merge would write that a link in an existing output folder sends elsewhere."""
    if not out_dir.exists():
        return []
    paths = [out_dir / "grades.csv", out_dir / "students.csv"]
    for r in results:
        # Where save_result and write_notebook_outputs put a notebook's files.
        paths += [result_path(out_dir, r.student, r.assignment, r.notebook),
                  out_dir / "logs" / r.student / r.assignment / f"{r.notebook}.log",
                  out_dir / "feedback" / r.student / r.assignment / f"{r.notebook}.html"]
    outside = [str(p) for p in paths if not _inside(p, out_dir)]
    if not outside:
        return []
    return [f"{len(outside)} file(s) merge would write lead outside the output folder {out_dir} "
            f"through a link: {_names(outside)}. Merge into a new, empty --out folder."]


# --------------------------------------------------------------------------- small helpers


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with every link followed, lies in ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number(x) -> str:
    return f"{x:g}" if _is_number(x) else repr(x)


def _strings(x) -> bool:
    return isinstance(x, list) and all(isinstance(item, str) for item in x)


def _dicts(x, keys: set) -> Optional[list]:
    """``x`` when it is a list of dicts with exactly ``keys``, else None."""
    if isinstance(x, list) and all(isinstance(d, dict) and set(d) == keys for d in x):
        return x
    return None


def _names(items) -> str:
    items = list(items)
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def _lines(items: list) -> str:
    shown = [f"  {item}" for item in items[:NAMES_SHOWN]]
    return "\n".join(shown + ([f"  and {len(items) - NAMES_SHOWN} more"] if len(items) > NAMES_SHOWN else []))
