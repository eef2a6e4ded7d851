"""The README and the website say which chapters exist, and they say what the registry says.

``mha_checks/registry.py`` is the one list of the course's chapters. The README's paragraph of
chapters, the chapter map of the website's first page (``book/intro.md``), "What comes next"
(``book/whats_next.md``) and the table of contents (``_toc.yml``) are written by hand, so they
are checked against it here, not copied into this test: adding a chapter to the registry makes
these tests fail until the texts show it, and a text that names a chapter the registry does not
have, or that still speaks of chapters to come ("Chapters 1 to N are available", "being
written"), fails whatever N is."""
import re

import pytest

from autograder.paths import REPO_ROOT
from mha_checks.registry import COURSE

yaml = pytest.importorskip("yaml")

README, INTRO, WHATS_NEXT, TOC = "README.md", "book/intro.md", "book/whats_next.md", "_toc.yml"
PROSE = (README, INTRO, WHATS_NEXT)
DOCUMENTS = PROSE + (TOC,)

NUMBERS = {ch.number for ch in COURSE}
ASSIGNMENTS = {ch.assignment for ch in COURSE}
# Counts written out in words ("the course's eight chapters") are checked like digits.
NUMBER_WORDS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}

# A reference to chapters by number: "chapter 4", "Chapter 1 ·", "chapters 7-8", "chapters 6 to 8".
CHAPTER_NUMBERS = re.compile(r"\bchapters?\s+(\d+)(?:\s*(?:to|through|and|-|–)\s*(\d+))?", re.I)
# Anything shaped like an assignment name: ch09_attention_sinks, or ch01_* in a glob.
ASSIGNMENT_LIKE = re.compile(r"\bch(\d+)_(\w*)")
# A row of a Markdown table whose first cell is a number: a chapter map's "| 9 | ... |".
NUMBERED_ROW = re.compile(r"^\|\s*(\d+)\s*\|", re.M)
# "eight chapters", "8 chapters": a count of the course's chapters.
CHAPTER_COUNT = re.compile(r"\b(\w+)\s+chapters\b", re.I)
# "Chapters 1 to 6 are complete", "chapters 1-6 are now available", "the first six chapters are ...":
# a range that says which chapters exist; it is only true while it ends at the last chapter.
EXISTING_RANGE = re.compile(
    r"\bchapters\s+(\d+)\s*(?:to|through|-|–)\s*(\d+)\s+(?:are|have\s+been)\s+(?:\w+\s+){0,2}?"
    r"(?:complete|available|finished|ready|written|published|done|out|online)\b", re.I)
FIRST_CHAPTERS = re.compile(r"\bthe\s+first\s+(\w+)\s+chapters\s+(?:are|have)\b", re.I)
# Chapters still to come. "not yet" alone is not enough ("a good sign, not yet a grade" is about
# grading), so it counts only where it says that something is not yet there.
UNFINISHED = re.compile(
    r"being\s+written|coming\s+soon|\bnot\s+yet\s+(?:available|written|ready|finished|published|online|out|here|done)\b"
    r"|\b(?:are|is)\s+not\s+yet\b|\bwill\s+appear\s+(?:here|as|when|once|later)\b|\bin\s+preparation\b"
    r"|\bwork\s+in\s+progress\b|\bunder\s+construction\b|\bforthcoming\b|\bupcoming\b", re.I)


def text_of(document: str) -> str:
    return (REPO_ROOT / document).read_text(encoding="utf-8")


def where(document: str, text: str, position: int) -> str:
    return f"{document}, line {text.count(chr(10), 0, position) + 1}"


def count_in(word: str):
    """The number a count is written with (``"eight"`` or ``"8"``), or None when the word is no count."""
    return int(word) if word.isdigit() else NUMBER_WORDS.get(word.lower())


def registry_chapters() -> str:
    return ", ".join(f"{ch.number} ({ch.assignment})" for ch in COURSE)


def intro_chapter_map() -> list:
    """``(number cell, chapter cell)`` for each row of the table under the intro's "## Chapters"."""
    section = text_of(INTRO).split("\n## Chapters\n", 1)
    assert len(section) == 2, f"{INTRO} has no '## Chapters' section: its chapter map belongs there"
    section = section[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, f"{INTRO}'s '## Chapters' section has no table of chapters"
    # The first two lines are the table's header and its separator.
    return [tuple(cell.strip() for cell in row.strip("|").split("|")[:2]) for row in rows[2:]]


def toc_parts() -> list:
    return yaml.safe_load(text_of(TOC))["parts"]


def toc_files(part) -> list:
    return [entry["file"] for chapter in part.get("chapters", [])
            for entry in [chapter, *chapter.get("sections", [])]]


def test_every_chapter_of_the_registry_has_its_page():
    # The texts are checked against the registry, so the registry itself must not list a chapter
    # that has no page on the website.
    for ch in COURSE:
        pages = [REPO_ROOT / "book" / f"{ch.assignment}{suffix}" for suffix in (".ipynb", ".md")]
        assert any(p.is_file() for p in pages), (
            f"mha_checks/registry.py lists chapter {ch.number} ({ch.assignment}), but there is no "
            f"book/{ch.assignment}.ipynb: write its page or take it out of the registry")


def test_the_intro_map_has_one_row_per_chapter_in_order():
    found = intro_chapter_map()
    expected = [(str(ch.number), f"{{doc}}`{ch.assignment}`") for ch in COURSE]
    missing = [row for row in expected if row not in found]
    unknown = [row for row in found if row not in expected]
    assert not missing, (
        f"{INTRO}'s chapter map (the table under '## Chapters') has no row for {missing}: add a row "
        f"'| number | {{doc}}`assignment` | the idea |' for each chapter of mha_checks/registry.py")
    assert not unknown, (
        f"{INTRO}'s chapter map has rows {unknown} that are no chapter of mha_checks/registry.py "
        f"(it has {registry_chapters()}): each row is '| number | {{doc}}`assignment` | the idea |'")
    assert found == expected, (
        f"{INTRO}'s chapter map lists the chapters in the order {[n for n, _ in found]}, "
        f"not in the registry's order {[n for n, _ in expected]}: reorder its rows")


def test_the_toc_has_a_part_per_chapter_with_its_page_in_order():
    captioned = [(part["caption"], toc_files(part)[:1]) for part in toc_parts()
                 if re.match(r"chapter\s+\d+", part.get("caption", ""), re.I)]
    expected = [(f"Chapter {ch.number} · {ch.title}", [f"book/{ch.assignment}"]) for ch in COURSE]
    for caption, files in expected:
        assert (caption, files) in captioned, (
            f"{TOC} has no part captioned '{caption}' whose first file is {files[0]}: add it, in "
            f"the registry's order, above 'Next steps' (the caption is 'Chapter N · ' and the "
            f"chapter's title in mha_checks/registry.py)")
    assert captioned == expected, (
        f"{TOC}'s chapter parts are {captioned}; mha_checks/registry.py says {expected}: "
        f"take out the parts of chapters it does not have and keep its order")


def test_the_toc_lists_no_chapter_files_the_registry_lacks():
    for part in toc_parts():
        for file in toc_files(part):
            found = re.match(r"(?:book|exercises)/(ch\d+_\w+)", file)
            assert not found or found.group(1) in ASSIGNMENTS, (
                f"{TOC} lists {file}, but {found.group(1)} is no chapter of mha_checks/registry.py "
                f"(it has {registry_chapters()}): remove the entry, or add the chapter to the registry")


def test_the_readme_names_every_chapter_by_its_title():
    text = text_of(README)
    for ch in COURSE:
        title = r"\s+".join(re.escape(word) for word in ch.title.split())
        assert re.search(title, text, re.I), (
            f"{README} does not name chapter {ch.number}, '{ch.title}': its paragraph that lists the "
            f"chapters (under the introduction) should name each chapter of mha_checks/registry.py "
            f"by its registry title")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_no_document_names_a_chapter_the_registry_lacks(document):
    text = text_of(document)
    for found in CHAPTER_NUMBERS.finditer(text):
        numbers = {int(n) for n in found.groups() if n}
        assert numbers <= NUMBERS, (
            f"{where(document, text, found.start())}: '{found.group(0)}' names chapter "
            f"{sorted(numbers - NUMBERS)}, which mha_checks/registry.py does not have "
            f"(it has {registry_chapters()}): correct the number or remove the mention")
    for found in ASSIGNMENT_LIKE.finditer(text):
        known = int(found.group(1)) in NUMBERS and (not found.group(2) or found.group(0) in ASSIGNMENTS)
        assert known, (
            f"{where(document, text, found.start())}: '{found.group(0)}' is no chapter of "
            f"mha_checks/registry.py (it has {registry_chapters()}): link only chapters that exist")
    for found in NUMBERED_ROW.finditer(text):
        assert int(found.group(1)) in NUMBERS, (
            f"{where(document, text, found.start())}: a table row for chapter {found.group(1)}, which "
            f"mha_checks/registry.py does not have (it has {registry_chapters()}): remove the row")


@pytest.mark.parametrize("document", PROSE)
def test_no_document_miscounts_the_chapters(document):
    text = text_of(document)
    for found in CHAPTER_COUNT.finditer(text):
        count = count_in(found.group(1))
        assert count is None or count == len(COURSE), (
            f"{where(document, text, found.start())}: '{found.group(0)}', but mha_checks/registry.py "
            f"has {len(COURSE)} chapters: correct the count, or say it without one")


@pytest.mark.parametrize("document", PROSE)
def test_no_document_speaks_of_chapters_still_to_come(document):
    text, first, last = text_of(document), COURSE[0].number, COURSE[-1].number
    for found in EXISTING_RANGE.finditer(text):
        start, end = int(found.group(1)), int(found.group(2))
        assert (start, end) == (first, last), (
            f"{where(document, text, found.start())}: '{found.group(0)}', but mha_checks/registry.py "
            f"has chapters {first} to {last}, each with its page: say that every chapter is there, "
            f"better with no range or count that goes stale when a chapter is added")
    for found in FIRST_CHAPTERS.finditer(text):
        count = count_in(found.group(1))
        assert count is None or count >= len(COURSE), (
            f"{where(document, text, found.start())}: '{found.group(0)}', but mha_checks/registry.py "
            f"has {len(COURSE)} chapters, each with its page: say that every chapter is there")
    found = UNFINISHED.search(text)
    assert not found, (
        f"{where(document, text, found.start())}: '{found.group(0)}' says chapters are still to "
        f"come, but every chapter of mha_checks/registry.py ({registry_chapters()}) has its page: "
        f"say what exists, not what is being written")
