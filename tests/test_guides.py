"""The guides for course authors and instructors say what the repository holds.

``book/adding_a_chapter.md`` lists the files a chapter touches; the latest chapter is the
evidence: every file whose path carries its ``chNN`` is of a kind the guide lists, and every kind
the guide lists exists for it. ``book/instructor_guide.md`` and ``book/adding_a_chapter.md`` name
repository paths in backticks; each must exist, with a chapter placeholder (``<assignment>``,
``chNN_topic``, ``chNN``, ``<notebook>``) standing for every chapter of the registry and each of
its notebooks. A path with a wildcard names a kind of file that some chapters have
(``tests/test_chNN_benchmark_*.py``: a chapter whose page quotes a benchmark): it must match for
one chapter at least. A guide that drifts from the code fails here, naming the guide and the path.
"""
from __future__ import annotations

import fnmatch
import itertools
import re
import subprocess

import pytest

from autograder.paths import REPO_ROOT
from mha_checks.registry import COURSE

ADDING_A_CHAPTER = "book/adding_a_chapter.md"
INSTRUCTOR_GUIDE = "book/instructor_guide.md"
GUIDES = (ADDING_A_CHAPTER, INSTRUCTOR_GUIDE)
FILES_SECTION = "## The files a chapter touches"

FENCED_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
PATH_LIKE = re.compile(r"^[\w.{},*<>/-]+$")
CHAPTER_PLACEHOLDERS = ("<assignment>", "chNN_topic", "chNN")


def tracked_files() -> list:
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"the guides are checked against git's list of files, and git ls-files failed: {err}")
    return listing.stdout.splitlines()


def guide_text(guide: str) -> str:
    """A guide without its fenced code blocks: commands there are not claims about files."""
    return FENCED_BLOCK.sub("", (REPO_ROOT / guide).read_text(encoding="utf-8"))


def expand_braces(pattern: str) -> list:
    """``a/{x,y}.ipynb`` -> ``["a/x.ipynb", "a/y.ipynb"]``, as the shell would."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def for_chapter(pattern: str, chapter, notebook=None) -> str:
    text = pattern.replace("<assignment>", chapter.assignment).replace("chNN_topic", chapter.assignment)
    text = text.replace("chNN", chapter.assignment.split("_")[0])
    return text.replace("<notebook>", notebook.name) if notebook else text


def matches(pattern: str, files: list) -> list:
    folder = pattern.rstrip("/") + "/"
    return [f for f in files if fnmatch.fnmatchcase(f, pattern) or (pattern.endswith("/") and f.startswith(folder))
            or f.startswith(pattern + "/")]


# --------------------------------------------------------------------------- the files a chapter touches


def files_table(text: str) -> list:
    """The backticked paths in the first column of the guide's table of files."""
    section = text.split(FILES_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in INLINE_CODE.findall(row.split("|")[1])]


def names_chapter(pattern: str) -> bool:
    return any(p in pattern for p in CHAPTER_PLACEHOLDERS)


def test_the_guide_lists_every_kind_of_file_the_last_chapter_has():
    last = COURSE[-1]
    kinds = files_table(guide_text(ADDING_A_CHAPTER))
    assert kinds, f"{ADDING_A_CHAPTER} has no table under '{FILES_SECTION}'"
    globs = [g for kind in kinds if names_chapter(kind) for g in expand_braces(for_chapter(kind, last))]
    prefix = last.assignment.split("_")[0]
    files = tracked_files()
    unlisted = [f for f in files if prefix in f and not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert not unlisted, (
        f"{ADDING_A_CHAPTER}, '{FILES_SECTION}': the last chapter, {last.assignment}, has files of no kind "
        f"the table lists: {', '.join(unlisted)}. Add a row for their kind (with chNN_topic for the "
        "chapter's name), or move them where a listed kind lives.")


def test_every_kind_the_guide_lists_exists_for_the_last_chapter():
    last = COURSE[-1]
    files = tracked_files()
    problems = []
    for kind in files_table(guide_text(ADDING_A_CHAPTER)):
        if names_chapter(kind):
            missing = [g for g in expand_braces(for_chapter(kind, last)) if not matches(g, files)]
            problems += [f"`{kind}`: no file {g}" for g in missing]
        elif last.assignment not in (REPO_ROOT / kind).read_text(encoding="utf-8"):
            problems.append(f"`{kind}` does not name {last.assignment}")
    assert not problems, (
        f"{ADDING_A_CHAPTER}, '{FILES_SECTION}' lists kinds of files the last chapter, {last.assignment}, "
        "does not have:\n  " + "\n  ".join(problems) + "\nEither the chapter is incomplete, or the row "
        "is no longer what a chapter touches: fix the one that is wrong.")


# --------------------------------------------------------------------------- every path a guide names


def repository_paths(text: str, top_level: set) -> list:
    """Backticked spans that name a file or folder of the repository (they start with one of its folders)."""
    spans = [span.strip() for span in INLINE_CODE.findall(text)]
    return sorted({s for s in spans if PATH_LIKE.match(s) and "/" in s and s.split("/", 1)[0] in top_level})


def concrete_paths(path: str) -> list:
    """The paths a named path stands for: once per chapter (and notebook) where it has a placeholder."""
    if not names_chapter(path) and "<notebook>" not in path:
        return expand_braces(path)
    notebooks = "<notebook>" in path
    return [g for ch in COURSE for nb in (ch.notebooks if notebooks else (None,))
            for g in expand_braces(for_chapter(path, ch, nb))]


@pytest.mark.parametrize("guide", GUIDES)
def test_every_repository_path_a_guide_names_exists(guide):
    files = tracked_files()
    top_level = {f.split("/", 1)[0] for f in files if "/" in f}
    paths = repository_paths(guide_text(guide), top_level)
    assert paths, f"{guide}: no repository path found; has the guide's notation changed?"
    problems = []
    for path in paths:
        if "<" in re.sub(r"<(assignment|notebook)>", "", path):
            problems.append(f"`{path}`: a placeholder this test does not know; write it as <assignment>, "
                            "<notebook> or chNN_topic, or name a real file")
            continue
        missing = [p for p in concrete_paths(path) if not matches(p, files)]
        if "*" in path and len(missing) < len(concrete_paths(path)):
            continue  # a kind of file some chapters have, and at least one has it
        if missing:
            problems.append(f"`{path}`: no {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    assert not problems, (
        f"{guide} names repository paths that do not exist:\n  " + "\n  ".join(problems)
        + "\nCorrect the guide to the path the code uses (or restore the file, if the guide is right).")
