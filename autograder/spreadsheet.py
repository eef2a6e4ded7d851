"""The CSV files the grader writes, safe to open in a spreadsheet.

Their cells carry names the grader did not choose: a Moodle folder name holds
the student's display name, a zip member's path whatever its author typed. A
spreadsheet takes a cell that starts with ``=``, ``+``, ``-`` or ``@`` for a
formula, which can fetch a web page or start a program when the instructor
opens the file (tab and carriage return are stripped by some importers, so
they can hide such a start). Every text cell that starts so gets a leading
single quote, which spreadsheets read as "this is text" and which leaves the
name readable (OWASP, "CSV Injection").

Numbers pass through: the grader's scores, maximum scores and times are never
negative (a test cell with negative points is refused), so the text of a
number never starts with one of these characters.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["FORMULA_STARTS", "as_text", "write_rows"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Spreadsheets set to a language whose list separator is ';' split these
# comma-separated files at ';' (and import dialogs offer tab), so a formula
# can also start right after one of them inside a cell.
_FORMULA_START = re.compile(r"(?:^|(?<=[;\t]))(?=[=+\-@\t\r])")


def as_text(cell):
    """``cell`` as a spreadsheet shows it as text: a quote before any formula start."""
    if not isinstance(cell, str):
        return cell
    return _FORMULA_START.sub("'", cell)


def write_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write ``header`` and ``rows`` as CSV: every CSV file of the grader is written here."""
    # A folder name that is not UTF-8 reaches here with its bytes as surrogates:
    # written escaped, it stays visible and the file stays UTF-8.
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow([as_text(cell) for cell in header])
        writer.writerows([as_text(cell) for cell in row] for row in rows)
