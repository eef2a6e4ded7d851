"""The command line every benchmark shares: ``python -m benchmarks.<name>``, its ``--json`` option,
writing the result, and the exit status 2 with a one-line message when a solution notebook it runs is
missing.

Each benchmark adds its own options between :func:`parser` and :func:`add_json_option`; the rest of
its command line is here, so that the five commands answer ``--help``, ``--json`` and a missing
notebook alike.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Optional

from benchmarks.solutions import REPO, MissingSolution


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<name>``, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.split("\n\n")[0])


def add_json_option(p: argparse.ArgumentParser, default: Optional[Path] = None) -> None:
    """``--json PATH``; with a ``default`` (the committed run a chapter page quotes), ``--json`` alone writes there."""
    if default is None:
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    else:
        p.add_argument("--json", nargs="?", const=str(default), metavar="PATH",
                       help=f"also write the results as JSON (default path: {Path(default).relative_to(REPO)})")


def json_text(result: dict, indent: int = 2) -> str:
    """The JSON text of a result as the committed runs hold it: indented, one final newline."""
    return json.dumps(result, indent=indent) + "\n"


def write_json(path, text: str) -> None:
    """Write a result's JSON text where ``--json`` said, and say so."""
    Path(path).write_text(text, encoding="utf-8")
    print(f"\nwrote {path}")


def reports_missing_solution(name: str):
    """Decorate a benchmark's ``main``: a :class:`MissingSolution` becomes its message on stderr and
    exit status 2, since a student or instructor who has not written that notebook yet needs the file's
    name, not a traceback."""
    def decorate(main):
        @functools.wraps(main)
        def main_or_2(argv=None) -> int:
            try:
                return main(argv)
            except MissingSolution as err:
                print(f"benchmarks.{name}: {err}", file=sys.stderr)
                return 2
        return main_or_2
    return decorate
