"""Tried on Chapter 1's real notebooks: autograder.program: reading a submission, the code the grader runs for it,
and the test plan read from the instructor's notebook.

Submissions are the real chapter 1 release notebook, changed the ways students
change them. The module is used through its name (``program.test_plan``) so that
pytest does not collect ``test_plan`` or ``TestSpec`` as tests.
"""
from __future__ import annotations

import copy
import json

import pytest

from autograder import program
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR

RELEASE_PATH = EXERCISES_DIR / "ch01_single_head" / "1_numpy.ipynb"
SOURCE_PATHS = {name: SOLUTIONS_DIR / "ch01_single_head" / f"{name}.ipynb"
                for name in ("1_numpy", "2_cupy", "3_pytorch")}

# What the unchanged release notebook runs: the locked cells as the instructor
# wrote them, then the student's cells; never a test cell.
EXPECTED_LABELS = [
    ("setup (instructor)", "instructor"),
    ("imports (instructor)", "instructor"),
    ("cell 6 (softmax-demo)", "student"),
    ("cell 8 (softmax)", "student"),
    ("cell 12 (causal_mask)", "student"),
    ("cell 15 (scaled_dot_product_attention)", "student"),
    ("cell 19 (single_head_attention)", "student"),
    ("cell 23 (variance_growth)", "student"),
    ("cat-example (instructor)", "instructor"),
    ("cell 27 (sleeps_cat_weight)", "student"),
    ("cell 30 (masked_first_weight)", "student"),
    ("cell 33 (padding_mask)", "student"),
    ("cell 35 (padding-example)", "student"),
]
LOCKED_LABELS = [label for label in EXPECTED_LABELS if label[1] == "instructor"]
LOCKED_IDS = ("setup", "imports", "cat-example")
SNEAKY = "softmax = lambda x, axis=-1: x  # must never run"

_RELEASE_TEXT = RELEASE_PATH.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- helpers


def release() -> dict:
    """A fresh copy of the release notebook, for a test to change."""
    return json.loads(_RELEASE_TEXT)


def index_of(nb: dict, grade_id: str) -> int:
    return next(i for i, cell in enumerate(nb["cells"])
                if isinstance(cell, dict) and cell.get("metadata", {}).get("nbgrader", {})
                .get("grade_id") == grade_id)


def index_by_id(nb: dict, cell_id: str) -> int:
    return next(i for i, cell in enumerate(nb["cells"])
                if isinstance(cell, dict) and cell.get("id") == cell_id)


def cell_of(nb: dict, grade_id: str) -> dict:
    return nb["cells"][index_of(nb, grade_id)]


def text(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def build(submission: dict, instructor: dict | None = None) -> program.Program:
    return program.build_program(submission, instructor if instructor is not None else release())


def runs(prog: program.Program) -> list:
    """What a program executes, without the labels (they hold cell positions)."""
    return [(cell.source, cell.origin) for cell in prog.cells]


def labels(prog: program.Program) -> list:
    return [(cell.label, cell.origin) for cell in prog.cells]


BASELINE = runs(program.build_program(release(), release()))


def code_cell(source, **extra) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
            "execution_count": None, **extra}


# --------------------------------------------------------------------------- build_program


def test_unchanged_release_runs_locked_then_student_cells_and_no_test():
    nb = release()
    prog = build(nb)
    assert labels(prog) == EXPECTED_LABELS
    assert prog.cells[0].source == text(cell_of(nb, "setup"))
    assert prog.cells[1].source == text(cell_of(nb, "imports"))
    assert prog.cells[3].source == text(cell_of(nb, "softmax"))
    assert not any("check." in cell.source for cell in prog.cells[2:])
    assert prog.notes == []


def test_instructor_source_notebook_gives_the_same_program():
    # The solutions in the source notebook never replace the student's cells.
    source = json.loads(SOURCE_PATHS["1_numpy"].read_text(encoding="utf-8"))
    prog = build(release(), source)
    assert labels(prog) == EXPECTED_LABELS
    assert "NotImplementedError" in prog.cells[3].source
    assert prog.notes == []


def test_deleted_test_cell_changes_nothing():
    nb = release()
    del nb["cells"][index_of(nb, "test_softmax")]
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == []


def test_duplicated_and_reordered_test_cells_are_skipped():
    nb = release()
    copy_of_test = copy.deepcopy(cell_of(nb, "test_softmax"))
    copy_of_test["id"] = "pasted-copy"
    copy_of_test["source"] = SNEAKY
    moved = nb["cells"].pop(index_of(nb, "test_sdpa"))
    moved["source"] = SNEAKY
    nb["cells"].insert(0, moved)
    nb["cells"].append(copy_of_test)
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == []


def test_test_cell_split_in_two_runs_neither_part():
    nb = release()
    index = index_of(nb, "test_softmax")
    second_half = copy.deepcopy(nb["cells"][index])
    second_half["id"] = "split-off"  # a split keeps the metadata and makes a new id
    second_half["source"] = SNEAKY
    nb["cells"].insert(index + 1, second_half)
    assert runs(build(nb)) == BASELINE


def test_edited_test_cell_is_not_run():
    nb = release()
    cell_of(nb, "test_causal_mask")["source"] = "check.causal_mask = lambda f: None"
    assert runs(build(nb)) == BASELINE


def test_test_cell_changed_to_markdown_changes_nothing():
    nb = release()
    cell = cell_of(nb, "test_softmax")
    cell["cell_type"] = "markdown"
    del cell["outputs"], cell["execution_count"]
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == []


def test_test_cell_with_renamed_grade_id_is_still_skipped_by_cell_id():
    nb = release()
    cell = cell_of(nb, "test_softmax")
    cell["metadata"]["nbgrader"]["grade_id"] = "my_test"
    cell["source"] = SNEAKY
    assert cell["id"] == "test_softmax"
    assert runs(build(nb)) == BASELINE


def test_test_cell_with_renamed_grade_id_and_cell_id_runs_as_student_code():
    nb = release()
    cell = cell_of(nb, "test_softmax")
    cell["metadata"]["nbgrader"]["grade_id"] = "my_test"
    cell["id"] = "my-cell"
    prog = build(nb)
    renamed = [c for c in prog.cells if c.label == "cell 9 (my_test)"]
    assert len(renamed) == 1
    assert renamed[0].origin == "student"
    assert renamed[0].source == "check.softmax(softmax)"
    assert labels(prog).index(("cell 9 (my_test)", "student")) == 4  # right after softmax


def test_edited_locked_cell_runs_the_instructors_version_with_a_note():
    nb = release()
    cell = cell_of(nb, "imports")
    cell["source"] = "import math\nimport numpy as np\nimport scipy\ncheck = None"
    prog = build(nb)
    assert labels(prog) == EXPECTED_LABELS
    assert prog.cells[1].source == text(cell_of(release(), "imports"))
    assert "scipy" not in "".join(c.source for c in prog.cells)
    assert prog.notes == [
        "the locked cell imports was edited: the instructor's version ran instead"]


def test_trailing_whitespace_in_a_locked_cell_is_not_an_edit():
    nb = release()
    cell = cell_of(nb, "imports")
    cell["source"] = [line.rstrip("\n") + "   \n" for line in cell["source"]] + ["\n\n"]
    assert build(nb).notes == []


def test_moved_locked_cell_runs_where_the_student_put_it():
    nb = release()
    nb["cells"].append(nb["cells"].pop(index_of(nb, "imports")))
    prog = build(nb)
    assert labels(prog)[-1] == ("imports (instructor)", "instructor")
    assert labels(prog)[0] == ("setup (instructor)", "instructor")
    assert prog.notes == []


def test_deleted_locked_cell_is_put_back_after_the_previous_cell_found():
    nb = release()
    del nb["cells"][index_of(nb, "imports")]
    prog = build(nb)
    assert [label for label, _ in labels(prog)[:3]] == [
        "setup (instructor)", "imports (instructor)", "cell 5 (softmax-demo)"]
    assert prog.cells[1].source == text(cell_of(release(), "imports"))
    assert prog.notes == [
        "the locked cell imports was deleted: the instructor's version ran in its place"]


def test_both_locked_cells_deleted_are_put_back_in_instructor_order():
    nb = release()
    for grade_id in ("imports", "setup"):
        del nb["cells"][index_of(nb, grade_id)]
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert len(prog.notes) == 2


def test_deleted_locked_cell_goes_after_a_moved_predecessor():
    # The previous instructor cell (setup) now sits after softmax: imports follows it.
    nb = release()
    setup = nb["cells"].pop(index_of(nb, "setup"))
    del nb["cells"][index_of(nb, "imports")]
    nb["cells"].insert(index_of(nb, "softmax") + 1, setup)
    names = [label for label, _ in labels(build(nb))]
    assert names[:4] == ["cell 4 (softmax-demo)", "cell 6 (softmax)",
                         "setup (instructor)", "imports (instructor)"]


def test_setup_changed_to_raw_is_inserted_at_the_start():
    nb = release()
    cell = cell_of(nb, "setup")
    cell["cell_type"] = "raw"
    prog = build(nb)
    assert labels(prog) == EXPECTED_LABELS
    assert prog.cells[0].source == text(cell)
    assert prog.notes == [
        "the locked cell setup is a raw cell in the submission: the instructor's version ran"]


def test_locked_cell_changed_to_markdown_with_a_code_copy_runs_once():
    nb = release()
    setup = cell_of(nb, "setup")
    pasted = copy.deepcopy(setup)
    pasted["id"] = "pasted"
    setup["cell_type"] = "markdown"
    nb["cells"].append(pasted)  # the first setup cell counts: this one is a copy
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == [
        "the locked cell setup is a markdown cell in the submission: the instructor's version ran"]


def test_manually_graded_answer_runs_as_student_code():
    # grade and solution: nbgrader's manually graded answer, where the student writes
    instructor = release()
    cell_of(instructor, "softmax")["metadata"]["nbgrader"]["grade"] = True
    prog = build(release(), instructor)
    assert labels(prog) == EXPECTED_LABELS


def test_copy_of_a_locked_cell_is_skipped_with_a_note_when_it_holds_other_code():
    nb = release()
    index = index_of(nb, "imports")
    pasted = copy.deepcopy(nb["cells"][index])
    pasted["id"] = "pasted"
    pasted["source"] = "def helper():\n    return 1"
    nb["cells"].insert(index_of(nb, "softmax"), pasted)
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == [
        "cell 8 (imports) is a copy of the locked cell imports, so it was not run"]


def test_extra_student_cell_runs_in_place():
    nb = release()
    helper = code_cell("def stable_max(x, axis):\n    return x.max(axis=axis, keepdims=True)")
    nb["cells"].insert(index_of(nb, "softmax"), helper)
    prog = build(nb)
    assert labels(prog)[3:5] == [("cell 8", "student"), ("cell 9 (softmax)", "student")]
    assert prog.cells[3].source == helper["source"]
    assert prog.notes == []


def test_solution_cell_changed_to_markdown_is_not_run_and_noted():
    nb = release()
    cell_of(nb, "causal_mask")["cell_type"] = "markdown"
    prog = build(nb)
    assert "cell 12 (causal_mask)" not in [label for label, _ in labels(prog)]
    assert len(prog.cells) == len(BASELINE) - 1
    assert prog.notes == ["the answer cell causal_mask is a markdown cell, so it was not run"]


def test_solution_with_no_code_anywhere_is_noted():
    nb = release()
    nb["cells"] = [c for c in nb["cells"] if c.get("id") in ("setup", "imports")]
    prog = build(nb)
    assert [origin for _, origin in labels(prog)] == ["instructor"] * len(LOCKED_IDS)
    assert prog.notes[-1] == "the submission has no code of its own"


def test_empty_student_cells_are_no_code_of_their_own():
    nb = release()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and cell["id"] not in LOCKED_IDS:
            cell["source"] = "  \n"
    assert build(nb).notes == ["the submission has no code of its own"]


def test_student_code_is_not_reported_missing():
    assert "the submission has no code of its own" not in build(release()).notes


def test_another_language_is_noted():
    nb = release()
    nb["metadata"]["kernelspec"] = {"name": "ir", "language": "R", "display_name": "R"}
    nb["metadata"]["language_info"] = {"name": "R"}
    prog = build(nb)
    assert runs(prog) == BASELINE
    assert prog.notes == ["the notebook is set up for R, but it was run as Python"]


def test_malformed_cells_are_treated_as_absent():
    nb = release()
    nb["cells"].insert(0, "not a cell")
    nb["cells"].insert(0, None)
    nb["cells"].insert(0, {"source": "print('no cell type')"})
    def cell(cell_id):
        return nb["cells"][index_by_id(nb, cell_id)]
    cell("softmax")["metadata"]["nbgrader"] = ["not", "a", "dict"]
    cell("causal_mask")["metadata"] = None
    cell("test_sdpa")["metadata"] = None  # still a test cell, by cell id
    cell("test_softmax")["metadata"]["nbgrader"]["grade_id"] = ["unhashable"]
    nb["cells"].append(code_cell(12345))
    nb["cells"].append(code_cell(["x = 1\n", None, "y = 2"]))
    prog = build(nb)
    runs_by_label = {cell.label: cell for cell in prog.cells}
    assert runs_by_label["cell 11 (softmax)"].origin == "student"  # by cell id
    assert runs_by_label["cell 15 (causal_mask)"].source == text(cell_of(release(), "causal_mask"))
    assert not any("check." in cell.source for cell in prog.cells[2:])
    assert [cell.source for cell in prog.cells[-2:]] == ["", "x = 1\ny = 2"]
    assert len(prog.cells) == len(BASELINE) + 2


@pytest.mark.parametrize("submission", [{}, [], None, "text", {"cells": "nope"},
                                        {"cells": [], "metadata": []},
                                        {"cells": [], "metadata": {"kernelspec": "python"}}])
def test_malformed_submission_gives_only_the_locked_cells(submission):
    prog = build(submission)
    assert labels(prog) == LOCKED_LABELS
    assert prog.notes[-1] == "the submission has no code of its own"


def test_malformed_instructor_cells_are_ignored():
    instructor = release()
    instructor["cells"].insert(0, "not a cell")
    instructor["cells"][index_of(instructor, "imports")]["metadata"]["nbgrader"] = []
    prog = build(release(), instructor)
    # imports lost its locked role in this instructor notebook, so the student's cell runs
    assert labels(prog)[1] == ("cell 4 (imports)", "student")
    assert labels(prog)[0] == ("setup (instructor)", "instructor")


def test_source_as_a_list_or_a_string_is_the_same_program():
    as_lists, as_strings = release(), release()
    for cell in as_lists["cells"]:
        cell["source"] = text(cell).splitlines(keepends=True)
    for cell in as_strings["cells"]:
        cell["source"] = text(cell)
    assert isinstance(cell_of(as_lists, "setup")["source"], list)
    assert runs(build(as_lists, as_strings)) == runs(build(as_strings, as_lists)) == BASELINE


# --------------------------------------------------------------------------- read_submission


def write(tmp_path, content, name="submission.ipynb"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content),
                        encoding="utf-8")
    return path


def reason(tmp_path, content) -> str:
    with pytest.raises(program.InvalidNotebook) as err:
        program.read_submission(write(tmp_path, content))
    return str(err.value)


def test_reads_the_release_notebook_as_it_is(tmp_path):
    assert program.read_submission(RELEASE_PATH) == release()


@pytest.mark.parametrize("content", [b"", "   \n\t\r\n"])
def test_empty_file(tmp_path, content):
    assert reason(tmp_path, content) == "empty file"


def test_invalid_json(tmp_path):
    message = reason(tmp_path, '{"cells": [' + "1, " * 100)
    assert message.startswith("invalid JSON (")
    assert len(message) <= len("invalid JSON ()") + 80


def test_deeply_nested_json_is_invalid_not_a_crash(tmp_path):
    assert reason(tmp_path, "[" * 200_000 + "]" * 200_000).startswith("invalid JSON (")


def test_not_utf8(tmp_path):
    assert reason(tmp_path, b"\xff\xfe{\x00\"\x00c\x00") == "not UTF-8 text"


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + _RELEASE_TEXT.encode("utf-8"))
    assert program.read_submission(path) == release()


@pytest.mark.parametrize("content", [[], [{"cells": []}], "42", {"nbformat": 4},
                                     {"nbformat": 4, "cells": {}}, {"nbformat": 3}])
def test_not_a_notebook(tmp_path, content):
    assert reason(tmp_path, content) == "not a Jupyter notebook (no list of cells)"


@pytest.mark.parametrize("version", [1, 2, 5, "4"])
def test_unsupported_nbformat(tmp_path, version):
    shown = repr(version) if isinstance(version, str) else version
    message = reason(tmp_path, {"nbformat": version, "cells": []})
    assert message == f"nbformat {shown} is not supported"


def test_nbformat_3_is_converted_and_its_code_runs(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {},
          "worksheets": [{"cells": [{"cell_type": "code", "input": "x = 1", "language": "python",
                                     "outputs": [], "metadata": {}}], "metadata": {}}]}
    nb = program.read_submission(write(tmp_path, v3))
    assert nb["nbformat"] == 4
    assert [(c["cell_type"], text(c)) for c in nb["cells"]] == [("code", "x = 1")]
    prog = build(nb)
    assert ("x = 1", "student") in runs(prog)
    assert [l for l in labels(prog) if l[1] == "instructor"] == LOCKED_LABELS  # the locked cells, put back


def test_malformed_nbformat_3_is_invalid_not_a_crash(tmp_path):
    broken = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"no": "cells"}]}
    assert reason(tmp_path, broken).startswith("nbformat 3 notebook could not be converted")


def test_nbformat_4_0_without_cell_ids(tmp_path):
    nb = release()
    nb["nbformat_minor"] = 0
    for cell in nb["cells"]:
        del cell["id"]
    read = program.read_submission(write(tmp_path, nb))
    assert read == nb
    assert runs(build(read)) == BASELINE


def test_oversize_file(tmp_path, monkeypatch):
    monkeypatch.setattr(program, "MAX_NOTEBOOK_BYTES", 100)
    content = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})
    assert len(content) <= 100
    assert program.read_submission(write(tmp_path, content.ljust(100)))["cells"] == []
    assert reason(tmp_path, content.ljust(101)) == "file larger than 100 bytes"


def test_oversize_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = write(tmp_path, " " * 101)
    monkeypatch.setattr(program, "MAX_NOTEBOOK_BYTES", 100)

    def no_reading(*args, **kwargs):
        raise AssertionError("an oversize file was opened")
    monkeypatch.setattr(program.Path, "open", no_reading)
    with pytest.raises(program.InvalidNotebook, match="file larger than 100 bytes"):
        program.read_submission(path)


def test_oversize_message_in_megabytes(tmp_path, monkeypatch):
    monkeypatch.setattr(program, "MAX_NOTEBOOK_BYTES", 1024 * 1024)
    assert reason(tmp_path, " " * (1024 * 1024 + 1)) == "file larger than 1 MB"


def test_default_limit_is_200_mb():
    assert program.MAX_NOTEBOOK_BYTES == 200 * 1024 * 1024
    assert str(program._too_large()) == "file larger than 200 MB"


def test_a_folder_is_not_a_notebook(tmp_path):
    folder = tmp_path / "looks_like.ipynb"
    folder.mkdir()
    with pytest.raises(program.InvalidNotebook, match="not a regular file"):
        program.read_submission(folder)


def test_missing_file_is_an_invalid_notebook(tmp_path):
    with pytest.raises(program.InvalidNotebook, match="cannot be read"):
        program.read_submission(tmp_path / "absent.ipynb")


# --------------------------------------------------------------------------- test_plan


def source_notebook(name: str) -> dict:
    return json.loads(SOURCE_PATHS[name].read_text(encoding="utf-8"))


def plan_of(name: str) -> dict:
    return {spec.grade_id: spec for spec in program.test_plan(source_notebook(name))}


def test_plan_of_numpy_notebook():
    plan = program.test_plan(source_notebook("1_numpy"))
    assert [spec.grade_id for spec in plan] == [
        "test_softmax", "test_softmax_hidden", "test_causal_mask", "test_sdpa", "test_sdpa_hidden",
        "test_single_head", "test_single_head_hidden", "test_variance_growth", "test_sleeps_cat_weight",
        "test_masked_first_weight", "test_padding_mask"]
    assert program.max_points(plan) == 15.0
    by_id = {spec.grade_id: spec for spec in plan}
    assert by_id["test_softmax_hidden"] == program.TestSpec(
        "test_softmax_hidden", 1.0, (program.CheckCall("softmax", "softmax", (("hidden", True),)),),
        True)
    # a visible and a hidden call in one cell: one test, hidden by its marker
    assert by_id["test_causal_mask"] == program.TestSpec(
        "test_causal_mask", 1.0, (program.CheckCall("causal_mask", "causal_mask", ()),
                                  program.CheckCall("causal_mask", "causal_mask", (("hidden", True),))),
        True)
    assert by_id["test_softmax"] == program.TestSpec(
        "test_softmax", 1.0, (program.CheckCall("softmax", "softmax", ()),), False)
    assert by_id["test_sdpa"].calls == (program.CheckCall(
        "scaled_dot_product_attention", "scaled_dot_product_attention", ()),)
    assert [spec.hidden for spec in plan] == [False, True, True, False, True, False, True, True, True, True, True]


def test_plan_of_cupy_notebook():
    plan = plan_of("2_cupy")
    assert program.max_points(plan.values()) == 18.0
    assert plan["test_time_gpu"].calls == (program.CheckCall("gpu_timer", "time_gpu", ()),)
    assert plan["test_fused_softmax_hidden"].hidden


def test_plan_of_pytorch_notebook():
    plan = plan_of("3_pytorch")
    assert program.max_points(list(plan.values())) == 18.0
    hidden = plan["test_matches_torch_hidden"]
    assert hidden.calls == (program.CheckCall(
        "matches_torch_sdpa", "scaled_dot_product_attention", (("n_trials", 40), ("seed", 1))),)
    assert hidden.calls[0].kwargs_dict() == {"n_trials": 40, "seed": 1}
    assert hidden.hidden  # by its marker: the call itself has no hidden=True
    assert plan["test_module"].calls == (program.CheckCall("module", "SingleHeadAttention", ()),)
    assert not plan["test_matches_torch"].hidden


def test_plan_of_a_release_notebook_is_refused():
    with pytest.raises(program.PlanError, match="test_softmax_hidden has no check"):
        program.test_plan(release())


def test_max_points_of_an_empty_plan():
    assert program.max_points([]) == 0.0


def instructor_with_test(source, grade_id="test_it", **nbgrader) -> dict:
    """A minimal source notebook: a solution cell and one test cell."""
    meta = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
            "points": 1, **nbgrader}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        code_cell("def f(x):\n    return x",
                  metadata={"nbgrader": {"grade": False, "solution": True, "grade_id": "f"}}),
        code_cell(source, metadata={"nbgrader": meta})]}


def test_a_cell_with_several_calls_and_keywords():
    source = ("# a comment\n### BEGIN HIDDEN TESTS\ncheck.f(f, seed=3, hidden=True)\n"
              "check.g(f, tolerance=(1e-3, -2), label='x')\n### END HIDDEN TESTS\n")
    (spec,) = program.test_plan(instructor_with_test(source))
    assert spec.calls == (program.CheckCall("f", "f", (("hidden", True), ("seed", 3))),
                          program.CheckCall("g", "f", (("label", "x"), ("tolerance", (1e-3, -2)))))
    assert spec.hidden and spec.points == 1.0


def test_hidden_false_without_marker_is_not_hidden():
    (spec,) = program.test_plan(instructor_with_test("check.f(f, hidden=False)"))
    assert spec.hidden is False


def test_points_default_to_zero():
    nb = instructor_with_test("check.f(f)")
    del nb["cells"][1]["metadata"]["nbgrader"]["points"]
    assert program.test_plan(nb)[0].points == 0.0


def test_another_checker_name():
    (spec,) = program.test_plan(instructor_with_test("c.f(f)"), checker_name="c")
    assert spec.calls == (program.CheckCall("f", "f", ()),)
    with pytest.raises(program.PlanError):
        program.test_plan(instructor_with_test("check.f(f)"), checker_name="c")


@pytest.mark.parametrize("line, why", [
    ("assert f(1) == 1", "only calls check.<method>"),
    ("check.f(f, hidden=flag)", "the value of hidden is not a literal"),
    ("check.f(f, f)", "exactly one positional argument"),
    ("check.f()", "exactly one positional argument"),
    ("check.f(f(1))", "exactly one positional argument"),
    ("check.f(*args)", "exactly one positional argument"),
    ("check.f(f, **options)", "** arguments are not allowed"),
    ("other.f(f)", "only calls check.<method>"),
    ("check(f)", "only calls check.<method>"),
    ("x = check.f(f)", "only calls check.<method>"),
    ("check._private(f)", "private"),
])
def test_plan_refuses_anything_but_check_calls(line, why):
    source = f"check.f(f)\n{line}"
    with pytest.raises(program.PlanError) as err:
        program.test_plan(instructor_with_test(source))
    message = str(err.value)
    assert "test_it" in message and "line 2" in message
    assert why in message
    assert message.endswith(line)


def test_plan_refuses_invalid_python():
    with pytest.raises(program.PlanError, match=r"test_it: not valid Python \(check.f\(f,\)"):
        program.test_plan(instructor_with_test("check.f(f,"))


@pytest.mark.parametrize("source", ["", "# Hidden tests run here.\n",
                                    "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"])
def test_plan_refuses_a_test_cell_without_calls(source):
    with pytest.raises(program.PlanError, match="test_it has no check"):
        program.test_plan(instructor_with_test(source))


def test_plan_refuses_duplicate_grade_ids():
    nb = instructor_with_test("check.f(f)")
    nb["cells"].append(copy.deepcopy(nb["cells"][1]))
    with pytest.raises(program.PlanError, match="two cells have the grade_id test_it"):
        program.test_plan(nb)


def test_plan_refuses_a_test_sharing_a_solutions_grade_id():
    with pytest.raises(program.PlanError, match="grade_id f"):
        program.test_plan(instructor_with_test("check.f(f)", grade_id="f"))


@pytest.mark.parametrize("points, why", [(-1, "negative"), ("2", "not a number"),
                                         (True, "not a number"), (float("nan"), "not a number")])
def test_plan_refuses_bad_points(points, why):
    with pytest.raises(program.PlanError, match=f"test_it: points .* {why}"):
        program.test_plan(instructor_with_test("check.f(f)", points=points))


def test_plan_refuses_a_manually_graded_answer():
    nb = instructor_with_test("def g(): pass", solution=True)
    with pytest.raises(program.PlanError, match="test_it is a manually graded answer"):
        program.test_plan(nb)


def test_plan_refuses_a_test_cell_without_grade_id():
    nb = instructor_with_test("check.f(f)")
    del nb["cells"][1]["metadata"]["nbgrader"]["grade_id"]
    with pytest.raises(program.PlanError, match="cell 2 is a test cell without a grade_id"):
        program.test_plan(nb)


def test_plan_skips_malformed_and_non_test_cells():
    nb = instructor_with_test("check.f(f)")
    nb["cells"][:0] = ["not a cell", {"cell_type": "code", "metadata": None, "source": "x"},
                       code_cell("y", metadata={"nbgrader": "nope"})]
    assert [spec.grade_id for spec in program.test_plan(nb)] == ["test_it"]


def test_a_symbolic_link_is_not_read(tmp_path):
    """A link to the solutions must not be graded as the student's own notebook."""
    link = tmp_path / "1_numpy.ipynb"
    link.symlink_to(SOLUTIONS_DIR / "ch01_single_head" / "1_numpy.ipynb")
    with pytest.raises(program.InvalidNotebook, match="symbolic link"):
        program.read_submission(link)
