import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # the course helpers and the mutants library

# Under the README's test command each core runs a worker (-n auto): a worker computing on two threads
# would share its core with the other worker, and on a busy machine its threads mostly wait for each
# other (chapter 8's references took 134 s idle and 376 s loaded that way). One thread per worker, and
# per kernel or process it starts, unless the environment says otherwise; the tests of other machines
# set their own thread counts (tests/machines.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")


# --------------------------------------------------------------------------- the website, built once

REPO_ROOT = TESTS_DIR.parent
BUILD_TIMEOUT_S = 900

# Run the jupyter-book CLI with the interpreter running the tests, so the build
# uses the same environment (and the same Jupyter kernel) as the tests.
JUPYTER_BOOK = [
    sys.executable,
    "-c",
    "import sys; from jupyter_book.cli.main import main; "
    "sys.argv[0] = 'jupyter-book'; sys.exit(main())",
]


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """Build the book from the repository root into a temporary folder (once per test run)."""
    out = tmp_path_factory.mktemp("book")
    cmd = JUPYTER_BOOK + [
        "build", ".", "--path-output", str(out), "-W", "-n", "--keep-going",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    log = proc.stdout + proc.stderr
    return proc.returncode, log, out / "_build" / "html"


def page_html(html_dir, name):
    path = html_dir / f"{name}.html"
    assert path.is_file(), f"{path.relative_to(html_dir)} was not built"
    return path.read_text(encoding="utf-8")




# --------------------------------------------------------------------------- parallel runs (pytest-xdist)

SHARED_SCOPES = ("module", "package", "session")


def _shared_fixture(item) -> str:
    """The name of a module- or session-wide fixture the test uses, if any: the website's build first."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs if info is not None else {}
    shared = [name for name in sorted(defs) if defs[name] and defs[name][-1].scope in SHARED_SCOPES]
    return "build" if "build" in shared else next(iter(shared), "")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist adds the group to the test ids
def pytest_collection_modifyitems(config, items):
    """Under ``-n N --dist loadgroup`` (the README's test command), tests that share an expensive
    fixture run on one worker, so that it is made once: the website's build for every test that reads
    it, a module's own shared fixture (a graded class, a benchmark's run) for that module's tests, per
    chapter where the tests are parametrized by chapter. Every other test goes wherever a worker is
    free. Without pytest-xdist the marks do nothing."""
    for item in items:
        shared = _shared_fixture(item)
        if not shared or item.get_closest_marker("xdist_group"):  # a module may name its group itself
            continue
        if shared == "build":
            group = "website"
        else:
            chapter = getattr(getattr(item, "callspec", None), "params", {}).get("assignment", "")
            group = f"{item.module.__name__}:{chapter}"
        item.add_marker(pytest.mark.xdist_group(group))



# --------------------------------------------------------------------------- measurements in the run's summary

_SUMMARY_KEY = pytest.StashKey[list]()


@pytest.fixture
def report_line(request):
    """``report_line("...")`` prints the line in a section at the end of the run (browser
    requests to other hosts, screenshot paths, the light install's size and time)."""
    lines = request.config.stash.setdefault(_SUMMARY_KEY, [])
    return lambda line: lines.append(f"{request.node.name}: {line}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_SUMMARY_KEY, [])
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)
