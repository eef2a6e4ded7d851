"""How fast the grader is, and what its sandbox costs against plain nbgrader.

:func:`benchmark` grades the same submissions three ways in one run, so the
numbers share one machine and one load:

1. plain ``nbgrader autograde`` in a stock nbgrader course (one call for the
   whole class; the ``generate_assignment`` that fills its gradebook is timed
   separately and not counted);
2. :func:`autograder.grading.grade` with ``jobs=1``;
3. :func:`autograder.grading.grade` with ``jobs=N``.

It reports throughput (notebooks per minute), the overhead of each of ours as
a ratio to nbgrader's time, whether ``jobs=1`` and ``jobs=N`` gave the same
results, and where nbgrader's scores and ours differ (on honest submissions
they should not). nbgrader's time includes starting its interpreter (it is a
command); ours is timed in this process, which has the grader imported already.

:func:`make_class` writes a synthetic class to benchmark when no real one is at hand.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from mha_checks import registry
from mha_checks.backends import gpu_available

from .grading import grade
from .results import GRADED
from .nbgrader_config import db_url, last_error, make_course, run_nbgrader
from .paths import EXERCISES_DIR, SOLUTIONS_DIR
from .release import IGNORED
from .submissions import discover

FIRST_CHAPTER = registry.assignments()[0]
# The synthetic class hands in every notebook a machine without a GPU can grade.
SYNTHETIC_NOTEBOOKS = tuple(nb.name for nb in registry.chapter(FIRST_CHAPTER).notebooks if not nb.needs_gpu)
SCORE_TOLERANCE = 1e-6  # nbgrader stores scores as floats; ours are sums of points

# Folders of work_dir that every benchmark replaces.
CLASS, NBGRADER_COURSE, OURS_SERIAL, OURS_PARALLEL = "class", "nbgrader-course", "ours-jobs1", "ours-jobsN"


class BenchmarkInputError(ValueError):
    """Submissions the benchmark cannot use; the message says why."""


# --------------------------------------------------------------------------- a synthetic class


def make_class(dest, n_students: int, notebooks: Sequence[str] = SYNTHETIC_NOTEBOOKS,
               assignment: str = FIRST_CHAPTER) -> Path:
    """Write ``dest/studentNN/<assignment>/<notebook>.ipynb`` for ``n_students`` students.

    Odd students hand in the solution notebook (full marks), even ones the
    blank release notebook (zero): a class that exercises passing and failing
    tests, with scores both graders must agree on.
    """
    dest = Path(dest)
    for number in range(1, n_students + 1):
        origin = SOLUTIONS_DIR if number % 2 == 1 else EXERCISES_DIR
        folder = dest / f"student{number:02d}" / assignment
        folder.mkdir(parents=True, exist_ok=True)
        for notebook in notebooks:
            shutil.copyfile(origin / assignment / f"{notebook}.ipynb", folder / f"{notebook}.ipynb")
    return dest


# --------------------------------------------------------------------------- the benchmark


def benchmark(submissions, work_dir, jobs: int = 2, assignment: str = FIRST_CHAPTER,
              notebooks: Optional[Sequence[str]] = None) -> dict:
    """Grade ``submissions`` with nbgrader, ours with jobs=1 and ours with ``jobs``; compare.

    ``notebooks`` (default: all of the course's) limits what is graded; GPU
    notebooks are left out on a machine without a GPU. Everything is written
    under ``work_dir``. Returns the figures :func:`format_report` prints.
    """
    work_dir = Path(work_dir).resolve()
    has_gpu = gpu_available()
    chapter = registry.chapter(assignment)
    wanted = list(notebooks or (nb.name for nb in chapter.notebooks))
    skipped = [nb for nb in wanted if chapter.notebook(nb).needs_gpu and not has_gpu]
    wanted = [nb for nb in wanted if nb not in skipped]

    _refuse_overlap(submissions, work_dir)
    class_dir = _fresh_dir(work_dir / CLASS)
    keys = copy_submissions(submissions, class_dir, assignment, wanted)
    if not keys:
        raise BenchmarkInputError(f"no notebooks of {assignment} ({', '.join(wanted)}) in {submissions}")

    load_before = _load_average()
    plain = time_nbgrader(class_dir, _fresh_dir(work_dir / NBGRADER_COURSE), assignment, keys)
    serial = time_ours(class_dir, _fresh_dir(work_dir / OURS_SERIAL), assignment, 1, keys, has_gpu)
    parallel = time_ours(class_dir, _fresh_dir(work_dir / OURS_PARALLEL), assignment, jobs, keys,
                         has_gpu)

    differences = [key for key in keys if serial["results"][key] != parallel["results"][key]]
    disagreements = score_disagreements(serial["results"], plain["scores"])
    count = len(keys)
    return {
        "assignment": assignment, "notebooks": count, "students": len({s for s, _ in keys}),
        "graded_notebooks": wanted, "skipped_notebooks": skipped, "jobs": jobs,
        # Other work on the machine skews the times; the load average tells whether there was any.
        "load_before": load_before,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "nbgrader_generate_seconds": plain["generate_seconds"],
        "nbgrader_seconds": plain["seconds"], "nbgrader_error": plain["error"],
        "ours_serial_seconds": serial["seconds"], "ours_parallel_seconds": parallel["seconds"],
        "nbgrader_per_minute": per_minute(count, plain["seconds"]),
        "ours_serial_per_minute": per_minute(count, serial["seconds"]),
        "ours_parallel_per_minute": per_minute(count, parallel["seconds"]),
        "overhead_serial": serial["seconds"] / plain["seconds"],
        "overhead_parallel": parallel["seconds"] / plain["seconds"],
        "parallel_matches_serial": not differences,
        "parallel_differences": [_row(k, serial, parallel, plain) for k in differences],
        "agrees_with_nbgrader": not disagreements,
        "disagreements": [_row(k, serial, parallel, plain) for k in disagreements],
        "scores": [_row(k, serial, parallel, plain) for k in keys],
    }


def copy_submissions(submissions, class_dir: Path, assignment: str,
                     notebooks: Sequence[str]) -> list:
    """Copy the wanted notebooks into ``class_dir`` in nbgrader's layout; return (student, notebook).

    Both graders then read the very same files, whatever layout (or zip) the
    instructor's submissions came in.
    """
    found = discover(submissions, {assignment: [nb.name for nb in registry.chapter(assignment).notebooks]},
                     [assignment],
                     workdir=class_dir.parent / "unpacked")
    keys = []
    for sub in found.submissions:
        if sub.path is None or sub.notebook not in notebooks:
            continue
        target = class_dir / sub.student / assignment / f"{sub.notebook}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sub.path, target)
        keys.append((sub.student, sub.notebook))
    return sorted(keys)


def time_nbgrader(class_dir: Path, course: Path, assignment: str, keys: list) -> dict:
    """Plain nbgrader on a stock course: generate_assignment, then one timed autograde."""
    from nbgrader.api import Gradebook, MissingEntry

    make_course(course)
    shutil.copytree(SOLUTIONS_DIR / assignment, course / "source" / assignment, ignore=IGNORED)
    generate = run_nbgrader(["generate_assignment", assignment, "--force"], course).check()
    shutil.copytree(class_dir, course / "submitted")
    autograde = run_nbgrader(["autograde", assignment, "--force"], course)

    scores = {}
    gradebook = Gradebook(db_url(course))
    try:
        for student, notebook in keys:
            try:
                scores[(student, notebook)] = gradebook.find_submission_notebook(
                    notebook, assignment, student).score
            except MissingEntry:  # nbgrader failed on that student
                scores[(student, notebook)] = None
    finally:
        gradebook.close()
    # A failed autograde still reports its time: the scores it could not give show as disagreements.
    error = None if autograde.ok else last_error(autograde.output)
    return {"generate_seconds": generate.seconds, "seconds": autograde.seconds,
            "scores": scores, "error": error}


def time_ours(class_dir: Path, out_dir: Path, assignment: str, jobs: int, keys: list,
              has_gpu: bool) -> dict:
    """Our grader with ``jobs`` workers, fresh (no saved results reused) and with feedback pages."""
    started = time.monotonic()
    results = grade(class_dir, out_dir, assignments=[assignment], jobs=jobs, fresh=True,
                    feedback=True, gpu_available=has_gpu, verbose=False)
    seconds = time.monotonic() - started
    # grade() lists the notebooks nobody handed in as "missing"; only the benchmarked ones count.
    by_key = {(r.student, r.notebook): (r.status, r.score) for r in results}
    return {"seconds": seconds, "results": {key: by_key.get(key) for key in keys}}


def score_disagreements(ours: dict, nbgrader: dict) -> list:
    """The (student, notebook) keys where our score is not nbgrader's (or either has none)."""
    def agree(key) -> bool:
        status, score = ours[key] or (None, None)
        theirs = nbgrader.get(key)
        return (status == GRADED and score is not None and theirs is not None
                and abs(score - theirs) <= SCORE_TOLERANCE)
    return [key for key in ours if not agree(key)]


def per_minute(count: int, seconds: float) -> float:
    return count * 60.0 / seconds if seconds > 0 else math.inf


def _row(key, serial: dict, parallel: dict, plain: dict) -> dict:
    (student, notebook), none = key, (None, None)
    serial_status, serial_score = serial["results"][key] or none
    parallel_status, parallel_score = parallel["results"][key] or none
    return {"student": student, "notebook": notebook,
            "serial_status": serial_status, "serial_score": serial_score,
            "parallel_status": parallel_status, "parallel_score": parallel_score,
            "nbgrader_score": plain["scores"].get(key)}


def _load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _refuse_overlap(submissions, work_dir: Path) -> None:
    """Refuse submissions inside a folder of ``work_dir`` that the benchmark empties."""
    source = Path(submissions).resolve()
    for name in (CLASS, NBGRADER_COURSE, OURS_SERIAL, OURS_PARALLEL):
        if source == work_dir / name or work_dir / name in source.parents:
            raise BenchmarkInputError(
                f"{source} lies in {work_dir / name}, which the benchmark replaces: keep the "
                f"submissions outside {CLASS}/, {NBGRADER_COURSE}/ and ours-*/ of the work folder.")


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)  # a previous run's files must not be counted
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- the report


def format_report(result: dict) -> str:
    """A short table: seconds, notebooks/min and ratio to nbgrader, then the checks."""
    jobs = result["jobs"]
    lines = [
        f"{result['notebooks']} notebooks ({result['students']} students; {result['assignment']}: "
        f"{', '.join(result['graded_notebooks'])}) on {result['cpus']} CPU cores"
        + "".join(f"; {nb} skipped (no GPU)" for nb in result["skipped_notebooks"]),
        "",
        f"{'':<22}{'seconds':>9}{'notebooks/min':>15}{'ratio to nbgrader':>19}",
        _table_row("nbgrader autograde", result["nbgrader_seconds"],
                   result["nbgrader_per_minute"], 1.0),
        _table_row("ours, jobs=1", result["ours_serial_seconds"],
                   result["ours_serial_per_minute"], result["overhead_serial"]),
        _table_row(f"ours, jobs={jobs}", result["ours_parallel_seconds"],
                   result["ours_parallel_per_minute"], result["overhead_parallel"]),
        f"(nbgrader generate_assignment, not counted above: {result['nbgrader_generate_seconds']:.1f} s)",
    ]
    if result["load_before"] is not None:
        busy = result["load_before"] >= 1.0
        lines.append(f"(1-minute load average before the run: {result['load_before']:.1f}"
                     + ("; other work shared the cores, so the times are skewed)" if busy else ")"))
    lines += [
        "",
        f"jobs=1 and jobs={jobs} give the same status and score for every notebook: "
        + ("yes" if result["parallel_matches_serial"] else "NO"),
        "ours and nbgrader give the same score for every notebook: "
        + ("yes" if result["agrees_with_nbgrader"] else "NO"),
    ]
    if result["nbgrader_error"]:
        lines.append(f"nbgrader autograde reported an error: {result['nbgrader_error']}")
    for title, rows in ((f"jobs=1 vs jobs={jobs}", result["parallel_differences"]),
                        ("ours vs nbgrader", result["disagreements"])):
        lines += [f"  {title}: {r['student']} {r['notebook']}: jobs=1 {r['serial_status']} "
                  f"{r['serial_score']}, jobs={jobs} {r['parallel_status']} {r['parallel_score']}, "
                  f"nbgrader {r['nbgrader_score']}" for r in rows]
    return "\n".join(lines)


def _table_row(label: str, seconds: float, per_min: float, ratio: float) -> str:
    return f"{label:<22}{seconds:>9.1f}{per_min:>15.1f}{ratio:>19.2f}"
