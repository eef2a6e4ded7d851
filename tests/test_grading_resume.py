"""A grading run killed half-way loses nothing: the next run reuses every
finished notebook and grades the rest, and the grades equal those of a run
that was never interrupted."""
import os
import shutil
import signal
import subprocess
import sys
import time

from autograder.grading import grade
from autograder.results import read_csv
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


def copy_of_packages(tmp_path, monkeypatch):
    """A copy of the checks and the grader that the digests read instead of the checkout's, to
    edit freely (the sandbox still runs the checkout's code)."""
    from autograder import instructor
    from autograder.paths import CHECKS_DIR, PACKAGE_DIR
    ignore = shutil.ignore_patterns("__pycache__")
    checks, grader = tmp_path / "mha_checks", tmp_path / "autograder"
    shutil.copytree(CHECKS_DIR, checks, ignore=ignore)
    shutil.copytree(PACKAGE_DIR, grader, ignore=ignore)
    monkeypatch.setattr(instructor, "CHECKS_DIR", checks)
    monkeypatch.setattr(instructor, "PACKAGE_DIR", grader)
    return checks, grader


def insert_before(path, anchor, text):
    """Edit a module without changing what it does: ``text`` (a comment) before ``anchor``."""
    original = path.read_text()
    assert anchor in original, f"{path.name} no longer has {anchor!r}: update this test"
    path.write_text(original.replace(anchor, text + anchor, 1))


def test_saved_results_are_keyed_per_chapter_and_cover_nested_files(tmp_path, monkeypatch):
    """A notebook's digest changes with its own chapter's checks and with any module of the engine
    or the grader that grading imports, however deep; another chapter's checks, and a module
    nothing imports, leave it alone."""
    from autograder import instructor
    checks, grader = copy_of_packages(tmp_path, monkeypatch)

    def digest():
        return instructor.load_assignment(ASSIGNMENT, "1_numpy").digest

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
    nested_imports = ((checks / "engine.py", checks / "engine_parts" / "deep" / "helpers.py",
                       "from .engine_parts.deep import helpers\n"),
                      (grader / "grading.py", grader / "intake" / "lms.py",
                       "def _read_lms():\n    from .intake.lms import Z\n"))
    for importer, nested, statement in nested_imports:
        nested.parent.mkdir(parents=True)
        nested.write_text("Z = 1\n")
        assert digest() == base, f"{nested} is imported by nothing, yet it is part of the digest"
        original = importer.read_text()
        importer.write_text(original + statement)
        imported = digest()
        nested.write_text("Z = 2\n")
        assert digest() != imported, f"{nested} is imported by {importer.name}, yet not part of the digest"
        importer.write_text(original)
        nested.unlink()
    assert digest() == base


def chapter_imports(assignment) -> dict:
    """``{module name: [names]}``: what a chapter's module takes from other chapters' modules and from the
    shared kit, read from the loaded module itself (independent of the grader's walk over the import
    statements)."""
    from mha_checks.chapters import chapter_module
    from mha_checks.registry import assignments
    module = chapter_module(assignment)
    others = {chapter_module(a).__name__ for a in assignments()} - {module.__name__}
    taken = {}
    for name, value in vars(module).items():
        source = getattr(value, "__module__", None)
        if source in others or (source or "").startswith("mha_checks.kit."):
            taken.setdefault(source, []).append(name)
    return taken


def _chapter_file(module_name: str) -> str:
    return module_name.replace(".", "/") + ".py"


def _order(module_name: str):
    """Shared modules first (the kit, then earlier chapters in the course's order)."""
    from mha_checks.registry import assignments
    last = module_name.rsplit(".", 1)[1]
    return (1, assignments().index(last)) if last in assignments() else (0, module_name)


def reuser():
    """The chapter whose module takes the most from other modules (the kit's, other chapters'), and
    the first of those it takes from."""
    from mha_checks.registry import assignments
    chapter = max(assignments(), key=lambda a: (len(chapter_imports(a)), assignments().index(a)))
    taken = chapter_imports(chapter)
    assert taken, "no chapter reuses shared checks any more: these tests need one that does"
    earliest = min(taken, key=_order)
    return chapter, earliest, taken[earliest]


def dependencies(assignment):
    """The files in the digest of a chapter's first notebook, named as in every checkout."""
    from autograder import instructor
    notebooks = (folder / assignment / "1_numpy.ipynb" for folder in (SOLUTIONS_DIR, EXERCISES_DIR))
    return {instructor._portable_name(path) for path in instructor.grading_inputs(assignment, *notebooks)}


def test_a_chapter_depends_on_the_chapters_it_imports_and_on_no_other():
    from mha_checks.registry import assignments
    chapters = assignments()
    for index, assignment in enumerate(chapters):
        files = dependencies(assignment)
        for needed in (f"mha_checks/chapters/{assignment}.py", "mha_checks/engine.py", "autograder/grading.py",
                       "autograder/harness.py", "autograder/sandbox.py", f"mha_checks/references/{assignment}.npz",
                       f"autograder/hidden_cases/{assignment}.npz",
                       *(_chapter_file(module) for module in chapter_imports(assignment))):
            assert needed in files, f"{needed} is left out of {assignment}'s digest"
        for later in chapters[index + 1:]:   # a chapter builds on earlier ones, never on a later one
            assert f"mha_checks/chapters/{later}.py" not in files, f"{assignment}'s digest holds {later}'s checks"
        for other in chapters:
            if other != assignment:
                assert f"mha_checks/references/{other}.npz" not in files, f"{assignment}'s digest holds {other}'s cases"
        for unused in ("autograder/cli.py", "autograder/release.py"):
            assert unused not in files, f"{unused} is in {assignment}'s digest; grading does not import it"
    first = dependencies(chapters[0])
    assert not {name for name in first if name.startswith("mha_checks/chapters/ch") and chapters[0] not in name}
    assert not {name for name in first if name.startswith("mha_checks/data/")}, "the first chapter reads no trained file"
    data_readers = [a for a in chapters if any(n.startswith("mha_checks/data/") for n in dependencies(a))]
    assert data_readers, "no chapter's digest holds the trained models and recordings the later chapters read"


def test_a_digest_is_the_same_in_every_checkout_and_process(tmp_path, monkeypatch):
    """Shards compare the digests other machines made: where the checkout lives, and what the
    process imported before (the shard module, every chapter), must not change them."""
    from autograder import instructor
    from mha_checks.chapters import chapter_module
    from mha_checks.registry import assignments
    chapter, _, _ = reuser()
    here = instructor.load_assignment(chapter, "1_numpy").digest
    fresh = subprocess.run(
        [sys.executable, "-c", "from autograder.instructor import load_assignment; "
         f"print(load_assignment({chapter!r}, '1_numpy').digest)"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, check=True)
    import autograder.shards  # noqa: F401 (what a process imported must not matter)
    for assignment in assignments():
        chapter_module(assignment)
    assert instructor.load_assignment(chapter, "1_numpy").digest == here == fresh.stdout.strip()
    elsewhere = []
    for checkout in (tmp_path / "one", tmp_path / "two" / "deeper"):
        copy_of_packages(checkout, monkeypatch)
        elsewhere.append(instructor.load_assignment(chapter, "1_numpy").digest)
    assert elsewhere[0] == elsewhere[1]


def test_the_import_walk_follows_every_form_of_import(tmp_path):
    """Absolute and relative imports, ``from package import submodule``, imports inside functions,
    package ``__init__`` files, folders at any depth; and nothing outside the given packages."""
    from autograder.instructor import _imported_closure
    files = {"pkg/__init__.py": "", "pkg/a.py": "import numpy\nimport pkg.b\n",
             "pkg/b.py": "def later():\n    from pkg.sub.c import X\n",
             "pkg/sub/__init__.py": "", "pkg/sub/c.py": "from .. import d\nfrom ..e import thing\nX = 1\n",
             "pkg/d.py": "", "pkg/e.py": "from .deep.er import f\n", "pkg/deep/er.py": "f = 1\n",
             "pkg/unused.py": "import pkg.a\n", "other/x.py": ""}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = _imported_closure(["pkg.a"], {"pkg": tmp_path / "pkg"})
    assert sorted(found) == ["pkg", "pkg.a", "pkg.b", "pkg.d", "pkg.deep.er", "pkg.e", "pkg.sub", "pkg.sub.c"]
    assert found["pkg.sub"] == tmp_path / "pkg" / "sub" / "__init__.py"


def test_editing_a_helper_two_chapters_down_regrades_and_an_unrelated_chapter_does_not(
        tmp_path, monkeypatch, capsys):
    """The chapter that reuses the most shared checks (the kit's module, model and layer checks)
    must be graded again after a shared module it reuses changes, and keep its saved grade after a
    chapter it does not import changes."""
    from mha_checks.registry import assignments
    chapter, earliest, names = reuser()
    unrelated = next(a for a in reversed(assignments()) if a != chapter
                     and f"mha_checks.chapters.{a}" not in chapter_imports(chapter)
                     and f"mha_checks/chapters/{a}.py" not in dependencies(chapter))
    checks, _ = copy_of_packages(tmp_path, monkeypatch)
    subs, out = tmp_path / "subs", tmp_path / "out"
    (subs / "student00" / chapter).mkdir(parents=True)
    shutil.copy(SOLUTIONS_DIR / chapter / "1_numpy.ipynb", subs / "student00" / chapter)
    chapters = checks / "chapters"

    def regrade():
        capsys.readouterr()
        result = {r.notebook: r for r in grade(subs, out, gpu_available=False)}["1_numpy"]
        line = next(line for line in capsys.readouterr().out.splitlines() if f"{chapter} 1_numpy:" in line)
        assert result.score == full_marks(chapter, "1_numpy")
        return "(saved result reused)" in line

    assert not regrade()
    assert regrade(), "nothing changed, yet the saved grade was not reused"
    insert_before(chapters / f"{unrelated}.py", "\ndef ", f"\n# an edit {chapter} does not see\n")
    assert regrade(), f"editing {unrelated}, which {chapter} does not import, threw {chapter}'s grade away"
    shared = checks.parent / _chapter_file(earliest)
    used = next((n for n in names if f"\ndef {n}(" in shared.read_text()), None)
    insert_before(shared, f"\ndef {used}(" if used else "\ndef ", "\n# a changed check\n")
    assert not regrade(), f"{earliest}'s check changed, yet {chapter}'s old grade was reused"
