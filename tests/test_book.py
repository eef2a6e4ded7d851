"""The course website builds cleanly, and its key pages contain what they promise.

One Jupyter Book build (`jupyter-book build . -W -n --keep-going`, the chapter
pages executed, warnings as errors) into a temporary folder, shared by the tests
of this module. Needs jupyter-book 1.x; takes about half a minute.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyter_book")
yaml = pytest.importorskip("yaml")

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "ch01_single_head"
NOTEBOOKS = ("1_numpy", "2_cupy", "3_pytorch")
BUILD_TIMEOUT_S = 900

# Run the jupyter-book CLI with the interpreter running the tests, so the build
# uses the same environment (and the same Jupyter kernel) as the tests.
JUPYTER_BOOK = [
    sys.executable,
    "-c",
    "import sys; from jupyter_book.cli.main import main; "
    "sys.argv[0] = 'jupyter-book'; sys.exit(main())",
]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build the book from the repository root into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    cmd = JUPYTER_BOOK + [
        "build", ".", "--path-output", str(out), "-W", "-n", "--keep-going",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    log = proc.stdout + proc.stderr
    return proc.returncode, log, out / "_build" / "html"


def _page(html_dir, name):
    path = html_dir / f"{name}.html"
    assert path.is_file(), f"{path.relative_to(html_dir)} was not built"
    return path.read_text(encoding="utf-8")


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
    pages = ["index", "book/intro", "book/how_to_use", "book/ch01_single_head",
             "book/instructor_guide"]
    pages += [f"exercises/{ASSIGNMENT}/{nb}" for nb in NOTEBOOKS]
    missing = [p for p in pages if not (html / f"{p}.html").is_file()]
    assert not missing, f"pages not built: {missing}"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_chapter_page_was_executed(build):
    _, _, html = build
    page = _page(html, "book/ch01_single_head")
    # the figures drawn by the page's code
    assert re.search(r"<img[^>]+src=\"[^\"]*_images/[^\"]+\.png\"", page), \
        "no figure image in the chapter page: were its cells executed?"
    # the "Cat sleeps" numbers, computed by the page's cells and glued into the text
    for number in ("0.97", "0.03", "0.50", "3.54"):
        assert number in page, f"'{number}' (Cat sleeps example) missing from the page"
    # the three-framework tabs
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
    for nb in NOTEBOOKS:
        page = _page(html, f"exercises/{ASSIGNMENT}/{nb}")
        expected = (
            f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/"
            f"exercises/{ASSIGNMENT}/{nb}.ipynb"
        )
        assert expected in page, f"{nb}: no Colab launch link to {expected}"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_exercise_notebooks_not_executed(build):
    """Exercise notebooks are shown as released: the build must not run them."""
    _, log, _ = build
    for nb in NOTEBOOKS:
        name = f"exercises/{ASSIGNMENT}/{nb}.ipynb"
        lines = [line for line in log.splitlines() if name in line]
        assert any("Excluded from execution" in line for line in lines), \
            f"{name} was not excluded from execution at build time"
        assert not any("Executing notebook" in line for line in lines), \
            f"{name} was executed at build time"
