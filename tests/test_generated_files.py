"""Generated files (release notebooks, reference outputs) match what one command
produces from the solutions now, the staleness checks notice a change, hidden
cases follow their seed, and the package students install holds no hidden case.
Regenerated arrays count as equal within a few ulps of their largest value (what
another CPU's order of sums changes), and a trained model file is rebuilt only
when missing or asked (``references --retrain``) and judged by what it does,
never by equality with a new training run."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from autograder import cli, references
from autograder.paths import HIDDEN_CASES_DIR, REPO_ROOT, SOLUTIONS_DIR, VISIBLE_CASES_DIR
from autograder.references import DEFAULT_HIDDEN_SEED, stale_references, stored_seed, write_references
from autograder.release import stale_release_files
from course import ASSIGNMENTS, FIRST
from mha_checks.cases import case_file, load_cases
from mha_checks.chapters import chapter
from mha_checks.engine import Generated
from mha_checks.tolerances import NAMED

HOW_TO_FIX = "regenerate with `python -m autograder release` and `python -m autograder references`, then commit"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_notebooks_are_up_to_date(assignment):
    assert stale_release_files(assignment) == [], HOW_TO_FIX


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_outputs_are_up_to_date(assignment):
    assert stale_references([assignment]) == [], HOW_TO_FIX


PERTURB = """

def _perturbed(value):
    import numpy as _np
    if isinstance(value, tuple):
        return tuple(_perturbed(v) for v in value)
    value = _np.asarray(value)
    return ~value if value.dtype == bool else value * 0.5

{name} = (lambda f: lambda *a, **k: _perturbed(f(*a, **k)))({name})
"""


@pytest.fixture
def edited_solutions(tmp_path):
    """A copy of solutions/ whose first chapter's reference notebook differs from the committed
    one: its first function's output (which only the references see) and a paragraph (which the
    release shows)."""
    copy = tmp_path / "solutions"
    shutil.copytree(SOLUTIONS_DIR, copy)
    declared = chapter(FIRST)
    path = copy / FIRST / f"{declared.reference_notebook}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    name = declared.functions[0].name
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == name)
    cell.source += PERTURB.format(name=name)
    text = next(c for c in nb.cells if c.cell_type == "markdown")
    text.source += "\nAn added sentence."
    nbformat.write(nb, str(path))
    return copy, name


def test_staleness_checks_notice_an_edited_solution(edited_solutions):
    copy, name = edited_solutions
    notebook = chapter(FIRST).reference_notebook
    assert stale_release_files(FIRST, solutions_dir=copy) == [f"exercises/{FIRST}/{notebook}.ipynb"]
    stale = stale_references([FIRST], solutions_dir=copy)
    for split in ("visible", "hidden"):
        assert any(f"{name}/{split}/00/expected/" in s and "values differ" in s for s in stale), stale


def test_reference_generation_is_deterministic(tmp_path):
    write_references(FIRST, references_dir=tmp_path / "visible", hidden_dir=tmp_path / "hidden")
    assert stale_references([FIRST], references_dir=tmp_path / "visible", hidden_dir=tmp_path / "hidden") == []


def test_hidden_cases_follow_their_seed_and_the_staleness_check_knows_it(tmp_path):
    """An instructor's private seed draws other hidden inputs, leaves the visible cases alone,
    and the committed-file check rebuilds from the seed the file records."""
    default = {"references_dir": tmp_path / "d-visible", "hidden_dir": tmp_path / "d-hidden"}
    private = {"references_dir": tmp_path / "p-visible", "hidden_dir": tmp_path / "p-hidden"}
    write_references(FIRST, **default)
    write_references(FIRST, hidden_seed=DEFAULT_HIDDEN_SEED + 12345, **private)
    assert stored_seed(case_file(FIRST, "hidden", **private)) == DEFAULT_HIDDEN_SEED + 12345
    assert stale_references([FIRST], **private) == []
    with np.load(case_file(FIRST, "visible", **default)) as a, np.load(case_file(FIRST, "visible", **private)) as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    first_float = next(f.name for f in chapter(FIRST).functions
                       if any(v.dtype.kind == "f" for v in load_cases(FIRST, **{
                           k: str(v) for k, v in default.items()})[(f.name, "hidden")][0].args.values()))
    hidden = [load_cases(FIRST, **{k: str(v) for k, v in d.items()})[(first_float, "hidden")][0]
              for d in (default, private)]
    key = next(k for k, v in hidden[0].args.items() if v.dtype.kind == "f")
    assert not np.array_equal(hidden[0].args[key], hidden[1].args[key]), "the seed changed nothing"


def test_committed_hidden_cases_use_the_courses_seed():
    for assignment in ASSIGNMENTS:
        assert stored_seed(case_file(assignment, "hidden", hidden_dir=HIDDEN_CASES_DIR)) == DEFAULT_HIDDEN_SEED


def test_visible_and_hidden_cases_live_apart():
    for assignment in ASSIGNMENTS:
        for split, folder in (("visible", VISIBLE_CASES_DIR), ("hidden", HIDDEN_CASES_DIR)):
            with np.load(case_file(assignment, split, VISIBLE_CASES_DIR, HIDDEN_CASES_DIR)) as data:
                splits = {k.split("/")[1] for k in data.files if not k.startswith("meta/")}
            assert splits == {split}, f"{folder}: {splits}"


@pytest.fixture(scope="module")
def student_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, cwd=out)
    return next(out.glob("mha_course-*.whl"))


def test_student_package_ships_visible_cases_only_and_needs_only_numpy(student_wheel):
    """What Colab installs from the repository: the checks and the visible cases, NumPy as the
    one dependency; no grader, no hidden case, no solution."""
    with zipfile.ZipFile(student_wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        cases = {n: z.read(n) for n in names if n.startswith("mha_checks/references/") and n.endswith(".npz")}
    for assignment in ASSIGNMENTS:
        assert f"mha_checks/references/{assignment}.npz" in names
        assert f"mha_checks/chapters/{assignment}.py" in names
        for generated in chapter(assignment).generated:   # data the notebooks read (a trained model)
            assert Path(generated.path).relative_to(REPO_ROOT).as_posix() in names, generated.path
    assert {"mha_checks/engine.py", "mha_checks/registry.py", "mha_checks/transport.py"} <= names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["Requires-Dist: numpy>=1.22"], requires
    assert not any(n.startswith(("autograder/", "solutions/", "tests/")) for n in names), sorted(names)
    assert not any("hidden" in n for n in names), sorted(names)
    for name, data in cases.items():
        path = student_wheel.parent / Path(name).name
        path.write_bytes(data)
        with np.load(path) as arrays:
            splits = {k.split("/")[1] for k in arrays.files if not k.startswith("meta/")}
        assert splits == {"visible"}, f"{name} holds {splits}"


def test_installed_student_package_runs_checks_and_keeps_hidden_cases_out(student_wheel, tmp_path):
    """In a fresh environment with only NumPy and the wheel, a visible check runs; a hidden one
    says that hidden cases run at grading time."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(student_wheel)], check=True)
    declared = chapter(FIRST)
    first = declared.functions[0].name
    script = f"""
import mha_checks, sys
assert "site-packages" in mha_checks.__file__, mha_checks.__file__
from mha_checks import notebook_checks
check = notebook_checks({FIRST!r}, "1_numpy")
print(check.cases({first!r})[0].describe())
try:
    getattr(check, {first!r})(lambda *a: None, hidden=True)
except AssertionError as err:
    print("HIDDEN:", err)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "HIDDEN:" in run.stdout and "run when your notebook is graded" in " ".join(run.stdout.split()), run.stdout


def test_nbgrader_itself_releases_the_same_exercises(tmp_path):
    """Instructors who know nbgrader can use it on the repository as it is."""
    course = tmp_path / "course"
    for name in ("solutions", "autograder", "mha_checks"):
        shutil.copytree(REPO_ROOT / name, course / name)
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # nbgrader calls alembic
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", FIRST, "--force"],
                   cwd=course, env=env, check=True, capture_output=True)
    assert stale_release_files(FIRST, out_dir=course / "exercises") == []


def test_no_test_hard_codes_a_chapter_outside_its_own_tests():
    """Tests walk the registry; a chapter's name appears only in tests about that chapter's content
    (their file names carry the chapter: test_ch01_*.py, mutants/ch01_*.py, corpus/ch01_*.py)."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in tests.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for assignment in ASSIGNMENTS:
            prefix = assignment.split("_")[0]
            if assignment in text and not path.stem.startswith((prefix, f"test_{prefix}")):
                offenders.append(f"{path.relative_to(tests)} names {assignment}")
    assert not offenders, offenders


# --------------------------------------------------------------------------
# Comparing regenerated arrays: a bound scaled by the array's largest value
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_array_accepts_a_few_ulps_of_the_largest_value_where_values_near_zero_differ_wholly(dtype):
    """A value near zero made by cancellation changes in every digit when sums run in another order;
    what stays the same is the array to a few ulps of its largest value."""
    ulp = np.finfo(dtype).eps * 1000
    stored = np.array([1000, -3, 3 * ulp, 0], dtype=dtype)
    fresh = stored + np.array([4, 2, -8, 5], dtype=dtype) * ulp   # the third element changes sign
    assert np.sign(fresh[2]) == -np.sign(stored[2])
    assert references.same_array(fresh, stored) and references.same_array(stored, fresh)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_array_rejects_a_change_of_a_thousandth_of_the_largest_value(dtype):
    stored = np.array([[1000, -3], [0.5, 0]], dtype=dtype)
    for index in np.ndindex(stored.shape):
        fresh = stored.copy()
        fresh[index] += dtype(1e-3 * 1000)
        assert not references.same_array(fresh, stored), index


def test_same_array_takes_the_named_bound_of_the_check():
    """Finite differences amplify rounding: their looser named bound accepts what the default refuses."""
    stored = np.array([1.0, 0.25])
    fresh = stored + np.array([0, 1000 * np.finfo(np.float64).eps])
    assert not references.same_array(fresh, stored)
    assert references.same_array(fresh, stored, "reproducible_finite_differences")


def test_same_array_compares_arrays_of_other_kinds_exactly():
    ints = np.array([1, 2, 3])
    assert references.same_array(ints, ints.copy())
    assert not references.same_array(ints, np.array([1, 2, 4]))
    assert not references.same_array(np.array([True, False]), np.array([True, True]))
    assert not references.same_array(np.array([10**9]), np.array([10**9 + 1]))   # no tolerance for integers
    assert not references.same_array(ints, ints.astype(np.float64)), "another dtype is another array"
    assert not references.same_array(ints, ints[:2]), "another shape is another array"


def test_same_array_counts_nan_equal_to_nan_and_handles_inf():
    assert references.same_array(np.array([1.0, np.nan]), np.array([1.0, np.nan]))
    assert not references.same_array(np.array([1.0, np.nan]), np.array([1.0, 1.0]))
    assert references.same_array(np.array([np.inf, -np.inf, 2.0]), np.array([np.inf, -np.inf, 2.0]))
    assert not references.same_array(np.array([np.inf, 2.0]), np.array([-np.inf, 2.0]))
    assert not references.same_array(np.array([np.inf, 2.0]), np.array([1.0, 2.0]))
    # An infinity is no scale: the finite values are still compared within their own bound.
    assert not references.same_array(np.array([np.inf, 2.0]), np.array([np.inf, 3.0]))
    assert references.same_array(np.array([np.inf, np.nan]), np.array([np.inf, np.nan]))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_case_is_regenerated_within_its_checks_named_bound(assignment):
    for function in chapter(assignment).functions:
        assert function.reproducible in NAMED, f"{function.name}: no bound named {function.reproducible!r}"
        assert references._bound(assignment, f"{function.name}/hidden/00/expected/out") == function.reproducible
    for question in chapter(assignment).questions:
        assert references._bound(assignment, f"{question.name}/hidden/00/expected/answer") == "reproducible"


# --------------------------------------------------------------------------
# Generated files: a trained one is kept unless asked, and judged by what it does
# --------------------------------------------------------------------------

class FakeChapter:
    """A chapter with one generated file, whose build and behaviour record their calls; no notebook runs."""

    def __init__(self, path, trained: bool, problems=()):
        self.builds, self.judged = [], []
        self.weights = np.array([1.0, 2.0])

        def build(sol):
            self.builds.append(sol)
            return {"weights": self.weights, "n_heads": 2}

        def behaviour(arrays, solution):
            self.judged.append((arrays, solution("3_pytorch")))
            return list(problems)

        self.generated = (Generated(path, "3_pytorch", build, behaviour=behaviour if trained else None),)


@pytest.fixture
def fake_generated(monkeypatch, tmp_path):
    """``make(trained, problems=())``: a fake chapter for ``references``, its file ``<tmp>/model.npz``."""
    def make(trained: bool, problems=()):
        fake = FakeChapter(tmp_path / "model.npz", trained, problems)
        monkeypatch.setattr(references, "chapter", lambda assignment: fake)
        monkeypatch.setattr(references, "_solutions", lambda assignment, solutions_dir: lambda notebook: {"from": notebook})
        return fake
    return make


def _write(path, **arrays):
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _read(path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_write_generated_keeps_a_trained_file_that_exists(fake_generated):
    fake = fake_generated(trained=True)
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=2)
    assert references.write_generated("toy") == []
    assert fake.builds == [], "the model was retrained"
    assert np.array_equal(_read(path)["weights"], [7.0, 8.0])


def test_write_generated_retrains_a_trained_file_when_asked(fake_generated):
    fake = fake_generated(trained=True)
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=2)
    assert references.write_generated("toy", retrain=True) == [path]
    assert fake.builds == [{"from": "3_pytorch"}]
    assert np.array_equal(_read(path)["weights"], fake.weights)


def test_write_generated_trains_a_trained_file_that_is_missing(fake_generated):
    fake = fake_generated(trained=True)
    path = fake.generated[0].path
    assert references.write_generated("toy") == [path]
    assert _read(path).keys() == {"weights", "n_heads"} and np.array_equal(_read(path)["weights"], fake.weights)


def test_write_generated_always_rewrites_a_file_that_is_not_trained(fake_generated):
    fake = fake_generated(trained=False)
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=2)
    assert references.write_generated("toy") == [path]
    assert np.array_equal(_read(path)["weights"], fake.weights)


def test_write_references_passes_retrain_on_to_the_generated_files(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(references, "write_generated",
                        lambda assignment, solutions_dir, retrain=False: asked.append(retrain) or [])
    monkeypatch.setattr(references, "build_references", lambda *a, **k: {"x": np.zeros(1)})
    monkeypatch.setattr(references, "case_file", lambda assignment, split, *dirs: tmp_path / f"{split}.npz")
    for retrain in (False, True):
        references.write_references("toy", retrain=retrain)
    assert asked == [False, True]


def test_stale_generated_reports_a_trained_files_behaviour_problems(fake_generated):
    fake = fake_generated(trained=True, problems=["too weak"])
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=2)
    assert references.stale_generated("toy") == [f"{path.parent.name}/model.npz: too weak"]
    (arrays, solution), = fake.judged
    assert np.array_equal(arrays["weights"], [7.0, 8.0]), "the behaviour was not judged on the stored file"
    assert solution == {"from": "3_pytorch"}


def test_stale_generated_never_compares_a_trained_file_by_equality(fake_generated):
    """Another CPU trains other weights: a stored model that a fresh run would not equal is fine
    as long as it does what the chapter says."""
    fake = fake_generated(trained=True)
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=3)
    assert references.stale_generated("toy") == []
    assert fake.builds == [], "the staleness check trained a model"
    assert len(fake.judged) == 1


def test_stale_generated_reports_a_missing_trained_file(fake_generated):
    fake = fake_generated(trained=True)
    assert references.stale_generated("toy") == [f"{fake.generated[0].path}: missing"]
    assert fake.judged == []


def test_stale_generated_compares_a_file_that_is_not_trained_by_equality(fake_generated):
    fake = fake_generated(trained=False)
    path = fake.generated[0].path
    _write(path, weights=[7.0, 8.0], n_heads=2)
    assert references.stale_generated("toy") == [f"{path.parent.name}/model.npz:weights: values differ"]
    _write(path, weights=fake.weights, n_heads=2)
    assert references.stale_generated("toy") == []


def test_every_trained_generated_file_of_the_course_is_committed():
    """A trained file is built only when missing: the committed one is what students load."""
    for assignment in ASSIGNMENTS:
        for generated in chapter(assignment).generated:
            if generated.trained:
                assert Path(generated.path).exists(), f"{generated.path}: missing; `references --retrain` builds it"


def test_the_references_command_offers_retrain_and_passes_it_on(monkeypatch):
    help_text = subprocess.run([sys.executable, "-m", "autograder", "references", "--help"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout
    assert "--retrain" in help_text
    asked = []
    monkeypatch.setattr(references, "write_references",
                        lambda assignment, hidden_seed, retrain: asked.append((assignment, retrain)) or [])
    assert cli.main(["references", FIRST]) == 0
    assert cli.main(["references", "--retrain", FIRST]) == 0
    assert asked == [(FIRST, False), (FIRST, True)]
