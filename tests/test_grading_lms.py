"""LMS exports graded end to end: a Canvas-style zip of flat files, a hostile Moodle zip."""
import csv
import re
import shutil
import zipfile

from autograder import cli
from autograder.grading import grade
from autograder.results import read_csv
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR
from autograder.spreadsheet import FORMULA_STARTS
from course import FIRST, full_marks
from hostile_zips import make_zip_of_copies, name_bytes_marked_utf8

ASSIGNMENT = FIRST


def test_canvas_zip_is_graded_and_mapped_to_student_ids(tmp_path):
    files = {"lovelaceada_12345_67890_1_numpy.ipynb": SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb",
             "lovelaceada_LATE_12345_67891_1_numpy-1.ipynb": EXERCISES_DIR / ASSIGNMENT / "1_numpy.ipynb",
             "turingalan_555_777_1_numpy (1).ipynb": EXERCISES_DIR / ASSIGNMENT / "1_numpy.ipynb"}
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as z:
        for name, source in files.items():
            z.write(source, name)
    before = export.read_bytes()
    out = tmp_path / "out"
    results = grade(export, out, assignments=[ASSIGNMENT], gpu_available=False, verbose=False)
    scores = {(r.student, r.notebook): (r.status, r.score) for r in results}
    # Ada sent two files for 1_numpy: the undecorated name wins over the "-1" copy.
    assert scores[("lovelaceada_12345", "1_numpy")] == ("graded", full_marks(ASSIGNMENT, "1_numpy"))
    assert scores[("turingalan_555", "1_numpy")] == ("graded", 0)
    assert scores[("turingalan_555", "3_pytorch")] == ("missing", None)
    mapping = {row["student"]: row for row in read_csv(out / "students.csv")}
    assert mapping["lovelaceada_12345"]["lms_id"] == "12345"
    assert "turingalan_555_777_1_numpy (1).ipynb" in mapping["turingalan_555"]["files"]
    assert (out / "feedback" / "turingalan_555" / ASSIGNMENT / "1_numpy.html").is_file()
    assert export.read_bytes() == before
    shutil.rmtree(out / "unpacked")
    again = grade(export, out, assignments=[ASSIGNMENT], gpu_available=False, verbose=False)
    assert [(r.student, r.notebook, r.score) for r in again] == [(r.student, r.notebook, r.score) for r in results]


def test_a_moodle_zip_with_hostile_names_is_graded_and_its_csv_files_are_text(tmp_path, capsys):
    """Display names that are formulas, a name marked UTF-8 that is not, a file stored twice."""
    solved = (SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb").read_text(encoding="utf-8")
    blank = (EXERCISES_DIR / ASSIGNMENT / "1_numpy.ipynb").read_text(encoding="utf-8")
    formula = "=2+5+cmd|' -C calc'!A0_11_assignsubmission_file_"
    export = make_zip_of_copies(tmp_path / "moodle.zip", [
        (f"{formula}/1_numpy.ipynb", solved),
        ("Bob Stone_22_assignsubmission_file_/1_numpy.ipynb", blank),
        ("Bob Stone_22_assignsubmission_file_/1_numpy.ipynb", solved),  # which one did Bob mean?
        ("Ada Lovelace_33_assignsubmission_file_/1_numpy.ipynb", solved)])
    undecodable = "Zo\xe9 Ng_44_assignsubmission_file_/1_numpy.ipynb".encode("latin-1")
    name_bytes_marked_utf8(export, "Z" * len(undecodable), undecodable)
    out = tmp_path / "out"

    status = cli.main(["grade", str(export), "--out", str(out), "--assignment", ASSIGNMENT])

    printed = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert re.search(r"warning: moodle.zip: skipped 1 member\(s\) whose name is marked as UTF-8 "
                     r"but is not .*'Zo\\xe9 Ng_44_assignsubmission_file_/1_numpy.ipynb'", printed)
    assert re.search(r"warning: moodle.zip: skipped every copy of 1 file\(s\) stored more than once"
                     r".*'Bob Stone_22_assignsubmission_file_/1_numpy.ipynb' \(2 copies\)", printed)
    students = {row["lms_id"]: row for row in read_csv(out / "students.csv")}
    assert students["11"]["student"] == "2_5_cmd_-C_calc_A0_11"
    grades = {(row["student"], row["notebook"]): row for row in read_csv(out / "grades.csv")}
    marks = str(int(full_marks(ASSIGNMENT, "1_numpy")))
    for student in ("2_5_cmd_-C_calc_A0_11", "Ada_Lovelace_33"):
        row = grades[(student, "1_numpy")]
        assert (row["status"], row["score"], row["max_score"]) == ("graded", marks, marks)
    assert sorted(students) == ["11", "33"], "no file of Bob's or Zoe's is trusted; warnings name them"
    assert students["11"]["original"] == "'" + formula
    assert students["11"]["lms_name"] == "'=2+5+cmd|' -C calc'!A0"
    assert students["11"]["files"] == f"'{formula}/1_numpy.ipynb"
    for name in ("grades.csv", "students.csv"):
        with open(out / name, newline="", encoding="utf-8") as f:
            cells = [part for row in csv.reader(f) for cell in row
                     for part in re.split(r"[;\t]", cell)]
        assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)], name
