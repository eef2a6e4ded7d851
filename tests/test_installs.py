"""The light student install for the NumPy track works on its own.

A fresh virtual environment (no system site packages) gets NumPy, a Jupyter
kernel (ipykernel), nbclient to run the notebook, and the course's package as a
wheel built from this checkout (``pip wheel --no-deps``), and nothing else: no
torch, CuPy, nbgrader or jupyter-book. The NumPy notebook is copied to a folder
outside the repository, so its setup cell cannot fall back on the checkout and
must find the installed package (it never reaches its ``pip install git+...``
line, which would need the internet). Its setup cell, a solution from
``solutions/`` and the check cell under it run through nbclient, in a kernel of
that environment, and the check must print its ✔.

pip uses the package index configured on the machine (no special flags): the
test works offline where the packages are cached or on a local index. The
environment's size and the test's time are printed at the end of the run.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from mha_checks import registry

nbformat = pytest.importorskip("nbformat")

# The first NumPy-track notebook of the course, and in it the first function with a check.
CHAPTER, NB = next((ch, nb) for ch, nb in registry.all_notebooks() if nb.track == "numpy")
ASSIGNMENT, NOTEBOOK = CHAPTER.assignment, NB.name
LIGHT_INSTALL = ["numpy", "ipykernel", "nbclient"]
NOT_INSTALLED = ["torch", "cupy", "nbgrader", "jupyter_book"]
# What the package build needs from the checkout (pyproject.toml names no other file).
PACKAGE_FILES = ["pyproject.toml", "mha_checks", "setup.py", "setup.cfg", "MANIFEST.in",
                 "README.md", "LICENSE"]

RUN_NOTEBOOK = """\
import sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=120, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[1])
"""

PROBE = """\
import importlib.util, json, sys
import mha_checks
print("PROBE " + json.dumps({
    "prefix": sys.prefix,
    "mha_checks": mha_checks.__file__,
    "found": [m for m in %r if importlib.util.find_spec(m) is not None],
}))
""" % (NOT_INSTALLED,)


def cell_by_id(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise LookupError(f"no cell with nbgrader grade_id {grade_id!r}")


def first_check(exercise, solution):
    """``(function, its solution cell, its check cell)``: the first graded cell of the exercise
    notebook that calls ``check.<function>(<function>)``, and the solution notebook's cell
    that defines that function."""
    for cell in exercise.cells:
        found = re.search(r"^check\.(\w+)\(\1\)", cell.source, re.MULTILINE)
        if cell.cell_type == "code" and found and cell.metadata.get("nbgrader", {}).get("grade"):
            function = found.group(1)
            for answer in solution.cells:
                if answer.cell_type == "code" and re.search(rf"^def {function}\(", answer.source, re.MULTILINE):
                    return function, answer, cell
            raise LookupError(f"the solution notebook defines no {function}()")
    raise LookupError("no check cell calls check.<function>(<function>)")


def run(cmd, env, cwd, timeout=600):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def folder_mb(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


@pytest.mark.timeout(900)
def test_light_numpy_install_runs_a_check(tmp_path, report_line):
    start = time.monotonic()
    venv, work, src, wheels = (tmp_path / d for d in ("venv", "student", "src", "wheels"))
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               # Kernel specs, config and runtime files of this environment only.
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))

    # 1. The course package as a wheel, built from a copy of the checkout's package files
    #    (so the build leaves nothing in the working tree).
    src.mkdir()
    for name in PACKAGE_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "venv", str(venv)], env, tmp_path)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)], env, tmp_path)
    wheel = next(wheels.glob("*.whl"))

    # 2. The light install: NumPy, a kernel, nbclient and the course package; nothing else asked for.
    run([python, "-m", "pip", "install", "-q", *LIGHT_INSTALL, str(wheel)], env, tmp_path)
    installed_s = time.monotonic() - start

    # 3. The student's notebook, outside the repository: setup, imports, a solution, its check.
    exercise = nbformat.read(REPO_ROOT / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    solution = nbformat.read(REPO_ROOT / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    function, answer, check = first_check(exercise, solution)
    nb = nbformat.v4.new_notebook(metadata=exercise.metadata)
    nb.cells = [cell_by_id(exercise, "setup"), cell_by_id(exercise, "imports"), answer, check,
                nbformat.v4.new_code_cell(PROBE)]
    notebook = work / f"{NOTEBOOK}.ipynb"
    nbformat.write(nb, notebook)
    runner = tmp_path / "run_notebook.py"
    runner.write_text(RUN_NOTEBOOK, encoding="utf-8")
    run([python, str(runner), str(notebook), str(work)], env, work)

    ran = nbformat.read(notebook, as_version=4)
    texts = ["".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
             for cell in ran.cells]
    errors = [o for cell in ran.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"a cell raised: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert "✔" in texts[3], f"check.{function} printed no ✔:\n{texts[3]}"
    probe = json.loads(texts[4].split("PROBE ", 1)[1])
    assert Path(probe["prefix"]).resolve() == venv.resolve(), \
        f"the kernel ran in {probe['prefix']}, not in the light environment {venv}"
    assert Path(probe["mha_checks"]).resolve().is_relative_to(venv.resolve()), \
        f"mha_checks was imported from {probe['mha_checks']}, not from the installed wheel"
    assert not probe["found"], f"the light install has {probe['found']}; it must not"

    size_mb = folder_mb(venv)
    report_line(f"light NumPy-track environment ({', '.join(LIGHT_INSTALL)}, {wheel.name}): "
                f"{size_mb:.0f} MB; installed in {installed_s:.0f} s, whole test "
                f"{time.monotonic() - start:.0f} s; {ASSIGNMENT}/{NOTEBOOK}: check.{function} printed ✔; "
                f"not importable: {', '.join(NOT_INSTALLED)}")


def readme_command(heading):
    """The one-line bash command in the README's code block after ``**<heading>**``."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split(f"**{heading}**", 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert "\n" not in block, f"the README's '{heading}' command is not one line"
    return block


def test_ci_runs_the_readme_test_command():
    """.ci/run runs exactly the README's test command, which installs what the tests need."""
    command = readme_command("Run the tests")
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci.splitlines(), ".ci/run does not run the README's test command verbatim"
    for tool, package in (("bwrap", "bubblewrap"), ("chromium", "chromium"), ("npm", "npm")):
        assert f"command -v {tool} " in command and f"install -y -qq {package}" in command, \
            f"the README's test command does not install {package} when {tool} is missing"
    website = readme_command("Build the website")
    assert "command -v npm " in website, "the website command does not install npm when missing"
