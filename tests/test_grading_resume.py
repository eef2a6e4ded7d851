"""A grading run killed half-way loses nothing: the next run reuses every
finished notebook and grades the rest, and the grades equal those of a run
that was never interrupted."""
import os
import shutil
import signal
import subprocess
import sys
import time

from autograder.grading import grade, read_csv
from autograder.paths import EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR
from course import FIRST, full_marks

ASSIGNMENT = FIRST


def make_class(root, n):
    for i in range(n):
        folder = root / f"student{i:02d}" / ASSIGNMENT
        folder.mkdir(parents=True)
        source = SOLUTIONS_DIR if i % 2 == 0 else EXERCISES_DIR
        shutil.copy(source / ASSIGNMENT / "1_numpy.ipynb", folder)


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_interrupted_run_resumes_without_redoing_or_losing_work(tmp_path):
    subs, out, reference = tmp_path / "subs", tmp_path / "out", tmp_path / "reference"
    make_class(subs, 6)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    results = out / "results"
    deadline = time.monotonic() + 120
    while len(list(results.rglob("*.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # as a power cut would
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert 2 <= len(finished) < 18, "the run was stopped half-way"
    assert not (out / "grades.csv").exists()

    resumed = grade(subs, out, gpu_available=False, verbose=False)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished results are reused as they are"
    assert len(list(results.rglob("*.json"))) == 18

    uninterrupted = grade(subs, reference, gpu_available=False, verbose=False)
    assert without_seconds(read_csv(out / "grades.csv")) == without_seconds(read_csv(reference / "grades.csv"))
    assert [r.score for r in resumed] == [r.score for r in uninterrupted]
    assert {r.score for r in resumed if r.notebook == "1_numpy"} == {0, full_marks(ASSIGNMENT, "1_numpy")}


def test_a_changed_submission_is_graded_again(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    make_class(subs, 1)
    first = {r.notebook: r for r in grade(subs, out, gpu_available=False, verbose=False)}
    assert first["1_numpy"].score == full_marks(ASSIGNMENT, "1_numpy")
    shutil.copy(EXERCISES_DIR / ASSIGNMENT / "1_numpy.ipynb", subs / "student00" / ASSIGNMENT)
    second = {r.notebook: r for r in grade(subs, out, gpu_available=False, verbose=False)}
    assert second["1_numpy"].score == 0


def test_saved_results_are_keyed_per_chapter_and_cover_nested_files(tmp_path, monkeypatch):
    """A notebook's digest changes with its own chapter's checks and with any file of the engine
    or the grader, however deep; another chapter's checks leave it alone."""
    from autograder import grading
    from autograder.paths import CHECKS_DIR, PACKAGE_DIR
    ignore = shutil.ignore_patterns("__pycache__")
    checks, grader = tmp_path / "mha_checks", tmp_path / "autograder"
    shutil.copytree(CHECKS_DIR, checks, ignore=ignore)
    shutil.copytree(PACKAGE_DIR, grader, ignore=ignore)
    monkeypatch.setattr(grading, "CHECKS_DIR", checks)
    monkeypatch.setattr(grading, "PACKAGE_DIR", grader)

    def digest():
        return grading.load_assignment(ASSIGNMENT, "1_numpy").digest

    base = digest()
    other = checks / "chapters" / "ch99_other.py"
    other.write_text("X = 1\n")
    assert digest() == base, "a new chapter's checks threw away this chapter's saved grades"
    (checks / "chapters" / "ch99_other").mkdir()
    (checks / "chapters" / "ch99_other" / "cases.py").write_text("Y = 1\n")
    assert digest() == base
    for changed in (checks / "chapters" / f"{ASSIGNMENT}.py", checks / "engine.py"):
        original = changed.read_text()
        changed.write_text(original + "\n# edited\n")
        assert digest() != base, f"editing {changed.name} kept the saved grades"
        changed.write_text(original)
    assert digest() == base
    for nested in (checks / "engine_parts" / "deep" / "helpers.py", grader / "intake" / "lms.py"):
        nested.parent.mkdir(parents=True)
        nested.write_text("Z = 1\n")
        assert digest() != base, f"{nested} is not part of the digest"
        nested.unlink()
