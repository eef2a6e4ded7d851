"""The course website builds cleanly, and its key pages contain what they promise.

One Jupyter Book build (`jupyter-book build . -W -n --keep-going`, the chapter
pages executed, warnings as errors) into a temporary folder, shared by the tests
of this module. Needs jupyter-book 1.x; takes about half a minute.
"""
import re

import pytest

from conftest import BUILD_TIMEOUT_S, REPO_ROOT, page_html
from course import ASSIGNMENTS
from mha_checks import registry

pytest.importorskip("jupyter_book")
yaml = pytest.importorskip("yaml")


def exercise_pages():
    return [f"exercises/{ch.assignment}/{nb.name}" for ch, nb in registry.all_notebooks()]


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_book_builds_without_warnings(build):
    returncode, log, _ = build
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert returncode == 0, (
        "jupyter-book build -W failed; warnings and errors:\n"
        + "\n".join(warnings[-40:])
        + "\n--- end of the log ---\n"
        + log[-4000:]
    )


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_pages_exist(build):
    _, _, html = build
    pages = ["index", "book/intro", "book/how_to_use", "book/instructor_guide"]
    pages += [f"book/{assignment}" for assignment in ASSIGNMENTS] + exercise_pages()
    missing = [p for p in pages if not (html / f"{p}.html").is_file()]
    assert not missing, f"pages not built: {missing}"


def test_toc_lists_every_chapter_of_the_registry_in_order():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [entry["file"] for part in toc["parts"] for chapter in part["chapters"]
             for entry in [chapter, *chapter.get("sections", [])]]
    listed = [f for f in files if f.startswith(("book/ch", "exercises/"))]
    expected = []
    for assignment in ASSIGNMENTS:
        expected += [f"book/{assignment}"] + [p for p in exercise_pages() if p.startswith(f"exercises/{assignment}/")]
    assert listed == expected


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_chapter_page_was_executed(build, assignment):
    _, _, html = build
    page = page_html(html, f"book/{assignment}")
    assert re.search(r"<img[^>]+src=\"[^\"]*_images/[^\"]+\.(png|svg)\"", page), \
        "no figure image in the chapter page: were its cells executed?"
    for label in ("NumPy", "CuPy", "PyTorch"):
        assert re.search(rf"<label[^>]*>\s*{label}\s*</label>", page), \
            f"tab '{label}' missing from the chapter page"
    assert "Traceback" not in page


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_exercise_pages_launch_in_colab(build):
    _, _, html = build
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo_url = config["repository"]["url"].rstrip("/")
    branch = config["repository"].get("branch", "main")
    org_repo = repo_url.split("github.com/", 1)[1]
    for name in exercise_pages():
        page = page_html(html, name)
        expected = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{name}.ipynb"
        assert expected in page, f"{name}: no Colab launch link to {expected}"
        assert (REPO_ROOT / f"{name}.ipynb").is_file()


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_exercise_notebooks_not_executed(build):
    """Exercise notebooks are shown as released: the build must not run them."""
    _, log, _ = build
    for name in (f"{p}.ipynb" for p in exercise_pages()):
        lines = [line for line in log.splitlines() if name in line]
        assert any("Excluded from execution" in line for line in lines), \
            f"{name} was not excluded from execution at build time"
        assert not any("Executing notebook" in line for line in lines), \
            f"{name} was executed at build time"
