"""pytest plugin for tests/gpu/verify.py: run only the suite's GPU tests, report each outcome.

Loaded with ``-p gpu_selection`` (``tests/gpu`` on PYTHONPATH). A GPU test is a
test carrying a ``skipif`` mark whose reason names the GPU (``NEEDS_GPU`` of tests/course.py
is one), or a mark named ``gpu``/``needs_gpu`` should one be registered later.
Every other collected test is deselected. The outcome of each selected test,
and any collection error, go as JSON to the file named by
``MHA_GPU_PYTEST_REPORT``.
"""
import json
import os
import re

GPU_WORD = re.compile(r"\bGPU\b", re.IGNORECASE)
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_tests: dict = {}
_collection_errors: list = []


def needs_gpu(item) -> bool:
    if item.get_closest_marker("gpu") or item.get_closest_marker("needs_gpu"):
        return True
    return any(GPU_WORD.search(str(mark.kwargs.get("reason", ""))) for mark in item.iter_markers("skipif"))


def pytest_collection_modifyitems(session, config, items):
    keep = [item for item in items if needs_gpu(item)]
    drop = [item for item in items if not needs_gpu(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collectreport(report):
    if report.failed:
        _collection_errors.append({"nodeid": report.nodeid, "detail": _last_line(report.longreprtext)})


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


def pytest_runtest_logreport(report):
    entry = _tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed", "detail": ""})
    if report.passed:
        return
    if report.skipped:
        outcome = "skipped"
        detail = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    else:
        outcome = "failed" if report.when == "call" else "error"
        detail = f"{report.when}: {_last_line(report.longreprtext)}"
    if _RANK[outcome] >= _RANK[entry["outcome"]]:
        entry.update(outcome=outcome, detail=str(detail)[:500])


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MHA_GPU_PYTEST_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"tests": list(_tests.values()), "collection_errors": _collection_errors,
                       "exitstatus": int(exitstatus)}, f, indent=1)
