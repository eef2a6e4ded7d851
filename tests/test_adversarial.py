"""The grader against crafted submissions: attempts to fool the checks, to escape the
sandbox, and notebooks that are broken, hostile or strange (tests/corpus/ch01_adversarial.py).

The whole corpus is graded once, as one class, with tight limits (5 s per cell) so the
module stays short; the tests then read the results, logs, CSV and feedback pages.
Needs bubblewrap (the README installs it): without it the tests fail, they do not skip.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from autograder.grading import grade
from autograder.instructor import load_assignment
from autograder.paths import SOLUTIONS_DIR
from autograder.results import GRADED, read_csv
from mha_checks import registry
from autograder.program import HIDDEN_TESTS_BEGIN, HIDDEN_TESTS_END
from autograder.sandbox import Limits, sandbox_problem
from corpus import ch01_adversarial as corpus
from corpus.ch01_adversarial import ASSIGNMENT, BY_NAME, CORPUS

NOTEBOOKS = [nb.name for nb in registry.chapter(ASSIGNMENT).notebooks]

LIMITS = Limits(cell_seconds=5, notebook_seconds=90, memory_bytes=3 * 1024**3)
JOBS = 2
REGRADED = ("baseline-correct-numpy", "fool-patch-checks", "robust-os-exit")

# What the corpus must cover, by category (names of corpus entries).
REQUIRED = {
    "baseline": ["baseline-correct-numpy", "baseline-blank-numpy", "baseline-correct-pytorch",
                 "baseline-blank-pytorch", "baseline-correct-cupy"],
    "fool": ["fool-patch-numpy", "fool-patch-checks", "fool-always-equal", "fool-input-transformer",
             "fool-custom-exc", "fool-showtraceback", "fool-numpy-beside-notebook", "fool-numpy-in-cwd",
             "fool-reference-lookup", "fool-exec-solution", "fool-detect-grading", "fool-forge-report"],
    "isolation": ["isolation-files", "isolation-network"],
    "robust": ["robust-deleted-tests", "robust-duplicated-tests", "robust-split-test",
               "robust-markdown-tests", "robust-tests-on-top", "robust-renamed-grade-ids",
               "robust-edited-metadata", "robust-kernel-r", "robust-invalid-json", "robust-nbformat3",
               "robust-v40-no-ids", "robust-empty-file", "robust-python-file", "robust-renamed-file",
               "robust-infinite-loop", "robust-signal-proof-loop", "robust-memory-bomb",
               "robust-memory-growth", "robust-big-output", "robust-sys-exit", "robust-os-exit",
               "robust-segfault", "robust-stderr-warnings", "robust-hang-4d", "robust-exit-4d"],
    "torch": ["torch-patch-allclose", "torch-patch-functional-sdpa"],
}


@dataclass
class ClassRun:
    root: Path                  # SUBMISSIONS
    out: Path
    results: dict               # (student, notebook) -> NotebookResult
    result_list: list
    seconds: float
    hashes_before: dict
    hashes_after: dict
    host_files_found: list      # host paths the isolation probes created (must stay empty)
    host_files_before: list     # the same paths existing before grading (must be empty too)
    listener_connections: int
    csv_text: str
    code_digest: str            # of the grader's code when the class was graded


def code_digest() -> str:
    """What every saved result's digest includes: the instructor's files, the checks, the grader."""
    return "|".join(load_assignment(ASSIGNMENT, nb).digest for nb in NOTEBOOKS)


def file_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _accepted(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except (BlockingIOError, OSError):
            return count
        connection.close()
        count += 1


@pytest.fixture(scope="module")
def class_run(tmp_path_factory) -> ClassRun:
    problem = sandbox_problem()
    if problem:
        pytest.fail("the adversarial tests need the bubblewrap sandbox, which the README installs "
                    f"(apt-get install bubblewrap): {problem}", pytrace=False)
    root = tmp_path_factory.mktemp("adversarial-submissions")
    out = tmp_path_factory.mktemp("adversarial-graded")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    corpus.HOST_LISTENER_PORT = listener.getsockname()[1]
    try:
        for entry in CORPUS:
            entry.build(root / entry.name / ASSIGNMENT)
    finally:
        corpus.HOST_LISTENER_PORT = None
    targets = corpus.host_write_targets(root)
    before = [str(t) for t in targets if t.exists()]
    hashes_before = file_hashes(root)
    digest = code_digest()
    started = time.monotonic()
    try:
        results = grade(root, out, jobs=JOBS, limits=LIMITS, gpu_available=False, verbose=False)
        seconds = time.monotonic() - started
        found = [str(t) for t in targets if t.exists()]
        connections = _accepted(listener)
    finally:
        listener.close()
    run = ClassRun(root, out, {(r.student, r.notebook): r for r in results}, results, seconds,
                   hashes_before, file_hashes(root), found, before, connections,
                   (out / "grades.csv").read_text(encoding="utf-8"), digest)
    print(f"graded {len(CORPUS)} crafted submissions in {seconds:.1f} s with {JOBS} jobs")
    yield run
    for path in found:  # never leave what an escaped probe wrote
        Path(path).unlink(missing_ok=True)


def log_text(run: ClassRun, name: str) -> str:
    entry = BY_NAME[name]
    return (run.out / "logs" / name / ASSIGNMENT / f"{entry.notebook}.log").read_text(encoding="utf-8")


def output_of(run: ClassRun, name: str) -> str:
    return log_text(run, name).split("\n--- output ---\n", 1)[1]


def _describe(run: ClassRun, name: str) -> str:
    result = run.results[(name, BY_NAME[name].notebook)]
    log = log_text(run, name).split("\n--- output ---\n", 1)[0]
    return (f"status {result.status!r}, score {result.score}, notes {result.notes}\n"
            f"log:\n{log[:3000]}")


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_is_large_and_covers_every_category():
    assert len(CORPUS) >= 30
    names = {entry.name for entry in CORPUS}
    for category, required in REQUIRED.items():
        missing = [n for n in required if n not in names]
        assert not missing, f"{category}: no corpus entry {missing}"
    for entry in CORPUS:
        assert entry.name.split("-")[0] in REQUIRED, f"{entry.name}: unknown category"
        assert entry.notebook in NOTEBOOKS
        assert (entry.score is None) == (entry.status != GRADED), entry
    assert sum(e.notebook == "3_pytorch" and e.name.startswith("torch-") for e in CORPUS) >= 2
    fooling = [e for e in CORPUS if e.name.startswith("fool-")]
    assert all(e.score == corpus.FULL["1_numpy"] - corpus.SOFTMAX_POINTS for e in fooling)


# --------------------------------------------------------------------------- every entry


@pytest.mark.parametrize("name", [entry.name for entry in CORPUS])
def test_entry_gets_the_expected_grade(class_run, name):
    entry = BY_NAME[name]
    result = class_run.results[(name, entry.notebook)]
    detail = _describe(class_run, name)
    if entry.status.startswith("failed"):
        assert result.status.startswith(entry.status), detail
    else:
        assert result.status == entry.status, detail
    if entry.score is None:
        assert result.score is None, detail
    else:
        assert result.score == pytest.approx(entry.score), detail
    if entry.note is not None:
        assert any(entry.note in note for note in result.notes), detail


def test_scores_are_bounded_and_set_exactly_when_graded(class_run):
    for result in class_run.result_list:
        assert (result.score is None) == (result.status != GRADED), result.status
        if result.score is not None:
            assert 0 <= result.score <= result.max_score, (result.student, result.score)


def test_grades_csv_has_one_row_per_entry(class_run):
    rows = read_csv(class_run.out / "grades.csv")
    submitted = [r for r in rows if r["status"] != "missing"]
    assert sorted((r["student"], r["notebook"]) for r in submitted) == \
        sorted((e.name, e.notebook) for e in CORPUS)
    for row in submitted:
        result = class_run.results[(row["student"], row["notebook"])]
        assert row["status"] == result.status
        assert row["score"] == ("" if result.score is None else f"{result.score:g}")
    # the other notebooks of each crafted submission are listed as missing, nothing else
    assert len(rows) == len(CORPUS) * len(NOTEBOOKS)


def test_submitted_files_are_unchanged(class_run):
    assert class_run.hashes_after == class_run.hashes_before


# --------------------------------------------------------------------------- what the attacks got


def test_isolation_probes_were_blocked(class_run):
    assert not class_run.host_files_before, "leftovers of an earlier run"
    assert not class_run.host_files_found, f"the sandbox wrote on the host: {class_run.host_files_found}"
    assert class_run.listener_connections == 0, "the sandbox reached a port on the host's loopback"
    for name, fewest in corpus.ISOLATION_ATTEMPTS.items():
        output = output_of(class_run, name)
        attempts = [line for line in output.splitlines() if line.startswith("ATTEMPT[")]
        print(f"{name}:", *attempts, sep="\n  ")
        done = re.search(r"^PROBES DONE: (\d+) attempts$", output, re.M)
        assert done, f"{name}: the probes did not run to the end\n{_describe(class_run, name)}"
        assert len(attempts) == int(done.group(1)) >= fewest
        escaped = [line for line in attempts if line.startswith("ATTEMPT[block]") and ": blocked (" not in line]
        assert not escaped, f"{name}: not blocked:\n" + "\n".join(escaped)


def test_fooling_attempts_found_nothing_to_use(class_run):
    assert "reference outputs found: 0" in output_of(class_run, "fool-reference-lookup")
    solutions = output_of(class_run, "fool-exec-solution")
    assert solutions.count(": not readable (") == 2 and ": READ" not in solutions
    # detection works, and gains nothing (the entry still scores 10)
    assert "grading detected: True" in output_of(class_run, "fool-detect-grading")
    forged = re.search(r"forged report lines written to descriptors \[(.*)\]",
                       output_of(class_run, "fool-forge-report"))
    assert forged and forged.group(1).strip(), "the forgery found no pipe to write to: it tested nothing"
    beside = log_text(class_run, "fool-numpy-beside-notebook")
    assert "FAKE NUMPY IMPORTED" not in beside and "SITECUSTOMIZE IMPORTED" not in beside
    assert "FAKE NUMPY IMPORTED" not in log_text(class_run, "fool-numpy-in-cwd")


def hidden_test_sources() -> list:
    """Every line between the hidden-test markers of the instructor's notebooks."""
    lines = []
    for path in sorted((SOLUTIONS_DIR / ASSIGNMENT).glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            inside = False
            for line in text.splitlines():
                if line.strip() == HIDDEN_TESTS_BEGIN:
                    inside = True
                elif line.strip() == HIDDEN_TESTS_END:
                    inside = False
                elif inside and line.strip():
                    lines.append(line.strip())
    return lines


def test_feedback_never_shows_hidden_tests(class_run):
    secrets = hidden_test_sources()
    assert secrets, "no hidden tests found in the solution notebooks"
    pages = sorted((class_run.out / "feedback").rglob("*.html"))
    assert len(pages) == len(CORPUS) * len(NOTEBOOKS)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for secret in ("hidden=True", HIDDEN_TESTS_BEGIN, *secrets):
            assert secret not in text, f"{page}: shows {secret!r}"


# --------------------------------------------------------------------------- grading again


def test_grading_again_reuses_saved_results(class_run):
    started = time.monotonic()
    again = grade(class_run.root, class_run.out, jobs=JOBS, limits=LIMITS, gpu_available=False,
                  verbose=False)
    seconds = time.monotonic() - started
    assert code_digest() == class_run.code_digest, (
        "the checks or the grader changed while these tests ran, so the saved results were rightly not "
        "reused: run the tests again on a tree nobody is editing")
    first = [asdict(r) for r in class_run.result_list]
    second = [asdict(r) for r in again]
    differing = [(a["student"], a["notebook"], key, a[key], b[key]) for a, b in zip(first, second)
                 for key in a if a[key] != b[key]]
    assert len(second) == len(first) and not differing, differing[:5]
    assert (class_run.out / "grades.csv").read_text(encoding="utf-8") == class_run.csv_text
    assert seconds < min(20.0, class_run.seconds / 3), f"took {seconds:.1f} s: results were not reused"


def test_fresh_regrade_of_a_subset_gives_the_same_grades(class_run, tmp_path):
    root, out = tmp_path / "subset", tmp_path / "out"
    for name in REGRADED:
        shutil.copytree(class_run.root / name, root / name)
        # A saved result that would be reused without fresh=True, tampered with: fresh must ignore it.
        saved = class_run.out / "results" / name / ASSIGNMENT / f"{BY_NAME[name].notebook}.json"
        tampered = out / "results" / name / ASSIGNMENT / saved.name
        tampered.parent.mkdir(parents=True)
        data = json.loads(saved.read_text(encoding="utf-8"))
        data.update(score=99.0, status=GRADED)
        tampered.write_text(json.dumps(data), encoding="utf-8")
    results = grade(root, out, jobs=JOBS, limits=LIMITS, gpu_available=False, fresh=True, verbose=False)
    for result in results:
        first = class_run.results[(result.student, result.notebook)]
        assert (result.status, result.score) == (first.status, first.score), result.student
    assert sum(r.status != "missing" for r in results) == len(REGRADED)
