"""Run a student's notebook code in a sandbox, under limits, and watch it.

The sandbox is bubblewrap (``bwrap``, Debian package ``bubblewrap``): new
user, PID, network, IPC and UTS namespaces, and a file system that holds only
the operating system's libraries, Python with its installed packages, the
course's code (``mha_checks`` with the *inputs* of this assignment's visible
cases in place of its reference outputs, and ``autograder`` without its hidden
cases), the task without its hidden calls, and an empty scratch folder in
memory. The hidden calls and their inputs arrive on a pipe once the student's
cells and the visible checks have run, and what is printed from then on goes
to the instructor's log only (:mod:`protocol`).
No network, no solutions, no gradebook, no other student's files, and nothing
of the host writable. Resource limits (``setrlimit``) bound CPU time, memory,
file size and processes; the grader bounds wall time and printed output.

Without bwrap the grader refuses to run unless the instructor asks for
``unsandboxed=True`` (``--unsandboxed``); the harness then runs as a plain
subprocess with the same limits, which protects the grade (scores are still
decided outside the student's process) but not the machine's files.
"""
from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from . import protocol
from .paths import CHECKS_DIR, HIDDEN_CASES_DIR, PACKAGE_DIR, REPO_ROOT, VISIBLE_CASES_DIR

SANDBOX_COURSE = "/course"  # where the course's two packages appear inside the sandbox
GRACE_SECONDS = 5  # after a soft time limit, how long the code gets before it is killed
NOTEBOOK_TIME_LIMIT = "the notebook's time limit"  # killed_reason when the whole run was too long
DEFAULT_CELL_SECONDS = 60        # a cell or a check, unless its notebook's registry entry gives more
DEFAULT_NOTEBOOK_SECONDS = 600   # one run of a whole notebook, likewise


@dataclass(frozen=True)
class Limits:
    """What one run of a notebook may use: every limit and its default is decided here, and the
    CLI's options and their defaults come from here."""

    # None: the notebook's own limits from the course registry, else the defaults above
    cell_seconds: Optional[float] = None      # one cell or one check (soft, then hard after GRACE_SECONDS)
    notebook_seconds: Optional[float] = None  # wall time of one run of the whole notebook
    memory_bytes: int = 4 * 1024**3   # address space (CPU tracks) and resident memory (all tracks)
    processes: int = 256              # processes and threads the notebook may add
    file_bytes: int = 64 * 1024**2    # largest file it may write; also the scratch folder's size
    output_bytes: int = 1024**2       # printed output kept for the log; the rest is counted, not kept
    report_bytes: int = 256 * 1024**2  # everything the harness may report back

    def resolved(self, notebook=None) -> "Limits":
        """The limits one run works under: a time limit left open is ``notebook``'s own (its
        ``cell_seconds`` and ``notebook_seconds`` in the course registry), else the default."""
        return replace(
            self, cell_seconds=(self.cell_seconds or getattr(notebook, "cell_seconds", None)
                                or DEFAULT_CELL_SECONDS),
            notebook_seconds=(self.notebook_seconds or getattr(notebook, "notebook_seconds", None)
                              or DEFAULT_NOTEBOOK_SECONDS))

    def describe(self) -> str:
        times = (f"{self.cell_seconds:g} s per cell and per check, {self.notebook_seconds:g} s per "
                 "notebook run" if self.cell_seconds and self.notebook_seconds else
                 "each notebook's own time limits (course registry)")
        return (f"{times}, {self.memory_bytes / 1024**3:g} GiB memory, {self.processes} "
                f"processes, {self.file_bytes / 1024**2:g} MiB per file and scratch folder, "
                f"{self.output_bytes / 1024**2:g} MiB of printed output kept")


@dataclass
class RunResult:
    """What one run in the sandbox did."""

    events: list = field(default_factory=list)  # (seconds since start, event dict)
    output: bytes = b""          # printed before the hidden part: the student sees it
    output_dropped: int = 0
    withheld: bytes = b""        # printed after it: the instructor's log only
    withheld_dropped: int = 0
    returncode: Optional[int] = None
    killed_reason: Optional[str] = None
    seconds: float = 0.0
    protocol_error: Optional[str] = None

    @property
    def completed(self) -> bool:
        return any(e.get("event") == protocol.DONE for _, e in self.events)

    def unfinished(self):
        """``("cell" | "call", index)`` of what was running when the run ended, or None."""
        running = None
        for _, e in self.events:
            running = protocol.running_after(e, running)
        return running

    def end_reason(self) -> str:
        if self.killed_reason:
            return self.killed_reason
        if self.protocol_error:
            return self.protocol_error
        rc = self.returncode
        if rc is not None and rc < 0:
            rc = 128 - rc
        if rc is not None and rc > 128:
            try:
                name = signal.Signals(rc - 128).name
            except ValueError:
                name = f"signal {rc - 128}"
            meaning = {"SIGSEGV": " (a crash in native code)", "SIGXCPU": " (CPU time limit)",
                       "SIGXFSZ": " (file size limit)", "SIGABRT": " (aborted)",
                       "SIGKILL": " (killed, often for memory)"}.get(name, "")
            return f"the process was killed by {name}{meaning}"
        return f"the process exited early with code {rc}"


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create namespaces here; the message says what to do."""


def bwrap_path() -> Optional[str]:
    return shutil.which("bwrap")


def sandbox_problem() -> Optional[str]:
    """None when bwrap works here, else why not and what to do."""
    bwrap = bwrap_path()
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed. Install it (Debian/Ubuntu: apt-get install "
                "bubblewrap) or run the grader in a container as the instructor guide shows. "
                "To grade without a sandbox anyway, pass --unsandboxed (student code can then "
                "read and write your files).")
    # The probe mounts a fresh /proc as every run does: a container whose own /proc has
    # masked paths allows namespaces but refuses that mount.
    probe = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return (f"bwrap cannot create a sandbox here ({probe.stderr.strip() or probe.returncode}). "
                "Unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone"
                "=1), or a container forbids them or masks /proc (docker run --security-opt "
                "seccomp=unconfined --security-opt apparmor=unconfined --security-opt "
                "systempaths=unconfined). Pass --unsandboxed to grade without a sandbox.")
    return None


def _python_roots() -> list[str]:
    """Folders Python and its packages live in, to mount read-only."""
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots |= {os.path.realpath(p) for p in sys.path if p and "site-packages" in p and os.path.isdir(p)}
    roots |= {os.path.realpath(os.path.dirname(os.path.realpath(sys.executable)))}
    keep = []
    for root in sorted(roots, key=len):
        if root.startswith("/usr/") or root == "/usr":
            continue  # /usr is mounted whole
        if not any(root == k or root.startswith(k + "/") for k in keep):
            keep.append(root)
    repo = str(REPO_ROOT.resolve())
    for root in keep:
        if root == repo or repo.startswith(root + "/"):
            raise SandboxUnavailable(
                f"Python's folder {root} contains the course repository: the sandbox would expose "
                "the solutions. Use a virtual environment (python3 -m venv .venv) as the README does.")
    return keep


def bwrap_command(task_dir: Path, cases_file: Path, assignment: str, limits: Limits,
                  gpu: bool) -> list[str]:
    cmd = [bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session",
           "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
           "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        cmd += ["--ro-bind-try", path, path]
    # The writable in-memory folders come before Python's: a virtual environment
    # that lives under /tmp is then mounted inside the new /tmp, not hidden by it.
    cmd += ["--size", str(limits.file_bytes), "--tmpfs", "/tmp",
            "--size", str(limits.file_bytes), "--tmpfs", "/scratch"]
    for root in _python_roots():
        cmd += ["--ro-bind", root, root]
    checks_pkg, grader_pkg = (f"{SANDBOX_COURSE}/{d.name}" for d in (CHECKS_DIR, PACKAGE_DIR))
    visible = f"{checks_pkg}/{VISIBLE_CASES_DIR.relative_to(CHECKS_DIR)}"
    cmd += ["--ro-bind", str(CHECKS_DIR), checks_pkg,
            # The reference outputs stay outside: only this assignment's case inputs go in.
            "--tmpfs", visible,
            "--ro-bind", str(cases_file), f"{visible}/{assignment}.npz",
            "--ro-bind", str(PACKAGE_DIR), grader_pkg,
            "--tmpfs", f"{grader_pkg}/{HIDDEN_CASES_DIR.relative_to(PACKAGE_DIR)}",
            "--ro-bind", str(task_dir), "/task",
            "--proc", "/proc", "--dev", "/dev",
            "--chdir", "/scratch", "--clearenv"]
    if gpu:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            cmd += ["--dev-bind", str(dev), str(dev)]
    cmd += ["--remount-ro", "/"]  # the sandbox's own root (parents of the mounts) is read-only too
    return cmd + _env_args(gpu)


# How the machine's math libraries pick their CPU code, when the grader's machine sets it: passed on to the
# notebooks, since some machines need them (OpenBLAS crashes on some CPUs without its core type) and they
# change only the order of float sums, which no check depends on.
CPU_SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES")


def _environment(gpu: bool, home: str, tmp: str) -> dict:
    env = {"HOME": home, "TMPDIR": tmp, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           # One thread per notebook: results do not depend on --jobs, and N jobs share N cores.
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.update({key: os.environ[key] for key in CPU_SETTINGS if key in os.environ})
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _env_args(gpu: bool) -> list[str]:
    args = []
    for key, value in _environment(gpu, "/scratch", "/tmp").items():
        args += ["--setenv", key, value]
    return args


def _set_limits(limits: Limits, gpu: bool, cpu_seconds: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not gpu:  # CUDA reserves huge address ranges; GPU runs are bounded by resident memory
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        tasks = _user_task_count()
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks + limits.processes, tasks + limits.processes))
    return apply


def _user_task_count() -> int:
    """Threads the current user already runs: RLIMIT_NPROC counts them all."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of ``root_pid`` and its descendants."""
    children, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * resource.getpagesize()
        except (OSError, IndexError, ValueError):
            pass
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def run_sandboxed(task_dir: Path, cases_file: Path, assignment: str, limits: Limits,
                  gpu: bool = False, sandboxed: bool = True, task: protocol.Task = None,
                  hidden_inputs: bytes = b"") -> RunResult:
    """Run the harness on ``task_dir`` (holding task.json, written from ``task`` when given); watch it;
    return what it reported. ``task.hidden_calls`` and ``hidden_inputs`` (the hidden cases' inputs,
    an ``.npz`` file's bytes) reach the sandbox only after its visible part (:mod:`protocol`)."""
    task = task if task is not None else protocol.Task.read(task_dir)
    if not task.marker:
        task.marker = new_marker()
    task.write(task_dir)
    limits = limits.resolved()
    read_fd, write_fd = os.pipe()
    hidden_read, hidden_write = os.pipe()
    launcher = (f"import sys; sys.path.insert(0, {SANDBOX_COURSE if sandboxed else str(PACKAGE_DIR.parent)!r}); "
                f"from autograder.harness import main; "
                f"main({'/task' if sandboxed else str(task_dir)!r}, {write_fd}, {hidden_read})")
    python = [sys.executable, "-I", "-c", launcher]
    if sandboxed:
        cmd, env, cwd = bwrap_command(task_dir, cases_file, assignment, limits, gpu) + python, None, None
    else:
        scratch = task_dir / "scratch"
        scratch.mkdir(exist_ok=True)
        cmd, cwd = python, str(scratch)
        env = _environment(gpu, str(scratch), str(scratch))
    cpu_seconds = int(limits.notebook_seconds) + 30
    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, pass_fds=(write_fd, hidden_read), env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=_set_limits(limits, gpu, cpu_seconds))
    finally:
        os.close(write_fd)
        os.close(hidden_read)
    result = RunResult()
    output = _OutputKeeper(proc.stdout, limits.output_bytes, task.marker.encode())
    events = _EventReader(read_fd, limits.report_bytes, started, task)
    sender = _HiddenSender(hidden_write, protocol.encode_hidden(task.hidden_calls, hidden_inputs),
                           output, events, proc)
    for thread in (output, events, sender):
        thread.start()
    try:
        result.killed_reason = _watch(proc, events, task, limits, started)
    finally:
        _kill(proc)  # also whatever the student's code left running in the background
        proc.wait()
        output.join(timeout=10)
        events.join(timeout=10)
        sender.join(timeout=10)
    result.returncode = proc.returncode
    result.seconds = round(time.monotonic() - started, 2)
    result.events, result.protocol_error = events.events, events.error
    result.output, result.output_dropped = bytes(output.visible.kept), output.visible.dropped
    result.withheld, result.withheld_dropped = bytes(output.withheld.kept), output.withheld.dropped
    return result


def new_marker() -> str:
    """A line no notebook prints by chance. The student's code can read it; printing it early only
    withholds more of its own output."""
    return f"\n[grader: end of the visible part {secrets.token_hex(8)}]\n"


def _watch(proc, events, task: protocol.Task, limits: Limits, started: float) -> Optional[str]:
    """Wait for ``proc``; kill it and say why when it runs past a limit."""
    last_rss_check = 0.0
    while proc.poll() is None:
        time.sleep(0.05)
        now = time.monotonic()
        if now - started > limits.notebook_seconds:
            _kill(proc)
            return NOTEBOOK_TIME_LIMIT
        running = events.running()
        if running is not None:
            (kind, index), since = running
            if now - since > limits.cell_seconds + GRACE_SECONDS:
                _kill(proc)
                return (f"{task.label(kind, index)} ran longer than {limits.cell_seconds:g} s and did not stop when "
                        "interrupted")
        if now - last_rss_check > 0.5:
            last_rss_check = now
            if _tree_rss(proc.pid) > limits.memory_bytes:
                _kill(proc)
                return f"it used more than {limits.memory_bytes / 1024**3:g} GiB of memory"
        if events.error:
            _kill(proc)
            return events.error
    return None


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap's own session; the sandbox dies with it
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


class _Kept:
    """The first ``limit`` bytes of an output; the rest is counted."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.dropped = limit, bytearray(), 0

    def add(self, data: bytes):
        room = max(self.limit - len(self.kept), 0)
        self.kept += data[:room]
        self.dropped += max(len(data) - room, 0)


class _OutputKeeper(threading.Thread):
    """Drain the sandbox's stdout and stderr: what comes before the marker is the student's to see
    (``visible``), what comes after it the instructor's only (``withheld``)."""

    def __init__(self, stream, limit: int, marker: bytes):
        super().__init__(daemon=True)
        self.stream, self.marker = stream, marker
        self.visible, self.withheld = _Kept(limit), _Kept(limit)
        self.marker_seen = threading.Event()

    def run(self):
        pending = b""  # the end of the visible output that could be the start of the marker
        while True:
            chunk = self.stream.read1(1 << 16) if hasattr(self.stream, "read1") else self.stream.read(1 << 16)
            if not chunk:
                break
            if self.marker_seen.is_set():
                self.withheld.add(chunk)
                continue
            data, pending = pending + chunk, b""
            at = data.find(self.marker)
            if at >= 0:
                self.visible.add(data[:at])
                self.marker_seen.set()
                self.withheld.add(data[at + len(self.marker):])
                continue
            keep = min(len(self.marker) - 1, len(data))
            self.visible.add(data[:len(data) - keep])
            pending = data[len(data) - keep:]
        self.visible.add(pending)
        self.stream.close()


class _HiddenSender(threading.Thread):
    """Write the hidden part once the visible one has ended, on both channels: the harness said so on
    the events pipe, and its marker has come through on standard output, so everything printed before
    the hidden inputs existed in the sandbox is already on the visible side."""

    def __init__(self, fd: int, payload: bytes, output: _OutputKeeper, events: "_EventReader", proc):
        super().__init__(daemon=True)
        self.fd, self.payload, self.output, self.events, self.proc = fd, payload, output, events, proc

    def run(self):
        try:
            while not (self.output.marker_seen.is_set() and self.events.visible_done.is_set()):
                if self.proc.poll() is not None:
                    return
                time.sleep(0.01)
            self.events.stop_taking_visible_events()
            view = memoryview(self.payload)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:  # the sandbox ended before it read everything
            pass
        finally:
            os.close(self.fd)


class _EventReader(threading.Thread):
    """Read the harness's JSON lines as they come, stamped with the grader's own clock."""

    def __init__(self, fd: int, limit: int, started: float, task: protocol.Task):
        super().__init__(daemon=True)
        self.fd, self.limit, self.started, self.task = fd, limit, started, task
        self.events, self.error, self._running = [], None, None
        self._lock = threading.Lock()
        self.visible_done = threading.Event()
        self._hidden_sent = False

    def stop_taking_visible_events(self):
        """From now on the sandbox holds the hidden inputs: only the hidden calls' events and ``done``
        count, so nothing it read there can come back as a cell's error or a visible check's result."""
        with self._lock:
            self._hidden_sent = True

    def _counts(self, event: dict) -> bool:
        if not self._hidden_sent:
            return True
        kind = event.get("event")
        return kind == protocol.DONE or (kind in (protocol.CALL_START, protocol.CALL_END)
                                         and self.task.is_hidden_call(event.get("index")))

    def running(self):
        with self._lock:
            return self._running

    def run(self):
        total = 0
        with os.fdopen(self.fd, "rb") as stream:
            for line in stream:
                total += len(line)
                if total > self.limit:
                    self.error = f"it reported more than {self.limit / 1024**2:g} MiB of results"
                    break
                event = protocol.decode_event(line)
                if event is None:
                    continue  # garbage the student's code wrote here; the real events still count
                now = time.monotonic()
                with self._lock:
                    if not self._counts(event):
                        continue
                    if event.get("event") == protocol.VISIBLE_DONE:
                        self.visible_done.set()
                    self.events.append((round(now - self.started, 3), event))
                    previous = self._running[0] if self._running else None
                    running = protocol.running_after(event, previous)
                    if running != previous or event.get("event") in protocol.START_OF:
                        self._running = (running, now) if running is not None else None
