"""Run everything in the course that needs a CUDA GPU; print one summary line per item.

Normally started by ``bash tests/gpu/run_all.sh`` (which prepares the Python
environment first). Items, in this order:

1. ``<assignment>/<notebook> notebook``: each GPU solution notebook of the
   registry executed top to bottom with nbclient; every graded cell
   (nbgrader ``grade: true``) must print a line starting with a tick;
2. ``pytest GPU tests``: the suite's tests that carry a skipif mark naming the
   GPU (``NEEDS_GPU`` of tests/course.py), kept by the ``gpu_selection``
   plugin from the whole suite (``pytest tests``), all others deselected;
3. ``<assignment>/<notebook> grading``: the solution notebook submitted as
   student ``alice`` and the release notebook as ``bob``, graded with
   ``gpu_available=True`` in the bubblewrap sandbox (unsandboxed, and saying
   so, when ``sandbox_problem()`` reports bwrap unusable); alice must get full
   marks and bob 0, both with status ``graded``;
4. ``mha benchmark``: ``python -m benchmarks.mha --gpu`` (benchmarks/README.md), the
   multi-head layer in CuPy against torch on CUDA, timed with CUDA events; its
   table goes to the log and its numbers to ``mha_gpu.json`` in ``--out``;
5. ``online benchmark``: ``python -m benchmarks.online --gpu``, chapter 5's CuPy
   kernel ``tiled_attention`` against torch's SDPA on CUDA for T = 1024 ... 16384
   (1 and 16 heads, d_k = 64, float32): outputs compared, then CUDA-event times, the
   ratio (goal at most 1.5x at T = 4096) and the kernel's bandwidth; numbers to
   ``online_gpu.json`` in ``--out``.

Each item runs in a child process with a time limit; all share a budget
(``MHA_GPU_BUDGET_S``, 540 s: one run fits in a 10-minute command).
Logs go to ``--out`` (default ``.gpu-out/``).
Lines read ``PASS  <item>: ...``, ``FAIL  <item>: ...`` or ``SKIP  <item>: ...``,
then one ``TOTAL`` line with the counts; the exit status is 1 when anything failed.

Without a usable GPU every item is SKIP (the pytest item still runs, to show
its tests are selected and skip), unless ``MHA_GPU_REQUIRED=1`` is set or
``nvidia-smi`` lists a GPU that CuPy cannot use: then they FAIL.
``--cpu-rehearsal`` runs items 1 and 3 on the CPU notebooks (``1_numpy``) with
``gpu_available=False``, to check this script's machinery on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

HERE = Path(__file__).resolve().parent
TICK = "\u2714"
NO_GPU = "no CUDA GPU (cupy.is_available() is False)"
ITEM_SECONDS = {"notebook": 150, "pytest": 200, "grading": 180, "benchmark": 120}  # each item's own limit
CELL_SECONDS = 120  # one notebook cell, when a notebook is executed
STATUSES = ("PASS", "FAIL", "SKIP")


def line(status: str, subject: str, message: str) -> str:
    return f"{status}  {subject}: {message}"


def note(text: str):
    print(f"-- {text}", flush=True)


# ---------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------

def course_notebooks(rehearsal: bool) -> list:
    """``(assignment, notebook)`` of the GPU notebooks, or of the NumPy ones for a rehearsal."""
    from mha_checks import registry
    if not rehearsal:
        return [(ch.assignment, nb.name) for ch, nb in registry.gpu_notebooks()]
    return [(ch.assignment, nb.name) for ch, nb in registry.all_notebooks()
            if not nb.needs_gpu and nb.track == "numpy"]


def items(rehearsal: bool) -> list:
    notebooks = course_notebooks(rehearsal)
    return ([("notebook", f"{a}/{n}") for a, n in notebooks] + [("pytest", "")]
            + [("grading", f"{a}/{n}") for a, n in notebooks]
            + ([] if rehearsal else [("benchmark", "mha"), ("benchmark", "online"), ("benchmark", "pruning")]))


def subject(kind: str, target: str) -> str:
    return "pytest GPU tests" if kind == "pytest" else f"{target} {kind}"


def gpu_state():
    """(usable, reason when not, description)."""
    try:
        import cupy
    except Exception as err:  # noqa: BLE001
        return False, f"CuPy cannot be imported ({type(err).__name__}: {err})", ""
    try:
        usable = bool(cupy.is_available())
    except Exception as err:  # noqa: BLE001 - a broken CUDA install raises
        return False, f"no CUDA GPU (cupy.is_available() raised {type(err).__name__}: {err})", ""
    if not usable:
        return False, NO_GPU, f"CuPy {cupy.__version__}"
    parts = [f"CuPy {cupy.__version__}"]
    try:
        dev = cupy.cuda.Device(0)
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        parts.append(f"{name} (compute capability {dev.compute_capability[:-1]}.{dev.compute_capability[-1]})")
        parts.append(f"driver {cupy.cuda.runtime.driverGetVersion()}, runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    except Exception as err:  # noqa: BLE001
        parts.append(f"device query failed: {err}")
    try:
        parts.append("NVRTC %d.%d" % cupy.cuda.nvrtc.getVersion())
    except Exception as err:  # noqa: BLE001
        parts.append(f"NVRTC NOT LOADABLE ({err}): RawKernel compilation will fail; install the "
                     "nvidia-cuda-nvrtc-cu12 wheel (tests/gpu/prepare.sh --with-nvrtc)")
    return True, None, ", ".join(parts)


def nvidia_smi_gpus() -> list:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [row.strip() for row in listing.splitlines() if row.startswith("GPU ")]


# ---------------------------------------------------------------------------
# The items, each run in a child process (``--item``)
# ---------------------------------------------------------------------------

def item_notebook(target: str, out: Path, gpu: bool) -> str:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    assignment, name = target.split("/")
    path = REPO_ROOT / "solutions" / assignment / f"{name}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    started = time.monotonic()
    client = NotebookClient(nb, timeout=CELL_SECONDS, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        broken = next((c for c in code if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        if broken is not None:
            error = next(o for o in broken.outputs if o.get("output_type") == "error")
            return line("FAIL", subject("notebook", target),
                        f"cell {broken.get('id')} raised {error.get('ename')}: {str(error.get('evalue'))[:300]}")
        return line("FAIL", subject("notebook", target), f"{type(err).__name__}: {str(err).splitlines()[-1][:300]}")
    except Exception as err:  # noqa: BLE001 - no kernel, a dead kernel, ...
        return line("FAIL", subject("notebook", target), f"could not execute it: {type(err).__name__}: {err}")
    finally:
        nbformat.write(nb, str(out / f"{assignment}-{name}.executed.ipynb"))
    seconds = time.monotonic() - started

    def printed(cell) -> str:
        texts = []
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
        return "\n".join(texts)

    graded = [c for c in code if c.metadata.get("nbgrader", {}).get("grade")]
    ticked = [c for c in graded if any(row.lstrip().startswith(TICK) for row in printed(c).splitlines())]
    if not graded:
        return line("FAIL", subject("notebook", target), "no graded cell (nbgrader grade: true) in the notebook")
    if len(ticked) < len(graded):
        silent = [c.metadata["nbgrader"].get("grade_id", c.get("id")) for c in graded if c not in ticked]
        return line("FAIL", subject("notebook", target),
                    f"executed, but {len(silent)} of {len(graded)} graded cells printed no {TICK}: {', '.join(silent)}")
    return line("PASS", subject("notebook", target),
                f"solution notebook executed ({len(code)} code cells, {len(ticked)}/{len(graded)} graded cells "
                f"printed {TICK}, {seconds:.1f} s)")


REPO_PACKAGES = {"autograder", "mha_checks", "course", "conftest", "mutants", "corpus", "tests"}


def short(nodeid: str) -> str:
    return nodeid[len("tests/"):] if nodeid.startswith("tests/") else nodeid


def missing_package(detail: str):
    """The third-party package a collection error says is missing, or None."""
    match = re.search(r"No module named '([\w.]+)'", detail)
    if match and match.group(1).split(".")[0] not in REPO_PACKAGES:
        return match.group(1).split(".")[0]
    return None


def item_pytest(out: Path, gpu: bool, gpu_reason: str) -> str:
    """The suite collected whole; the gpu_selection plugin keeps the GPU tests.

    A test file that cannot be imported here for lack of a third-party package
    (nbgrader, jupyter-book: not on the GPU machine) is named in the line and
    does not fail the item; any other collection error does.
    """
    name = subject("pytest", "")
    report = out / "pytest-gpu.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, MHA_GPU_PYTEST_REPORT=str(report),
               PYTHONPATH=os.pathsep.join([str(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    command = [sys.executable, "-m", "pytest", "-p", "gpu_selection", "-p", "no:cacheprovider", "-q", "-rA",
               "--continue-on-collection-errors", "tests"]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=REPO_ROOT, env=env).returncode
    seconds = time.monotonic() - started
    if not report.exists():
        return line("FAIL", name, f"pytest exited with code {code} without a report (is pytest installed?)")
    data = json.loads(report.read_text(encoding="utf-8"))
    uncollected, broken = {}, []
    for error in data["collection_errors"]:
        package = missing_package(error["detail"])
        if package:
            uncollected.setdefault(package, []).append(short(error["nodeid"]))
        else:
            broken.append(error)
    if broken:
        return line("FAIL", name, f"collection error in {broken[0]['nodeid']}: {broken[0]['detail']}")
    left_out = ("; not collected for lack of " + ", ".join(f"{pkg} ({', '.join(files)})"
                                                          for pkg, files in sorted(uncollected.items()))
                if uncollected else "")
    tests = data["tests"]
    if not tests:
        return line("FAIL", name, "no test selected: no collected test has a skipif mark naming the GPU"
                    + left_out)
    ids = ", ".join(short(t["nodeid"]) for t in tests)
    bad = [t for t in tests if t["outcome"] in ("failed", "error")]
    if bad:
        return line("FAIL", name, f"{len(bad)} of {len(tests)} failed: "
                    + "; ".join(f"{short(t['nodeid'])} ({t['detail']})" for t in bad) + left_out)
    skipped = [t for t in tests if t["outcome"] == "skipped"]
    if skipped and gpu:
        return line("FAIL", name, f"{len(skipped)} of {len(tests)} skipped although cupy.is_available() is True: "
                    + "; ".join(f"{short(t['nodeid'])} ({t['detail']})" for t in skipped) + left_out)
    if skipped and len(skipped) == len(tests):
        return line("SKIP", name, f"{gpu_reason} [{len(tests)} selected, all skipped: {ids}{left_out}]")
    return line("PASS", name, f"{len(tests) - len(skipped)} passed, {len(skipped)} skipped "
                f"({ids}; {seconds:.1f} s{left_out})")


def item_grading(target: str, out: Path, gpu: bool) -> str:
    from autograder.grading import grade
    from autograder.sandbox import sandbox_problem
    assignment, name = target.split("/")
    problem = sandbox_problem()
    if problem:
        note(f"grading WITHOUT the sandbox: {problem}")
    work = out / f"grading-{assignment}-{name}"
    shutil.rmtree(work, ignore_errors=True)
    subs = work / "submissions"
    for student, folder in (("alice", "solutions"), ("bob", "exercises")):
        (subs / student / assignment).mkdir(parents=True)
        shutil.copyfile(REPO_ROOT / folder / assignment / f"{name}.ipynb", subs / student / assignment / f"{name}.ipynb")
    started = time.monotonic()
    results = grade(subs, work / "graded", assignments=[assignment], jobs=2, gpu_available=gpu,
                    unsandboxed=problem is not None, feedback=True, verbose=True)
    seconds = time.monotonic() - started
    by = {(r.student, r.notebook): r for r in results}
    how = "sandboxed (bubblewrap)" if problem is None else f"UNSANDBOXED ({problem.split('. ')[0]})"
    alice, bob = by.get(("alice", name)), by.get(("bob", name))
    problems = []
    if alice is None or bob is None:
        return line("FAIL", subject("grading", target), f"{how}: no result for alice or bob (got {sorted(by)})")
    if alice.status != "graded" or alice.score is None or alice.score != alice.max_score or not alice.max_score:
        problems.append(f"alice (the solution) got {alice.score}/{alice.max_score}, status {alice.status!r}")
    if bob.status != "graded" or bob.score != 0:
        problems.append(f"bob (the release) got {bob.score}/{bob.max_score}, status {bob.status!r}")
    if problems:
        return line("FAIL", subject("grading", target),
                    f"{how}: " + "; ".join(problems) + f" (logs: {work / 'graded' / 'logs'})")
    return line("PASS", subject("grading", target),
                f"{how}: alice {alice.score:g}/{alice.max_score:g} and bob {bob.score:g}/{bob.max_score:g}, "
                f"both graded ({seconds:.1f} s)")


def item_benchmark(target: str, out: Path) -> str:
    """A benchmark on the GPU: ``mha`` (the multi-head layer) or ``online`` (chapter 5's tiled kernel)."""
    if target == "online":
        return item_benchmark_online(out)
    if target == "pruning":
        return item_benchmark_pruning(out)
    from benchmarks import mha
    results = out / "mha_gpu.json"
    if mha.main(["--gpu", "--repeats", "10", "--json", str(results)]) != 0:
        return line("FAIL", subject("benchmark", "mha"), "the benchmark stopped (see its log)")
    rows = json.loads(results.read_text(encoding="utf-8"))["gpu"]
    return line("PASS", subject("benchmark", "mha"),
                ", ".join(f"{r['name']} {r['best_ms']:.2f} ms ({r['ratio_to_baseline']:.2f}x)" for r in rows))


def item_benchmark_online(out: Path) -> str:
    """``tiled_attention`` against torch's SDPA on CUDA: the ratio per T and the kernel's bandwidth.

    It passes when the outputs agree and every size ran; the speed goal (at most
    1.5x SDPA at T = 4096) is reported in the line, not enforced.
    """
    from benchmarks import online
    results = out / "online_gpu.json"
    if online.main(["--gpu", "--repeats", "10", "--json", str(results)]) != 0:
        return line("FAIL", subject("benchmark", "online"), "the benchmark stopped (see its log)")
    rows = json.loads(results.read_text(encoding="utf-8"))["gpu"]
    goals = [f"H={r['heads']} {'met' if r['ratio'] <= online.GOAL_GPU else 'MISSED'}"
             for r in rows if r["seq"] == online.GOAL_SDPA_SEQ]
    verdict = f"; goal <= {online.GOAL_GPU}x at T = {online.GOAL_SDPA_SEQ}: " + ", ".join(goals) if goals else ""
    return line("PASS", subject("benchmark", "online"),
                ", ".join(f"H={r['heads']} T={r['seq']} {r['tiled_ms']:.2f} ms ({r['ratio']:.2f}x SDPA, "
                          f"{r['bandwidth_gb_s']:.0f} GB/s)" for r in rows) + verdict)


def item_benchmark_pruning(out: Path) -> str:
    """Chapter 8's pruned layers on the GPU: CuPy and PyTorch's SDPA at 12, 9, 6 and 3 heads kept of 12
    (CUDA events), with the CPU forms of the same run; speedups reported, not enforced."""
    from benchmarks import pruning
    results = out / "pruning_gpu.json"
    if pruning.main(["--gpu", "--repeats", "10", "--json", str(results)]) != 0:
        return line("FAIL", subject("benchmark", "pruning"), "the benchmark stopped (see its log)")
    rows = json.loads(results.read_text(encoding="utf-8"))["gpu"]
    return line("PASS", subject("benchmark", "pruning"),
                ", ".join(f"{r['form']} {r['kept']} heads {r['best_ms']:.3f} ms ({r['speedup']:.2f}x)" for r in rows))


def run_item(kind: str, target: str, out: Path, gpu: bool, gpu_reason: str) -> str:
    try:
        if kind == "notebook":
            return item_notebook(target, out, gpu)
        if kind == "pytest":
            return item_pytest(out, gpu, gpu_reason)
        if kind == "benchmark":
            return item_benchmark(target, out)
        return item_grading(target, out, gpu)
    except Exception as err:  # noqa: BLE001 - one line, whatever broke
        import traceback
        traceback.print_exc()
        return line("FAIL", subject(kind, target), f"{type(err).__name__}: {err}")


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

def run_child(kind: str, target: str, out: Path, seconds: float, gpu: bool, gpu_reason: str) -> str:
    log = out / f"{kind}-{target.replace('/', '-') or 'suite'}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--item", f"{kind}:{target}", "--out", str(out),
               "--gpu", "yes" if gpu else "no", "--gpu-reason", gpu_reason or ""]
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                start_new_session=True)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return line("FAIL", subject(kind, target), f"ran past its {seconds:.0f} s limit (log: {log})")
    rows = [r for r in log.read_text(encoding="utf-8", errors="replace").splitlines() if r.startswith(STATUSES)]
    if not rows:
        return line("FAIL", subject(kind, target), f"its process ended with code {proc.returncode} and no "
                    f"result (log: {log})")
    return rows[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu-out")
    parser.add_argument("--cpu-rehearsal", action="store_true")
    parser.add_argument("--item")
    parser.add_argument("--gpu", choices=("yes", "no"))
    parser.add_argument("--gpu-reason", default="")
    parser.add_argument("--only", default="", help="comma-separated words: run only the items whose line names "
                        "one of them (e.g. ch07,ch08,pytest), to rerun what failed without the rest")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.item:  # a child: one item, one result line
        kind, target = args.item.split(":", 1)
        print(run_item(kind, target, out, args.gpu == "yes", args.gpu_reason), flush=True)
        return 0

    started = time.monotonic()
    budget = float(os.environ.get("MHA_GPU_BUDGET_S", "540"))
    note(f"python {sys.executable} ({sys.version.split()[0]}); logs in {out}")
    gpu, reason, description = gpu_state()
    if gpu:
        note(f"GPU: {description}")
    else:
        note(f"GPU: none usable: {reason}")
    if args.cpu_rehearsal:
        note("CPU rehearsal: items 1 and 3 run on the NumPy notebooks with gpu_available=False")
    required = os.environ.get("MHA_GPU_REQUIRED") == "1"
    smi = [] if gpu else nvidia_smi_gpus()
    must_fail = None
    if not gpu and not args.cpu_rehearsal:
        if reason.startswith("CuPy cannot be imported"):
            must_fail = reason
        elif smi:
            must_fail = f"nvidia-smi lists {smi[0]!r} but CuPy cannot use it: {reason}"
        elif required:
            must_fail = f"{reason}, and MHA_GPU_REQUIRED=1"

    counts = {status: 0 for status in STATUSES}
    wanted = [w for w in args.only.split(",") if w]
    chosen = [(k, t) for k, t in items(args.cpu_rehearsal) if not wanted or any(w in subject(k, t) for w in wanted)]
    if wanted:
        note(f"--only {args.only}: {len(chosen)} of {len(items(args.cpu_rehearsal))} items")
    for kind, target in chosen:
        if must_fail:
            result = line("FAIL", subject(kind, target), must_fail)
        elif not gpu and not args.cpu_rehearsal and kind != "pytest":
            result = line("SKIP", subject(kind, target), reason)
        else:
            left = budget - (time.monotonic() - started)
            if left < 10:
                result = line("FAIL", subject(kind, target), f"not run: the {budget:.0f} s budget is spent")
            else:
                result = run_child(kind, target, out, min(ITEM_SECONDS[kind], left), gpu, reason)
        counts[result[:4]] += 1
        print(result, flush=True)
    total = sum(counts.values())
    print(f"TOTAL  {total} items: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
