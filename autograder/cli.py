"""Instructor command line: ``python -m autograder {release,references,grade,check}``.

Exit status: 0 success, 1 something is stale or a step failed, 2 bad input
(the message says what to do; no traceback).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from mha_checks.registry import assignments as course_assignments

from .paths import SOLUTIONS_DIR
from .sandbox import DEFAULT_CELL_SECONDS, DEFAULT_NOTEBOOK_SECONDS, Limits

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user; the message tells them what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description="Instructor tools of 'Multi-Head Attention, from scratch'.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    release = commands.add_parser(
        "release", help="regenerate exercises/ from solutions/ (nbgrader generate_assignment)")
    release.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                         help=f"default: all ({', '.join(course_assignments())})")

    references = commands.add_parser(
        "references", help="regenerate the reference outputs from the solutions",
        description="Regenerate the visible cases (shipped to students, fixed seed) and the "
                    "hidden cases (kept in autograder/hidden_cases/, never shipped) from the "
                    "solution notebooks. Keep a graded class's hidden cases private by drawing "
                    "them from a seed of your own: outputs memorised from the public repository "
                    "then gain nothing. The file records its seed; `check` rebuilds from it.")
    references.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                            help="default: all")
    references.add_argument("--hidden-seed", type=int, default=None, metavar="N",
                            help="seed of the hidden cases (default: the course's, "
                                 "autograder.references.DEFAULT_HIDDEN_SEED)")
    references.add_argument("--retrain", action="store_true",
                            help="also retrain the chapters' trained models (committed files, kept "
                                 "otherwise: training gives other numbers on another CPU, so the cases "
                                 "built on a model change with it)")

    grade = commands.add_parser(
        "grade", help="grade submissions in a sandbox; scores decided outside the student's code",
        description="Grade every submitted notebook in a bubblewrap sandbox and judge the results "
                    "in this process. Writes grades.csv, students.csv, feedback/, logs/ and "
                    "results/ into --out; running again resumes and reuses finished results.")
    grade.add_argument("submissions", type=Path, metavar="SUBMISSIONS",
                       help="SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb, a folder per "
                            "student, a flat LMS export, or a .zip of any of these")
    grade.add_argument("--out", type=Path, default=Path("grading-out"),
                       help="output folder (default: grading-out)")
    grade.add_argument("--assignment", action="append", dest="assignments", metavar="A",
                       help="grade only this assignment (repeatable; needed for flat exports "
                            "when the course has several)")
    grade.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N",
                       help="notebooks graded at once (default: 1)")
    grade.add_argument("--cell-timeout", type=_positive_int, default=None, metavar="S",
                       help="seconds one cell or one check may run (default: the notebook's own "
                            f"in the course registry, {DEFAULT_CELL_SECONDS} unless it says more)")
    grade.add_argument("--notebook-timeout", type=_positive_int, default=None, metavar="S",
                       help="seconds one run of a notebook may take (default: the notebook's own "
                            f"in the course registry, {DEFAULT_NOTEBOOK_SECONDS} unless it says more)")
    memory_gb = Limits().memory_bytes / 1024**3
    grade.add_argument("--memory-gb", type=float, default=memory_gb, metavar="G",
                       help=f"memory one notebook may use, in GiB (default: {memory_gb:g})")
    grade.add_argument("--unsandboxed", action="store_true",
                       help="grade without the bubblewrap sandbox (scores are still decided "
                            "outside the student's code, but it can read and write your files)")
    grade.add_argument("--fresh", action="store_true",
                       help="grade everything again instead of reusing saved results")
    grade.add_argument("--no-feedback", action="store_true",
                       help="skip the per-student feedback HTML")
    grade.add_argument("--shard", type=_shard, metavar="K/N",
                       help="grade only shard K of N (K counts from 1: 1/4 ... 4/4), a fixed "
                            "part of the class that depends only on each notebook's student, "
                            "assignment and name; writes shard.json when done. Run every shard "
                            "into its own --out, then `merge` them")

    merge = commands.add_parser(
        "merge", help="combine the --out folders of `grade --shard K/N` runs into one",
        description="Combine the outputs of `grade --shard K/N` runs into the grades.csv, "
                    "students.csv, feedback/, logs/ and results/ that one `grade` run over the "
                    "whole class writes (the seconds column is each shard's timing). Refuses, "
                    "writing nothing, with exit status 1 when a shard is missing (it names the "
                    "shard and its notebooks), a saved result is missing, changed since its shard "
                    "finished or not a score the grader gives, a name in shard.json is not a "
                    "safe id, the class differs from students.csv, or shards disagree about a "
                    "notebook, the class or the settings.")
    merge.add_argument("shard_dirs", type=Path, nargs="+", metavar="SHARD_DIR",
                       help="the --out folder of each `grade --shard K/N` run, in any order")
    merge.add_argument("--out", type=Path, required=True,
                       help="output folder for the merged class (not one of the SHARD_DIRs)")
    merge.add_argument("--no-feedback", action="store_true",
                       help="skip the per-student feedback HTML")

    commands.add_parser("check", help="fail if exercises/ or the reference outputs are stale")

    bench = commands.add_parser(
        "benchmark", help="time grade (jobs=1 and --jobs N) against plain nbgrader autograde",
        description="Grade the same submissions with plain `nbgrader autograde`, with grade "
                    "--jobs 1 and with grade --jobs N, in one run; print notebooks per minute, "
                    "the ratios to nbgrader's time, and whether the scores agree. Exit status 1 "
                    "when --jobs 1 and --jobs N give different results.")
    bench.add_argument("submissions", type=Path, nargs="?", metavar="SUBMISSIONS",
                       help="SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb "
                            "(not needed with --synthetic)")
    bench.add_argument("--jobs", "-j", type=_positive_int, default=2, metavar="N",
                       help="notebooks graded at once in the parallel run (default: 2)")
    bench.add_argument("--work", type=Path, metavar="DIR",
                       help="keep the nbgrader course and grading outputs here "
                            "(default: a temporary folder, removed afterwards)")
    bench.add_argument("--synthetic", type=_positive_int, metavar="N",
                       help="benchmark a synthetic class of N students instead (solution and "
                            "blank notebooks alternating; 1_numpy and 3_pytorch)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return value


def _shard(text: str) -> tuple[int, int]:
    from .shards import parse_shard
    from .submissions import GradingInputError
    try:
        return parse_shard(text)
    except GradingInputError as err:
        raise argparse.ArgumentTypeError(str(err))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"release": cmd_release, "references": cmd_references,
               "grade": cmd_grade, "check": cmd_check,
               "benchmark": cmd_benchmark, "merge": cmd_merge}[args.command]
    try:
        return command(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- commands


def cmd_release(args) -> int:
    from .release import ReleaseError, release
    explicit = bool(args.assignments)
    for assignment in _assignments(args.assignments):
        if not _has_solutions(assignment):
            if explicit:
                raise UsageError(f"no notebooks in {SOLUTIONS_DIR / assignment}: "
                                 "write the solution notebooks first.")
            print(f"skipping {assignment}: no notebooks in {SOLUTIONS_DIR / assignment}")
            continue
        try:
            files = release(assignment)
        except ReleaseError as err:
            raise UsageError(str(err)) from None
        for path in files:
            print(f"wrote {_display(path)}")
    return EXIT_OK


def cmd_references(args) -> int:
    from .references import DEFAULT_HIDDEN_SEED, write_references
    seed = DEFAULT_HIDDEN_SEED if args.hidden_seed is None else args.hidden_seed
    for assignment in _assignments(args.assignments):
        for path in write_references(assignment, hidden_seed=seed, retrain=args.retrain):
            print(f"wrote {_display(path)}")
    if seed != DEFAULT_HIDDEN_SEED:
        print(f"hidden cases drawn from seed {seed}: keep autograder/hidden_cases/ out of public view.")
    return EXIT_OK


def cmd_grade(args) -> int:
    from .grading import grade
    from .sandbox import SandboxUnavailable
    from .submissions import GradingInputError
    if not args.submissions.exists():
        raise UsageError(f"{args.submissions} does not exist. Give a folder of submissions "
                         "(SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb, or an LMS export) "
                         "or an LMS .zip.")
    limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                    memory_bytes=int(args.memory_gb * 1024**3))
    try:
        results = grade(args.submissions, args.out, assignments=args.assignments, jobs=args.jobs,
                        limits=limits, unsandboxed=args.unsandboxed, fresh=args.fresh,
                        feedback=not args.no_feedback, shard=args.shard)
    except (GradingInputError, SandboxUnavailable) as err:
        raise UsageError(str(err)) from None
    # A shard of a small class may hold no notebook at all; that shard still did its part.
    return EXIT_OK if results or args.shard else EXIT_FAILED


def cmd_merge(args) -> int:
    from .shards import MergeRefused, merge
    from .submissions import GradingInputError
    try:
        merge(args.shard_dirs, args.out, feedback=not args.no_feedback)
    except GradingInputError as err:
        raise UsageError(str(err)) from None
    except MergeRefused as err:
        print(f"merge refused, nothing written:\n{err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_check(args) -> int:
    from .release import ReleaseError, stale_release_files
    stale: list[str] = []
    for assignment in course_assignments():
        try:
            stale += stale_release_files(assignment)
        except ReleaseError as err:
            print(f"cannot regenerate {assignment}: {err}", file=sys.stderr)
            return EXIT_FAILED
    stale_refs = _stale_references()
    if stale_refs is None:
        return EXIT_FAILED
    if stale:
        print("exercises/ is stale; run `python -m autograder release`:")
        print("".join(f"  {path}\n" for path in stale), end="")
    if stale_refs:
        print("reference outputs are stale; run `python -m autograder references`:")
        print("".join(f"  {path}\n" for path in stale_refs), end="")
    if stale or stale_refs:
        return EXIT_FAILED
    print("exercises/ and reference outputs are up to date.")
    return EXIT_OK


def cmd_benchmark(args) -> int:
    import shutil
    import tempfile
    from .benchmark import BenchmarkInputError, benchmark, format_report, make_class
    from .sandbox import SandboxUnavailable
    from .submissions import GradingInputError
    if (args.submissions is None) == (args.synthetic is None):
        raise UsageError("give either SUBMISSIONS or --synthetic N (a made-up class of N students).")
    if args.submissions is not None and not args.submissions.exists():
        raise UsageError(f"{args.submissions} does not exist. Give a folder of submissions "
                         "(SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb), or --synthetic N.")
    with tempfile.TemporaryDirectory(prefix="mha-benchmark-") as tmp:
        work = args.work or Path(tmp)
        submissions = args.submissions
        if args.synthetic is not None:
            shutil.rmtree(work / "synthetic-class", ignore_errors=True)  # no students of a bigger last run
            submissions = make_class(work / "synthetic-class", args.synthetic)
        try:
            result = benchmark(submissions, work, jobs=args.jobs)
        except (BenchmarkInputError, GradingInputError, SandboxUnavailable) as err:
            raise UsageError(str(err)) from None
    print(format_report(result))
    return EXIT_OK if result["parallel_matches_serial"] else EXIT_FAILED


# --------------------------------------------------------------------------- helpers


def _assignments(requested: Sequence[str]) -> list[str]:
    """The requested assignments (default: all), refusing names the registry does not have."""
    known = course_assignments()
    if not requested:
        return list(known)
    unknown = [a for a in requested if a not in known]
    if unknown:
        raise UsageError(f"unknown assignment {', '.join(unknown)}. Known: {', '.join(known)}; "
                         "a new chapter is added to mha_checks/registry.py first.")
    return list(requested)


def _has_solutions(assignment: str) -> bool:
    return any((SOLUTIONS_DIR / assignment).glob("*.ipynb"))


def _stale_references() -> Optional[list[str]]:
    """Stale reference files, or None (after saying why) when they cannot be checked."""
    from .references import stale_references
    try:
        return stale_references()
    except Exception as err:  # e.g. a solution notebook that no longer runs
        print(f"cannot check reference outputs: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def _display(path: Path) -> str:
    from .paths import REPO_ROOT
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
