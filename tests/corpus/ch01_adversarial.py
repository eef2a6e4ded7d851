"""Chapter 1 submissions crafted to fool, escape or break the grader.

Each :class:`Crafted` entry writes one student's files with ``build(dest)``,
``dest`` being ``SUBMISSIONS/<name>/ch01_single_head/``, and says what the
grader must make of them. Everything is generated at test time from the
repository's notebooks: a submission starts from the release notebook that
students receive (``exercises/``), its answer cells filled with the solution's
code (``solutions/``, the cell with the same grade_id, without the
``### BEGIN/END SOLUTION`` lines), and then the attack is planted.

The expectations follow from the grader's design: only the student's own code
cells run (instructor's locked cells in place of their copies, no test cell of
the submission), in a bubblewrap sandbox without the reference outputs; the
checks' collect halves call the student's functions there and send back plain
data, and the verdicts are reached in the grader's process. So nothing the
code does inside the sandbox changes a verdict, only the values its functions
return: every attempt to fool the checks is paired with a wrong softmax and
must score exactly what that wrong softmax scores.

Names start with the category: ``baseline-``, ``fool-``, ``isolation-``,
``robust-`` and ``torch-`` (attacks on the PyTorch notebook).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import nbformat

from autograder.paths import (CHECKS_DIR, EXERCISES_DIR, HIDDEN_CASES_DIR, PACKAGE_DIR, REPO_ROOT,
                              SOLUTIONS_DIR, VISIBLE_CASES_DIR)

ASSIGNMENT = "ch01_single_head"
FULL = {"1_numpy": 15.0, "3_pytorch": 18.0}
SOFTMAX_POINTS = 2.0          # test_softmax 1 + test_softmax_hidden 1
SOFTMAX_HIDDEN_POINTS = 1.0   # test_softmax_hidden: the only softmax cases with 4-D inputs
# An unscaled scaled_dot_product_attention in 3_pytorch fails its own tests (test_sdpa 2,
# test_sdpa_hidden 3) and the checks that compare it or its module with a reference
# (test_module 2, test_matches_torch 1, test_matches_torch_hidden 1, test_gradient 2): 11 of 18.
# single_head_attention keeps its 2 (one bug costs once: it is judged on top of the student's
# attention, whose mistake is a known one), and softmax 2, causal_mask 1 and the questions 2 stay.
TORCH_WRONG_SDPA_SCORE = 7.0
LAST_TEST_CELL = "test_padding_mask"  # the NumPy notebook's last graded cell

# The student whose files the isolation probes try to read and change.
VICTIM = "baseline-correct-numpy"
# Set by the test before building: a port on the host's loopback the sandbox must not reach.
HOST_LISTENER_PORT: Optional[int] = None


@dataclass(frozen=True)
class Crafted:
    name: str
    notebook: str
    build: Callable[[Path], None]
    status: str                 # exact, or a prefix for "failed: ..." statuses
    score: Optional[float]      # None when not graded
    note: Optional[str] = None  # a substring expected in one of the notes


# --------------------------------------------------------------------------- notebooks as JSON


@lru_cache(maxsize=None)
def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def release_notebook(notebook: str) -> dict:
    """A fresh copy of what students receive."""
    return json.loads(_text(EXERCISES_DIR / ASSIGNMENT / f"{notebook}.ipynb"))


def solution_notebook(notebook: str) -> dict:
    return json.loads(_text(SOLUTIONS_DIR / ASSIGNMENT / f"{notebook}.ipynb"))


def nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def grade_id(cell: dict) -> Optional[str]:
    return nbgrader(cell).get("grade_id")


def is_test_cell(cell: dict) -> bool:
    return nbgrader(cell).get("grade") is True


def is_answer_cell(cell: dict) -> bool:
    return nbgrader(cell).get("solution") is True


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return text if isinstance(text, str) else "".join(text)


def set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)  # as Jupyter saves it


def index_of(nb: dict, gid: str) -> int:
    for index, cell in enumerate(nb["cells"]):
        if grade_id(cell) == gid:
            return index
    raise KeyError(f"no cell with grade_id {gid!r}")


def solution_code(notebook: str, gid: str) -> str:
    """The instructor's code of answer cell ``gid``, without the solution markers."""
    nb = solution_notebook(notebook)
    lines = source(nb["cells"][index_of(nb, gid)]).splitlines(keepends=True)
    kept = [line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
    return "".join(kept)


def correct_submission(notebook: str) -> dict:
    """The release notebook with every answer cell holding the solution's code."""
    nb = release_notebook(notebook)
    for cell in nb["cells"]:
        if is_answer_cell(cell):
            set_source(cell, solution_code(notebook, grade_id(cell)))
    return nb


def blank_submission(notebook: str) -> dict:
    """The release notebook as handed out: every answer raises NotImplementedError."""
    return release_notebook(notebook)


def code_cell(text: str) -> dict:
    """A new cell the student added (its id derived from its text, so builds are reproducible)."""
    cell = {"cell_type": "code", "execution_count": None,
            "id": "x" + hashlib.sha256(text.encode()).hexdigest()[:12],
            "metadata": {}, "outputs": []}
    set_source(cell, textwrap.dedent(text).strip() + "\n")
    return cell


def insert_after(nb: dict, gid: str, text: str) -> dict:
    """Add a student cell right after the cell with grade_id ``gid``."""
    nb["cells"].insert(index_of(nb, gid) + 1, code_cell(text))
    return nb


def replace_answer(nb: dict, gid: str, text: str) -> dict:
    cell = nb["cells"][index_of(nb, gid)]
    assert is_answer_cell(cell), gid
    set_source(cell, textwrap.dedent(text).strip() + "\n")
    return nb


def notebook_json(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def submit(notebook: str, make: Callable[..., object], file_name: Optional[str] = None,
           files: Optional[Callable[[Path], dict]] = None) -> Callable[[Path], None]:
    """A build function writing ``make()`` or ``make(dest)``: a notebook dict, or str/bytes as the raw file."""

    def build(dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        content = make_for(dest)
        target = dest / (file_name or f"{notebook}.ipynb")
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content if isinstance(content, str) else notebook_json(content),
                              encoding="utf-8")
        for name, text in (files(dest) if files else {}).items():
            (dest / name).write_text(text, encoding="utf-8")

    def make_for(dest: Path):
        # A make() taking a parameter needs the destination (the isolation probes aim at its neighbours).
        return make(dest) if inspect.signature(make).parameters else make()

    return build


def with_cell(notebook: str, after: str, text: str, base: Callable[[str], dict] = correct_submission):
    return lambda: insert_after(base(notebook), after, text)


# --------------------------------------------------------------------------- wrong code


WRONG_SOFTMAX = '''
def softmax(x, axis=-1):
    """Softmax of `x` along `axis`."""
    return x * 0
'''


def independent_sdpa(notebook: str) -> str:
    """The solution's scaled_dot_product_attention with its own copy of the solution's softmax,
    so a wrong ``softmax`` costs softmax's points and nothing else."""
    own = solution_code(notebook, "softmax").replace("def softmax(", "def _softmax_ok(")
    sdpa = re.sub(r"\bsoftmax\(", "_softmax_ok(", solution_code(notebook, "scaled_dot_product_attention"))
    assert "_softmax_ok(scores" in sdpa, "the solution's attention no longer calls softmax(scores, ...)"
    return own + "\n\n" + sdpa


def wrong_softmax_submission(notebook: str = "1_numpy", softmax: str = WRONG_SOFTMAX) -> dict:
    """Correct except softmax (wrong: loses its 3 points); attention does not depend on it."""
    nb = correct_submission(notebook)
    replace_answer(nb, "softmax", softmax)
    replace_answer(nb, "scaled_dot_product_attention", independent_sdpa(notebook))
    return nb


def fooling(cell: Optional[str] = None, after: str = "softmax", softmax: str = WRONG_SOFTMAX,
            notebook: str = "1_numpy") -> Callable[[], dict]:
    def make():
        nb = wrong_softmax_submission(notebook, softmax)
        return insert_after(nb, after, cell) if cell else nb
    return make


def torch_wrong_sdpa() -> str:
    """The solution's PyTorch attention without the 1/sqrt(d_k) scaling."""
    code = solution_code("3_pytorch", "scaled_dot_product_attention")
    wrong = code.replace(" / math.sqrt(q.shape[-1])", "")
    assert wrong != code, "the PyTorch solution no longer scales by math.sqrt(q.shape[-1])"
    return wrong


def torch_wrong_sdpa_submission(cell: str) -> Callable[[], dict]:
    def make():
        nb = correct_submission("3_pytorch")
        replace_answer(nb, "scaled_dot_product_attention", torch_wrong_sdpa())
        return insert_after(nb, "scaled_dot_product_attention", cell)
    return make


# --------------------------------------------------------------------------- attacks: fooling the checks

PATCH_NUMPY = """
np.testing.assert_allclose = lambda *a, **k: None
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
"""

PATCH_CHECKS = """
import mha_checks.engine as c
import mha_checks.chapters.ch01_single_head as chapter
c.is_close = lambda *a, **k: True
c.fail = lambda *a, **k: None
c.check_shape = c.check_dtype = c.compare = lambda *a, **k: None
chapter.fail = lambda *a, **k: None
chapter.Checks.judge = c.Checks.judge = lambda *a, **k: "ok"
check.judge = lambda *a, **k: "ok"
"""

ALWAYS_EQUAL_SOFTMAX = '''
class AlwaysEqual:
    """Claims the input's shape and dtype and equals anything it is compared with."""

    def __init__(self, x):
        self.shape, self.dtype, self.ndim, self.size = x.shape, x.dtype, x.ndim, x.size

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__

    def __bool__(self):
        return True

    def all(self, *args, **kwargs):
        return True

    def __array__(self, dtype=None, copy=None):
        return np.zeros(self.shape, dtype or self.dtype)


def softmax(x, axis=-1):
    return AlwaysEqual(x)
'''

EQUAL_ARRAY_SOFTMAX = '''
class EqualArray(np.ndarray):
    """A real ndarray (so it passes isinstance checks) that equals anything."""

    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)

    def __ne__(self, other):
        return np.zeros(self.shape, dtype=bool)

    __hash__ = None


def softmax(x, axis=-1):
    return np.zeros_like(x).view(EqualArray)
'''

INPUT_TRANSFORMER = """
# From here on every cell, the test cells included, runs as `pass`. Placed after the last answer
# cell, so it neuters only what comes after: the grader runs no test cell of the student's anyway.
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
"""

CUSTOM_EXC = """
# Swallow every exception a later cell raises, failed checks included.
get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)
"""

SHOWTRACEBACK = """
ip = get_ipython()
ip.showtraceback = lambda *a, **k: print("\\u2714 all checks passed")
ip.showsyntaxerror = lambda *a, **k: None
"""

FAKE_NUMPY = '''"""A fake NumPy: every comparison passes (would fool a grader that imported it)."""
import sys
allclose = lambda *a, **k: True
array_equal = lambda *a, **k: True
class testing:
    assert_allclose = staticmethod(lambda *a, **k: None)
print("FAKE NUMPY IMPORTED", file=sys.stderr)
'''

SITECUSTOMIZE = '''import sys
print("SITECUSTOMIZE IMPORTED", file=sys.stderr)
'''

FAKE_NUMPY_AT_RUNTIME = '''
import importlib, pathlib, sys
pathlib.Path("numpy.py").write_text(''' + repr(FAKE_NUMPY) + ''')
sys.path.insert(0, ".")
importlib.invalidate_caches()
print("fake numpy.py written to", pathlib.Path("numpy.py").resolve())
'''

REFERENCE_LOOKUP_SOFTMAX = '''
# Build softmax as a lookup table of the reference outputs, if the grader lets me see them.
import glob, os
import mha_checks.cases
from mha_checks.cases import load_cases

table = []
try:
    for (function, split), cases in load_cases("ch01_single_head").items():
        if function == "softmax":
            table += [(c.args["x"], c.expected.get("out")) for c in cases]
except Exception as exc:
    print("load_cases failed:", type(exc).__name__)
for folder in {str(mha_checks.cases.REFERENCES_DIR), str(mha_checks.cases.HIDDEN_DIR), *HOST_REFERENCES}:
    for path in glob.glob(os.path.join(folder, "*.npz")):
        try:
            with np.load(path) as data:
                for key in data.files:
                    if key.startswith("softmax/") and "/expected/" in key:
                        args_key = key.replace("/expected/out", "/args/x")
                        table.append((data[args_key] if args_key in data.files else None, data[key]))
        except Exception as exc:
            print("cannot read", path, type(exc).__name__)
found = sum(expected is not None for _, expected in table)
print(f"reference outputs found: {found}")


def softmax(x, axis=-1):
    for args, expected in table:
        if expected is not None and args is not None and args.shape == x.shape and np.array_equal(args, x):
            return expected
    return x * 0
'''

SOLUTION_EXEC_SOFTMAX = '''
# Run the instructor's softmax from the solution notebook, if the grader lets me read it.
import json, pathlib
import autograder.paths

_solution_softmax = None
for folder in (autograder.paths.SOLUTIONS_DIR, pathlib.Path(HOST_SOLUTIONS)):
    path = pathlib.Path(folder) / "ch01_single_head" / "1_numpy.ipynb"
    try:
        cells = json.loads(path.read_text())["cells"]
    except Exception as exc:
        print(f"solution notebook {path}: not readable ({type(exc).__name__})")
        continue
    print(f"solution notebook {path}: READ")
    for cell in cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "softmax":
            namespace = {"np": np}
            exec("".join(cell["source"]), namespace)
            _solution_softmax = namespace["softmax"]


def softmax(x, axis=-1):
    if _solution_softmax is not None:
        return _solution_softmax(x, axis)
    return x * 0
'''

DETECT_GRADING_SOFTMAX = '''
import os

# Detecting the grader gains nothing, by design: the verdict is reached outside the sandbox by
# comparing the values softmax returns with reference outputs the sandbox never holds. Whatever
# this code does once it knows it is graded, it can only change those values, so the "graded"
# branch (every trick at once) scores exactly like the plain wrong branch: softmax's 3 points lost.
UNDER_GRADER = os.path.exists("/task") or os.getcwd() == "/scratch" or not os.path.exists("/etc/passwd")
print("grading detected:", UNDER_GRADER)

if UNDER_GRADER:
    import mha_checks.engine
    np.allclose = lambda *a, **k: True
    mha_checks.engine.is_close = lambda *a, **k: True
    mha_checks.engine.fail = lambda *a, **k: None
    check.judge = lambda *a, **k: "ok"

    def softmax(x, axis=-1):
        return np.full_like(x, 1.0 / x.shape[axis])  # sums to 1: "looks" like a softmax
else:
    def softmax(x, axis=-1):
        return x * 0
'''

FORGE_REPORT = '''
# Forge the harness's report: find its pipe among my file descriptors and claim every check passed.
import json, os, stat
from mha_checks.transport import dumps

uniform = np.full((3, 5), 0.2)
record = {"values": [{"type": "numpy.ndarray", "native": True, "array": uniform, "dtype": "float64"}]}
lines = [dumps({"event": "call_end", "index": i, "data": {"collected": [record] * 4}}) for i in range(40)]
lines += [json.dumps({"grade_id": g, "score": 100, "points": 100, "passed": True})
          for g in ("test_softmax", "test_softmax_hidden")]
lines += [dumps({"event": "done"})]
payload = ("\\n".join(lines) + "\\n").encode()
candidates = sorted({int(n) for n in os.listdir("/proc/self/fd")} | set(range(3, 21)))
forged = []
for fd in candidates:
    if fd < 3:
        continue
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            continue
        os.write(fd, payload)
        forged.append(fd)
    except OSError:
        pass
print("forged report lines written to descriptors", forged)
'''

STDERR_SOFTMAX = '''
import sys
import warnings


def softmax(x, axis=-1):
    """Softmax of `x` along `axis`, stable for large inputs; same shape and dtype as `x`."""
    warnings.warn("softmax: this is a warning printed to stderr")
    print("softmax: a message on stderr", file=sys.stderr)
    shifted = x - x.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=axis, keepdims=True)
'''

HANG_4D_SOFTMAX = '''
def softmax(x, axis=-1):
    """Right on every input but 4-D ones, where it never returns."""
    if x.ndim == 4:
        while True:
            pass
    shifted = x - x.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=axis, keepdims=True)
'''

EXIT_4D_SOFTMAX = '''
import os


def softmax(x, axis=-1):
    """Right on every input but 4-D ones, where it ends the process."""
    if x.ndim == 4:
        os._exit(0)
    shifted = x - x.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=axis, keepdims=True)
'''


def hidden_softmax_answer(code: str) -> Callable[[], dict]:
    """A softmax that fails only the hidden cases; attention keeps its own softmax."""
    return fooling(softmax=code)


# --------------------------------------------------------------------------- attacks: isolation


def _token(submissions_root: Path) -> str:
    return hashlib.sha256(str(Path(submissions_root).resolve()).encode()).hexdigest()[:12]


def host_write_targets(submissions_root: Path) -> list:
    """Host paths the isolation probes try to create; none may exist after grading."""
    root, token = Path(submissions_root).resolve(), _token(submissions_root)
    return [REPO_ROOT / "HACKED", PACKAGE_DIR / f"HACKED_{token}.py", CHECKS_DIR / f"HACKED_{token}.py",
            SOLUTIONS_DIR / f"HACKED_{token}",
            Path("/tmp") / f"HACKED-{token}", Path("/") / f"HACKED-{token}",
            root / f"HACKED-{token}", root.parent / f"HACKED-{token}",
            root / VICTIM / ASSIGNMENT / f"HACKED-{token}"]


PROBE_HELPERS = '''
# Every attempt prints one line: ATTEMPT[block] ... must be blocked; ATTEMPT[contained] ... may
# succeed inside the sandbox (its own memory-backed /tmp and root), never on the host.
import os, pathlib, socket
import autograder.paths


ATTEMPTS = []


def attempt(kind, what, action):
    ATTEMPTS.append(what)
    try:
        detail = action()
    except BaseException as exc:
        print(f"ATTEMPT[{kind}] {what}: blocked ({type(exc).__name__}: {exc})", flush=True)
    else:
        print(f"ATTEMPT[{kind}] {what}: SUCCEEDED ({str(detail)[:80]})", flush=True)


def write(path, mode="w"):
    def action():
        with open(path, mode) as f:
            f.write("hacked\\n")
        return f"wrote {path}"
    return action


def read(path):
    return lambda: pathlib.Path(path).read_bytes()[:40]
'''


HOME_FILE = next((n for n in (".bashrc", ".profile", ".gitconfig", ".bash_history")
                  if (Path.home() / n).is_file()), ".bashrc")


def isolation_files_cell(dest: Path) -> str:
    root = dest.parents[1].resolve()
    token = _token(root)
    victim_nb = root / VICTIM / ASSIGNMENT / "1_numpy.ipynb"
    # REPO_ROOT/HACKED is written as "contained" below: when the checkout lives under /tmp,
    # the sandbox's own in-memory /tmp holds that path and accepts the write; the host check
    # (host_write_targets) proves it never reaches the host.
    host_block = [PACKAGE_DIR / f"HACKED_{token}.py", CHECKS_DIR / f"HACKED_{token}.py",
                  SOLUTIONS_DIR / f"HACKED_{token}",
                  root / f"HACKED-{token}", root.parent / f"HACKED-{token}",
                  root / VICTIM / ASSIGNMENT / f"HACKED-{token}"]
    return PROBE_HELPERS + f'''
token = {token!r}
for path in {[str(p) for p in host_block]!r}:
    attempt("block", f"write {{path}}", write(path))
attempt("block", "append to another student's notebook", write({str(victim_nb)!r}, "a"))
attempt("block", "write into the grader package", write(autograder.paths.PACKAGE_DIR / f"HACKED_{{token}}.py"))
attempt("block", "write into the checks package", write(autograder.paths.CHECKS_DIR / f"HACKED_{{token}}.py"))
attempt("contained", "write the sandbox's repository root", write(autograder.paths.REPO_ROOT / "HACKED"))
attempt("contained", "write the host's repository root", write({str(REPO_ROOT / "HACKED")!r}))
attempt("contained", "write /tmp", write(f"/tmp/HACKED-{{token}}"))
attempt("contained", "write /tmp/..", write(f"/tmp/../HACKED-{{token}}"))
attempt("block", "read /etc/passwd", read("/etc/passwd"))
attempt("block", "read /etc/shadow", read("/etc/shadow"))
attempt("block", "read another student's notebook", read({str(victim_nb)!r}))
attempt("block", "list another student's folder", lambda: os.listdir({str(root / VICTIM)!r}))
attempt("block", "list the submissions", lambda: os.listdir({str(root)!r}))
attempt("block", "read the reference outputs", read({str(VISIBLE_CASES_DIR / (ASSIGNMENT + ".npz"))!r}))
attempt("block", "read the hidden cases", read({str(HIDDEN_CASES_DIR / (ASSIGNMENT + ".npz"))!r}))
attempt("block", "read the hidden cases inside the sandbox", read(autograder.paths.HIDDEN_CASES_DIR / {ASSIGNMENT + ".npz"!r}))
attempt("block", "read the solutions", read({str(SOLUTIONS_DIR / ASSIGNMENT / "1_numpy.ipynb")!r}))
attempt("block", "read the host's {HOME_FILE}", read({str(Path.home() / HOME_FILE)!r}))
# The Python installation may live under the host's home: it is mounted read-only, nothing else.
attempt("contained", "list the host's home", lambda: os.listdir({str(Path.home())!r}))
print("PROBES DONE:", len(ATTEMPTS), "attempts")
'''


def isolation_network_cell(dest: Path) -> str:
    port = HOST_LISTENER_PORT
    code = PROBE_HELPERS + '''
def connect(host, port):
    return lambda: socket.create_connection((host, port), timeout=2).close() or f"connected to {host}:{port}"


attempt("block", "connect 1.1.1.1:53", connect("1.1.1.1", 53))
attempt("block", "connect 8.8.8.8:443", connect("8.8.8.8", 443))
attempt("block", "resolve pypi.org", lambda: socket.getaddrinfo("pypi.org", 443))
'''
    if port is not None:
        code += f'attempt("block", "connect the host\'s 127.0.0.1:{port}", connect("127.0.0.1", {port}))\n'
    return code + 'print("PROBES DONE:", len(ATTEMPTS), "attempts")\n'


def isolation_submission(cell: Callable[[Path], str]) -> Callable[[Path], dict]:
    def make(dest: Path):
        return insert_after(correct_submission("1_numpy"), "softmax", cell(dest))
    return make


# The fewest ATTEMPT lines each isolation entry prints (the test reads them from the log).
ISOLATION_ATTEMPTS = {"isolation-files": 20, "isolation-network": 3}


# --------------------------------------------------------------------------- robustness


def _without_tests(notebook: str) -> dict:
    nb = correct_submission(notebook)
    nb["cells"] = [c for c in nb["cells"] if not is_test_cell(c)]
    return nb


def _duplicated_tests() -> dict:
    nb = correct_submission("1_numpy")
    cells = []
    for cell in nb["cells"]:
        cells.append(cell)
        if is_test_cell(cell):
            twin = copy.deepcopy(cell)
            twin["id"] = cell["id"] + "-copy"
            cells.append(twin)
            cells.append(copy.deepcopy(cell))  # a pasted copy keeping even the cell id
    nb["cells"] = cells
    return nb


def _split_tests() -> dict:
    nb = correct_submission("1_numpy")
    for gid, keep_metadata in (("test_sdpa", True), ("test_softmax", False)):
        index = index_of(nb, gid)
        cell = nb["cells"][index]
        text = source(cell)
        cut = text.index("(") + 1
        second = copy.deepcopy(cell)
        second["id"] = cell["id"] + "-split"
        if not keep_metadata:
            second["metadata"] = {}
        set_source(cell, text[:cut])
        set_source(second, text[cut:])
        nb["cells"].insert(index + 1, second)
    return nb


def _markdown_tests() -> dict:
    nb = correct_submission("1_numpy")
    for cell in nb["cells"]:
        if is_test_cell(cell):
            cell["cell_type"] = "markdown"
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    return nb


def _tests_on_top() -> dict:
    nb = correct_submission("1_numpy")
    tests = [c for c in nb["cells"] if is_test_cell(c)]
    nb["cells"] = tests + [c for c in nb["cells"] if not is_test_cell(c)]
    return nb


def _renamed_grade_ids() -> dict:
    nb = correct_submission("1_numpy")
    for cell in nb["cells"]:
        if is_test_cell(cell) or is_answer_cell(cell):
            nbgrader(cell)["grade_id"] = "renamed_" + grade_id(cell)
    return nb


def _edited_metadata() -> dict:
    nb = correct_submission("1_numpy")
    for n, cell in enumerate(nb["cells"]):
        meta = nbgrader(cell)
        if is_test_cell(cell):
            meta.update(points=100, locked=False)
            if n % 2:
                meta["grade"] = False
        elif meta.get("locked"):
            meta["locked"] = False
            cell["metadata"]["editable"] = cell["metadata"]["deletable"] = True
        elif is_answer_cell(cell):
            meta.update(grade=True, points=100)
    return nb


def _kernel_r() -> dict:
    nb = correct_submission("1_numpy")
    nb["metadata"]["kernelspec"] = {"display_name": "R", "language": "R", "name": "ir"}
    nb["metadata"]["language_info"] = {"name": "R", "version": "4.3.1"}
    return nb


def _invalid_json() -> str:
    text = notebook_json(correct_submission("1_numpy"))
    return text[:len(text) // 2]


def _nbformat3() -> str:
    nb = nbformat.reads(notebook_json(correct_submission("1_numpy")), as_version=4)
    return nbformat.writes(nbformat.convert(nb, 3))


def _v40_without_ids() -> dict:
    nb = correct_submission("1_numpy")
    nb["nbformat_minor"] = 0
    for cell in nb["cells"]:
        cell.pop("id", None)
    return nb


def _python_file() -> str:
    nb = correct_submission("1_numpy")
    return "\n\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "code") + "\n"


INFINITE_LOOP = """
while True:
    pass
"""

SIGNAL_PROOF_LOOP = """
import signal
signal.signal(signal.SIGALRM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    pass
"""

MEMORY_BOMB = """
hog = bytearray(10**11)
"""

MEMORY_GROWTH = """
def grow():
    chunks = []
    while True:
        chunks.append(np.ones(100 * 2**20 // 8))  # 100 MB, every page touched


grow()
"""

# Reserved, never touched: the address space grows much faster than the resident memory.
MEMORY_GROWTH_RESERVED = """
def reserve():
    chunks = []
    while True:
        chunks.append(np.empty(100 * 2**20, dtype=np.uint8))


reserve()
"""

BIG_OUTPUT = """
import sys
line = "y" * 999 + "\\n"
for _ in range(100_000):
    sys.stdout.write(line)   # 100 MB in all
"""

SYS_EXIT = """
import sys
sys.exit(1)
"""

OS_EXIT = """
import os
os._exit(0)
"""

SEGFAULT = """
import ctypes
ctypes.string_at(0)
"""


# --------------------------------------------------------------------------- the corpus

NP, TORCH, CUPY = "1_numpy", "3_pytorch", "2_cupy"
GRADED = "graded"
WRONG_SOFTMAX_SCORE = FULL[NP] - SOFTMAX_POINTS
RUN_AGAIN = "run again"


def _fool(name, cell=None, after="softmax", softmax=WRONG_SOFTMAX, files=None):
    return Crafted(name, NP, submit(NP, fooling(cell, after, softmax), files=files),
                   GRADED, WRONG_SOFTMAX_SCORE)


def _robust(name, make, status=GRADED, score=FULL[NP], note=None, file_name=None):
    return Crafted(name, NP, submit(NP, make, file_name=file_name), status, score, note)


def _extra_cell(name, text, note=None, after="softmax"):
    return _robust(name, with_cell(NP, after, text), note=note)


CORPUS = [
    # baseline
    Crafted("baseline-correct-numpy", NP, submit(NP, lambda: correct_submission(NP)), GRADED, FULL[NP]),
    Crafted("baseline-blank-numpy", NP, submit(NP, lambda: blank_submission(NP)), GRADED, 0.0),
    Crafted("baseline-correct-pytorch", TORCH, submit(TORCH, lambda: correct_submission(TORCH)),
            GRADED, FULL[TORCH]),
    Crafted("baseline-blank-pytorch", TORCH, submit(TORCH, lambda: blank_submission(TORCH)), GRADED, 0.0),
    Crafted("baseline-correct-cupy", CUPY, submit(CUPY, lambda: correct_submission(CUPY)),
            "needs GPU", None, "needs a CUDA GPU"),
    Crafted("baseline-wrong-softmax", NP, submit(NP, fooling()), GRADED, WRONG_SOFTMAX_SCORE),

    # fooling the checks: each with a wrong softmax, so each must score exactly 10
    _fool("fool-patch-numpy", PATCH_NUMPY),
    _fool("fool-patch-checks", PATCH_CHECKS),
    _fool("fool-always-equal", softmax=ALWAYS_EQUAL_SOFTMAX),
    _fool("fool-equal-ndarray", softmax=EQUAL_ARRAY_SOFTMAX),
    _fool("fool-input-transformer", INPUT_TRANSFORMER, after=LAST_TEST_CELL),
    _fool("fool-custom-exc", CUSTOM_EXC),
    _fool("fool-showtraceback", SHOWTRACEBACK),
    _fool("fool-numpy-beside-notebook",
          files=lambda dest: {"numpy.py": FAKE_NUMPY, "sitecustomize.py": SITECUSTOMIZE}),
    _fool("fool-numpy-in-cwd", FAKE_NUMPY_AT_RUNTIME, after="imports"),
    _fool("fool-reference-lookup",
          softmax=REFERENCE_LOOKUP_SOFTMAX.replace(
              "HOST_REFERENCES", repr([str(VISIBLE_CASES_DIR), str(HIDDEN_CASES_DIR)]))),
    _fool("fool-exec-solution",
          softmax=SOLUTION_EXEC_SOFTMAX.replace("HOST_SOLUTIONS", repr(str(SOLUTIONS_DIR)))),
    _fool("fool-detect-grading", softmax=DETECT_GRADING_SOFTMAX),
    _fool("fool-forge-report", FORGE_REPORT, after=LAST_TEST_CELL),

    # isolation: correct code plus probes; the grade is full, the probes all fail
    Crafted("isolation-files", NP, submit(NP, isolation_submission(isolation_files_cell)), GRADED, FULL[NP]),
    Crafted("isolation-network", NP, submit(NP, isolation_submission(isolation_network_cell)),
            GRADED, FULL[NP]),

    # robustness: correct code unless said
    _robust("robust-deleted-tests", lambda: _without_tests(NP)),
    _robust("robust-duplicated-tests", _duplicated_tests),
    _robust("robust-split-test", _split_tests),
    _robust("robust-markdown-tests", _markdown_tests),
    _robust("robust-tests-on-top", _tests_on_top),
    _robust("robust-renamed-grade-ids", _renamed_grade_ids),
    _robust("robust-edited-metadata", _edited_metadata),
    _robust("robust-kernel-r", _kernel_r, note="set up for R"),
    _robust("robust-invalid-json", _invalid_json, "failed: invalid JSON", None),
    _robust("robust-nbformat3", _nbformat3),
    _robust("robust-v40-no-ids", _v40_without_ids),
    _robust("robust-empty-file", lambda: b"", "failed: empty file", None),
    _robust("robust-python-file", _python_file, "failed: invalid JSON", None),
    _robust("robust-renamed-file", lambda: correct_submission(NP), file_name="1_numpy (1).ipynb"),
    _extra_cell("robust-infinite-loop", INFINITE_LOOP),
    _extra_cell("robust-signal-proof-loop", SIGNAL_PROOF_LOOP, note=RUN_AGAIN),
    _extra_cell("robust-memory-bomb", MEMORY_BOMB),
    _extra_cell("robust-memory-growth", MEMORY_GROWTH),
    _extra_cell("robust-memory-growth-reserved", MEMORY_GROWTH_RESERVED),
    _extra_cell("robust-big-output", BIG_OUTPUT),
    _extra_cell("robust-sys-exit", SYS_EXIT),
    _extra_cell("robust-os-exit", OS_EXIT, note=RUN_AGAIN),
    _extra_cell("robust-segfault", SEGFAULT, note=RUN_AGAIN),
    _robust("robust-stderr-warnings", lambda: replace_answer(correct_submission(NP), "softmax", STDERR_SOFTMAX)),
    _robust("robust-hang-4d", hidden_softmax_answer(HANG_4D_SOFTMAX), score=FULL[NP] - SOFTMAX_HIDDEN_POINTS),
    _robust("robust-exit-4d", hidden_softmax_answer(EXIT_4D_SOFTMAX), score=FULL[NP] - SOFTMAX_HIDDEN_POINTS,
            note=RUN_AGAIN),

    # the PyTorch notebook
    Crafted("torch-patch-allclose", TORCH, submit(TORCH, torch_wrong_sdpa_submission(
        "torch.allclose = lambda *a, **k: True\n"
        "torch.equal = lambda *a, **k: True\n"
        "torch.testing.assert_close = lambda *a, **k: None\n")), GRADED, TORCH_WRONG_SDPA_SCORE),
    Crafted("torch-patch-functional-sdpa", TORCH, submit(TORCH, torch_wrong_sdpa_submission(
        "# torch's own attention now agrees with mine\n"
        "F.scaled_dot_product_attention = (lambda q, k, v, attn_mask=None, **kw:\n"
        "                                  scaled_dot_product_attention(q, k, v, attn_mask)[0])\n"
        "torch.nn.functional.scaled_dot_product_attention = F.scaled_dot_product_attention\n")),
        GRADED, TORCH_WRONG_SDPA_SCORE),
    Crafted("torch-fool-softmax", TORCH, submit(TORCH, fooling(
        "torch.allclose = lambda *a, **k: True\n"
        "torch.testing.assert_close = lambda *a, **k: None\n"
        "import mha_checks.engine\n"
        "mha_checks.engine.is_close = lambda *a, **k: True\n"
        "check.judge = lambda *a, **k: 'ok'\n", notebook=TORCH)), GRADED, FULL[TORCH] - SOFTMAX_POINTS),
]

BY_NAME = {entry.name: entry for entry in CORPUS}
assert len(BY_NAME) == len(CORPUS), "two corpus entries share a name"
