"""An LMS export graded end to end: a Canvas-style zip of flat files."""
import shutil
import zipfile

from autograder.grading import grade, read_csv
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR
from course import FIRST, full_marks

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
