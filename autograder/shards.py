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
its own notebooks with the digest of each result. A shard folder without
``shard.json`` is a shard that did not finish.

**The merge** (:func:`merge`) reads only the shards' ``shard.json`` and saved
results; it needs neither the submissions nor a sandbox. It refuses, and
writes nothing, when a shard is absent (naming the shard and its
notebooks), when a result is missing or no longer matches its shard's record,
when the same notebook was graded in two shards from different files or
settings (different digests), or when the shards come from different
classes, splits or settings. Otherwise it writes ``grades.csv``, ``logs/``,
``feedback/``, ``results/`` and ``students.csv`` with the same writers as
:func:`grading.grade`, so its output equals a single run's except the
``seconds`` column (and the time in each graded log's first line), which
records how long each notebook took in its shard.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .grading import (finish_class, load_result, result_path, save_result,
                      write_notebook_outputs)
from .submissions import GradingInputError

MANIFEST = "shard.json"
FORMAT = 1
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
    """Record a finished shard: K, N, settings, the class's keys, and this shard's digests."""
    k, n = shard
    record = {"format": FORMAT, "shard": k, "of": n, "partition": PARTITION, "settings": settings,
              "class": [[s.student, s.assignment, s.notebook] for s in everything],
              "notebooks": [[r.student, r.assignment, r.notebook, r.digest] for r in results]}
    path = Path(out_dir) / MANIFEST
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
    notebooks: dict      # this shard's key -> digest

    @property
    def name(self) -> str:
        return f"shard {self.k}/{self.n} ({self.folder})"


def _read_manifest(folder: Path) -> _Shard:
    path = folder / MANIFEST
    if not path.is_file():
        raise MergeRefused(f"{folder} has no {MANIFEST}: it is not the output of a finished "
                           "`python -m autograder grade --shard K/N` run (a shard that was "
                           "interrupted writes it only when it finishes; run it again).")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
        return _Shard(folder, int(record["shard"]), int(record["of"]), record["partition"],
                      record["settings"], [tuple(key) for key in record["class"]],
                      {(s, a, nb): digest for s, a, nb, digest in record["notebooks"]})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MergeRefused(f"{path} cannot be read ({err}); grade that shard again.") from None


# --------------------------------------------------------------------------- merging


def merge(shard_dirs: Sequence, out_dir, feedback: bool = True, verbose: bool = True) -> list:
    """Combine finished shards into ``out_dir`` as one ``grade`` run over the class would write it.

    Raises :class:`MergeRefused` (and writes nothing) when the shards do not
    make up exactly one class graded one way; returns the results otherwise.
    """
    say = print if verbose else (lambda *a, **k: None)
    out_dir = Path(out_dir).resolve()
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
    # Sorted, so that the arguments' order (a shell glob's, say) changes nothing.
    shards = sorted((_read_manifest(f) for f in folders), key=lambda s: (s.k, str(s.folder)))

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

    chosen: dict = {}     # key -> (shard, digest): the first shard, in K order, that has it
    conflicts: dict = {}  # key -> [shard names]
    for shard in shards:
        for key, digest in shard.notebooks.items():
            if key not in chosen:
                chosen[key] = (shard, digest)
            elif chosen[key][1] != digest:
                conflicts.setdefault(key, [chosen[key][0].name]).append(shard.name)
    if conflicts:
        problems.append(f"{len(conflicts)} notebook(s) were graded in two shards with different "
                        "digests (from a different file or different settings), so which grade "
                        "stands is not known: "
                        + _names(f"{' '.join(key)} in {' and '.join(names)}"
                                 for key, names in conflicts.items())
                        + ". Grade the class again with one set of shards.")
    present = {s.k for s in shards}
    for k in range(1, n + 1):
        if k in present:
            continue
        lost = [key for key in keys if shard_of(key, n) == k]
        problems.append(f"shard {k}/{n} is missing (none of the folders given is shard {k}/{n}), "
                        f"so {len(lost)} notebook(s) have no grade"
                        + (f": {_names(' '.join(key) for key in lost)}" if lost else "")
                        + f". Run `python -m autograder grade SUBMISSIONS --out DIR --shard {k}/{n}` "
                          "with the same settings and merge again with its DIR.")

    results = []
    unreadable = []
    for key in keys:
        if key not in chosen:
            continue  # reported above with its missing shard
        shard, digest = chosen[key]
        result = load_result(result_path(shard.folder, *key), digest)
        if result is None or (result.student, result.assignment, result.notebook) != key:
            unreadable.append(f"{' '.join(key)} in {shard.name}")
        else:
            results.append(result)
    if unreadable:
        problems.append(f"{len(unreadable)} saved result(s) are missing, unreadable or changed "
                        f"since their shard finished: {_names(unreadable)}. Run those shards "
                        "again (they reuse their other results) and merge again.")
    students = _students_csv(shards, problems)
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


def _students_csv(shards: list, problems: list) -> Optional[Path]:
    """The shards' students.csv, which must be the same in all of them."""
    paths = [s.folder / "students.csv" for s in shards]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        problems.append(f"no students.csv in {_names(missing)}: grade those shards again.")
        return None
    first = paths[0].read_bytes()
    differ = [str(p) for p in paths[1:] if p.read_bytes() != first]
    if differ:
        problems.append(f"students.csv differs between {paths[0]} and {_names(differ)}: the "
                        "shards did not see the same submissions. Grade every shard from the "
                        "same submissions.")
    return paths[0]


def _names(items) -> str:
    items = list(items)
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")
