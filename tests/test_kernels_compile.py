"""Every CUDA kernel of the CuPy solution notebooks compiles, without a GPU.

A kernel that does not compile only shows up on a GPU, where few of the
course's checks run. Here NVRTC (NVIDIA's runtime compiler, the one CuPy
uses; from the ``nvidia-cuda-nvrtc-cu12`` wheel, called through
``cuda-bindings``) compiles each kernel for the GPUs students and graders
use, on any machine.

Finding the kernels. For each GPU notebook of the course registry
(``mha_checks.registry.gpu_notebooks()``), the solution notebook's imports and
solution cells run through ``autograder.notebooks.solution_namespace`` while
``cupy.RawKernel``, ``cupy.RawModule``, ``cupy.ElementwiseKernel`` and
``cupy.ReductionKernel`` are replaced on the real ``cupy`` module by
recorders: every kernel a cell builds when it runs is recorded with its name
and options. Building a kernel object needs no GPU; if a cell does need one
at execution time (an array made at module level) the cells run again with a
NumPy stand-in imported as ``cupy``, with the same recorders.

A kernel built only inside a function body is not built when its cell runs,
and the test does not call student functions to find it (they want real GPU
arrays). Instead every string constant of the notebook's code cells, and every
string the cells leave in the namespace, that holds ``__global__`` and was
not already recorded is compiled too ("source scan"), with CuPy's default
RawKernel options and the kernel names read from the source. A source made
from a template (``str.format`` placeholders) cannot be compiled as it stands:
build such kernels at cell level, where the recorder sees the final source.

``ElementwiseKernel`` and ``ReductionKernel`` bodies are recorded but not
compiled: CuPy writes their full source only when they are called on arrays,
for the arrays' dtypes, so they appear as skipped items naming the kernel and
run on the GPU (``bash tests/gpu/run_all.sh``).

Compiling. The options are CuPy's for a RawKernel: the kernel's own
``options`` completed by CuPy's ``assemble_cupy_compiler_options`` (its CCCL
and header include paths and its default C++ standard; a copy of that logic
when the private function is missing), then ``-ftz=true``,
``--device-as-default-execution-space`` (not with jitify) and
``-arch=sm_XX``, so NVRTC emits a cubin as CuPy does. Each kernel compiles for
``DEFAULT_ARCHS`` (sm_75, the T4 of Colab) in the default run, and for every
architecture of ``ARCHS`` with ``MHA_ALL_ARCHS=1``; a failure prints NVRTC's log with the
notebook, kernel and architecture. A RawKernel's name must then be a function
of the cubin (a misspelt name otherwise fails only at the first launch).

The compile tests skip only when the NVRTC binding or library cannot be loaded
(``pip install -r requirements.txt`` installs both).
"""
from __future__ import annotations

import ast
import os
import contextlib
import re
import struct
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import pytest

from autograder.notebooks import solution_namespace

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    from mha_checks.registry import gpu_notebooks
except ImportError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(REPO_ROOT))
    from mha_checks.registry import gpu_notebooks

SOLUTIONS_DIR = REPO_ROOT / "solutions"

# Compute capability -> the GPUs that need it.
ARCHS = {
    "75": "T4 (Colab's free GPU)",
    "80": "A100",
    "86": "A10, RTX 30xx",
    "89": "L4, RTX 40xx",
    "90": "H100, H200",
    "100": "B200",
}

# The default run compiles every kernel for sm_75 (the oldest GPU the course targets, Colab's T4):
# NVRTC accepts for later architectures what it accepts for it, and a tiled kernel unrolled over its
# tile takes about 40 s per architecture on two cores (70 s on a busy machine), which the default run
# cannot spend twice. MHA_ALL_ARCHS=1 compiles for every architecture of ARCHS, sm_90 included; the GPU
# script compiles each kernel on the GPU it runs on.
DEFAULT_ARCHS = ("75",)
ALL_ARCHS = os.environ.get("MHA_ALL_ARCHS") == "1"

GLOBAL_NAME = re.compile(
    r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")


# ---------------------------------------------------------------------------
# Finding the kernels
# ---------------------------------------------------------------------------

@dataclass
class Kernel:
    """One kernel source of one notebook, as CuPy would get it."""

    notebook: str                     # "<assignment>/2_cupy"
    kind: str                         # RawKernel, RawModule, ElementwiseKernel, ReductionKernel, source scan
    name: str                         # the kernel's name (RawKernel's `name`), or a label
    code: str
    options: tuple = ()
    name_expressions: tuple = ()
    jitify: bool = False
    translate_cucomplex: bool = False
    symbol: str | None = None         # a function the cubin must define, when known
    compilable: bool = True           # False: recorded, not compiled here (ElementwiseKernel, ...)


@dataclass
class Discovery:
    notebook: str
    kernels: list = field(default_factory=list)
    how: str = ""                     # which execution recorded the kernels
    error: str | None = None          # why the notebook's cells could not be run at all


def _recorders(sink: list, notebook: str) -> dict:
    """Stand-ins for CuPy's kernel classes that record what they are given."""

    class _Recorded:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("a recorded kernel cannot be launched (tests/test_kernels_compile.py)")

    class RawKernel(_Recorded):
        def __init__(self, code, name, options=(), backend="nvrtc", *, translate_cucomplex=False,
                     enable_cooperative_groups=False, jitify=False):
            self.code, self.name, self.options = code, name, tuple(options)
            sink.append(Kernel(notebook, "RawKernel", name, code, tuple(options), jitify=jitify,
                               translate_cucomplex=translate_cucomplex, symbol=name))

    class RawModule(_Recorded):
        def __init__(self, *, code=None, path=None, options=(), backend="nvrtc",
                     translate_cucomplex=False, enable_cooperative_groups=False,
                     name_expressions=None, jitify=False):
            self.code, self.options = code, tuple(options)
            self.name_expressions = tuple(name_expressions or ())
            if code is None:
                return  # a precompiled cubin/PTX file: nothing to compile
            names = self.name_expressions or tuple(GLOBAL_NAME.findall(code)) or ("module",)
            sink.append(Kernel(notebook, "RawModule", "+".join(names), code, tuple(options),
                               name_expressions=self.name_expressions, jitify=jitify,
                               translate_cucomplex=translate_cucomplex))

        def get_function(self, name):
            return RawKernel(self.code, name, self.options)

    class ElementwiseKernel(_Recorded):
        def __init__(self, in_params, out_params, operation, name="kernel", *args, **kwargs):
            sink.append(Kernel(notebook, "ElementwiseKernel", name,
                               f"// in: {in_params}\n// out: {out_params}\n{operation}",
                               compilable=False))

    class ReductionKernel(_Recorded):
        def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr,
                     identity, name="reduce_kernel", *args, **kwargs):
            sink.append(Kernel(notebook, "ReductionKernel", name,
                               f"// map: {map_expr}\n// reduce: {reduce_expr}\n// post: {post_map_expr}",
                               compilable=False))

    return {"RawKernel": RawKernel, "RawModule": RawModule,
            "ElementwiseKernel": ElementwiseKernel, "ReductionKernel": ReductionKernel}


@contextlib.contextmanager
def _patched_cupy(recorders: dict):
    """The real cupy module, its kernel classes replaced by recorders."""
    import cupy
    saved = {name: getattr(cupy, name) for name in recorders}
    try:
        for name, recorder in recorders.items():
            setattr(cupy, name, recorder)
        yield
    finally:
        for name, original in saved.items():
            setattr(cupy, name, original)


class _NumpyStandIn(types.ModuleType):
    """Imported as ``cupy`` when a notebook's cells need a GPU to run: NumPy's
    names, the kernel recorders, and pass-through decorators."""

    def __init__(self, recorders: dict):
        super().__init__("cupy")
        self.__dict__.update(recorders)
        self.memoize = lambda *a, **k: (lambda f: f)
        self.fuse = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
        self.asnumpy = np.asarray

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def _standin_cupy(recorders: dict):
    saved = {k: v for k, v in sys.modules.items() if k == "cupy" or k.startswith("cupy.")}
    try:
        for key in saved:
            del sys.modules[key]
        sys.modules["cupy"] = _NumpyStandIn(recorders)
        yield
    finally:
        sys.modules.pop("cupy", None)
        sys.modules.update(saved)


def _string_constants(nb) -> list:
    """(cell id, string) for every string constant in the notebook's code cells."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # magics and the like
        found += [(cell.get("id"), node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return found


def discover(path: Path, notebook: str) -> Discovery:
    """Every kernel source of one solution notebook (see the module docstring)."""
    found = Discovery(notebook)
    errors = []
    namespace = {}
    for how, context in (("recorded while the solution cells ran with CuPy", _patched_cupy),
                         ("recorded while the solution cells ran with a NumPy stand-in for CuPy",
                          _standin_cupy)):
        sink = []
        try:
            with context(_recorders(sink, notebook)):
                namespace = solution_namespace(path)
        except Exception as err:  # noqa: BLE001 - reported, then the next way is tried
            errors.append(f"{how.split(' while ')[1]}: {type(err).__name__}: {err}")
            continue
        found.kernels, found.how = sink, how
        break
    else:
        found.error = "the solution cells could not be run to find the kernels:\n  " + "\n  ".join(errors)
        namespace = {}

    recorded = {k.code for k in found.kernels}
    nb = nbformat.read(str(path), as_version=4)
    scanned = [(f"string constant in cell {cell_id}", s) for cell_id, s in _string_constants(nb)]
    scanned += [(f"string {name!r} left by the solution cells", value) for name, value in namespace.items()
                if isinstance(value, str) and not name.startswith("__")]
    for where, source in scanned:
        if "__global__" not in source or source in recorded:
            continue
        recorded.add(source)
        names = GLOBAL_NAME.findall(source)
        extern_c = 'extern "C"' in source
        for name in names or ["(no kernel name found)"]:
            found.kernels.append(Kernel(notebook, f"source scan: {where}", name, source,
                                        symbol=name if extern_c and names else None))
    return found


def discover_course() -> list:
    return [discover(SOLUTIONS_DIR / ch.assignment / f"{nb.name}.ipynb", f"{ch.assignment}/{nb.name}")
            for ch, nb in gpu_notebooks()]


# ---------------------------------------------------------------------------
# Compiling with NVRTC
# ---------------------------------------------------------------------------

def load_nvrtc():
    """The NVRTC binding with its library loaded, or raise ImportError saying why not."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # cuda-python before 12.6
        except ImportError as err:
            raise ImportError(f"the NVRTC binding (cuda-bindings) is not installed: {err}") from err
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # the library itself (nvidia-cuda-nvrtc-cu12) is missing
        raise ImportError(f"the NVRTC library cannot be loaded: {exc}") from exc
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise ImportError(f"nvrtcVersion failed: {err}")
    return nvrtc


@dataclass
class CompileResult:
    ok: bool
    log: str
    cubin: bytes = b""
    lowered: dict = field(default_factory=dict)
    options: tuple = ()


def _check(nvrtc, result, what):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, message = nvrtc.nvrtcGetErrorString(err)
        raise RuntimeError(f"{what}: {message.decode(errors='replace')}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def nvrtc_compile(source: str, options: tuple, *, name_expressions: tuple = (),
                  filename: str = "kern.cu") -> CompileResult:
    """Compile ``source`` with NVRTC and ``options`` (an ``-arch=sm_XX`` among them)."""
    nvrtc = load_nvrtc()
    prog = _check(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
                  "nvrtcCreateProgram")
    try:
        for expression in name_expressions:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(prog, expression.encode()), "nvrtcAddNameExpression")
        encoded = [o.encode() for o in options]
        status = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)[0]
        size = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        log = log.rstrip(b"\x00 ").decode(errors="replace")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, message = nvrtc.nvrtcGetErrorString(status)
            return CompileResult(False, f"{message.decode()}\n{log}".strip(), options=options)
        size = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        lowered = {}
        for expression in name_expressions:
            name = _check(nvrtc, nvrtc.nvrtcGetLoweredName(prog, expression.encode()), "nvrtcGetLoweredName")
            lowered[expression] = name.decode()
        return CompileResult(True, log, cubin, lowered, options)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _fallback_cupy_options(options: tuple) -> tuple:
    """CuPy 14's assemble_cupy_compiler_options, for when it cannot be called."""
    try:
        import cupy
        include = str(Path(cupy.__file__).parent / "_core" / "include")
    except ImportError:
        include = None
    if not any("-std=" in o for o in options):
        options += ("--std=c++17",)
    if include is None:
        return options
    cccl = tuple(f"-I{include}/cupy/_cccl/{lib}" for lib in ("cub", "thrust", "libcudacxx"))
    return cccl + options + (f"-I{include}",)


def cupy_options(kernel: Kernel, arch: str) -> tuple:
    """The NVRTC options CuPy uses for this RawKernel/RawModule on a GPU of compute capability ``arch``."""
    options = tuple(kernel.options)
    try:
        from cupy._core.core import assemble_cupy_compiler_options
        options = tuple(assemble_cupy_compiler_options(options))
    except Exception:  # private CuPy API, or no CUDA headers found: CuPy 14's logic, copied
        options = _fallback_cupy_options(options)
    options += ("-ftz=true",)
    if not kernel.jitify:
        options += ("--device-as-default-execution-space",)
    return options + (f"-arch=sm_{arch}",)


_CUPY_HEADERS = "".join(f"#include <{h}>\n" for h in (
    "cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h"))


def cupy_source(kernel: Kernel) -> str:
    if not kernel.translate_cucomplex:
        return kernel.code
    bridged = re.sub(r"^\s*#\s*include\s*<\s*cuComplex\.h\s*>", "#include <cupy/cuComplex_bridge.h>",
                     kernel.code, flags=re.M)
    return _CUPY_HEADERS + bridged


def elf_functions(blob: bytes) -> set:
    """Names of the function symbols of an ELF64 file (a cubin)."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2:
        return set()
    shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", blob, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for _, sh_type, _, _, offset, size, link, _, _, _ in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link][4]
        for entry in range(offset, offset + size, 24):
            st_name, st_info = struct.unpack_from("<IB", blob, entry)
            if st_info & 0xF == 2:  # STT_FUNC
                start = strtab + st_name
                names.add(blob[start:blob.index(b"\0", start)].decode(errors="replace"))
    return names


def check_kernel_compiles(kernel: Kernel, arch: str) -> CompileResult:
    """Compile one kernel for one architecture; raise AssertionError with NVRTC's log if it fails."""
    where = f"{kernel.notebook}: kernel {kernel.name!r} ({kernel.kind}) for sm_{arch} ({ARCHS.get(arch, '?')})"
    result = nvrtc_compile(cupy_source(kernel), cupy_options(kernel, arch),
                           name_expressions=kernel.name_expressions,
                           filename=f"{kernel.notebook.replace('/', '_')}_{kernel.name}.cu")
    if not result.ok:
        raise AssertionError(f"{where} does not compile.\nNVRTC options: {' '.join(result.options)}\n"
                             f"NVRTC log:\n{result.log}")
    if kernel.symbol is not None:
        functions = elf_functions(result.cubin)
        if kernel.symbol not in functions:
            raise AssertionError(f"{where} compiles, but the cubin defines no kernel named "
                                 f"{kernel.symbol!r} (it defines: {', '.join(sorted(functions)) or 'none'}); "
                                 "CuPy would fail at the first launch. Is the name misspelt, or the "
                                 "kernel not extern \"C\"?")
    return result


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------

DISCOVERED = discover_course()


def _params():
    params = []
    for found in DISCOVERED:
        if found.error:
            params.append(pytest.param(found, None, None, id=f"{found.notebook}-discovery"))
            continue
        for kernel in found.kernels:
            marks = () if kernel.compilable else pytest.mark.skip(
                reason=f"{kernel.kind} {kernel.name!r}: recorded, not compiled here (CuPy writes its "
                       "source only when it is called on arrays); run on a GPU by tests/gpu/run_all.sh")
            for arch in ARCHS if kernel.compilable else ("any",):
                arch_marks = marks
                if kernel.compilable and arch not in DEFAULT_ARCHS and not ALL_ARCHS:
                    arch_marks = pytest.mark.skip(reason=f"compiled for sm_{' and sm_'.join(DEFAULT_ARCHS)} in the "
                                                  "default run; MHA_ALL_ARCHS=1 compiles for every architecture")
                params.append(pytest.param(found, kernel, arch, marks=arch_marks,
                                           id=f"{found.notebook}-{kernel.name}-sm_{arch}"))
    return params


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return load_nvrtc()
    except ImportError as err:
        pytest.skip(f"NVRTC is not available ({err}); `pip install -r requirements.txt` installs "
                    "cuda-bindings and nvidia-cuda-nvrtc-cu12")


def test_the_course_has_kernels_to_compile():
    """The compile test below cannot silently test nothing."""
    assert gpu_notebooks(), "the registry lists no GPU notebook"
    problems = [f"{f.notebook}: {f.error}" for f in DISCOVERED if f.error]
    assert not problems, "\n".join(problems)
    kernels = [k for f in DISCOVERED for k in f.kernels if k.compilable]
    assert kernels, ("no CUDA kernel found in any GPU solution notebook ("
                     + ", ".join(f.notebook for f in DISCOVERED) + ")")


@pytest.mark.parametrize("found, kernel, arch", _params())
def test_kernel_compiles(nvrtc, found, kernel, arch):
    if found.error:
        pytest.fail(f"{found.notebook}: {found.error}")
    check_kernel_compiles(kernel, arch)


BROKEN = r'''
extern "C" __global__
void broken(const float* x, float* y) {
    y[threadIdx.x] = x[threadIdx.x]   /* the semicolon is missing */
}
'''


def test_a_broken_kernel_fails_with_nvrtcs_log(nvrtc):
    """The helper the compile test uses reports a compile error, naming where it is."""
    kernel = Kernel("chXX_example/2_cupy", "RawKernel", "broken", BROKEN, symbol="broken")
    with pytest.raises(AssertionError) as failure:
        check_kernel_compiles(kernel, "75")
    message = str(failure.value)
    assert "chXX_example/2_cupy" in message and "'broken'" in message and "sm_75" in message
    assert "NVRTC log:" in message and "error" in message and 'expected a ";"' in message


def test_a_misspelt_kernel_name_fails(nvrtc):
    good = next(k for f in DISCOVERED for k in f.kernels if k.kind == "RawKernel")
    misspelt = Kernel(good.notebook, "RawKernel", good.name + "_typo", good.code,
                      good.options, symbol=good.name + "_typo")
    with pytest.raises(AssertionError, match="defines no kernel named"):
        check_kernel_compiles(misspelt, "75")


def _notebook(tmp_path, *cells) -> Path:
    nb = nbformat.v4.new_notebook()
    for i, (grade_id, source) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "solution": grade_id != "imports",
                                     "grade": False, "locked": grade_id == "imports", "schema_version": 3}
        cell["id"] = f"cell{i}"
        nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_discovery_finds_kernels_built_at_cell_level_and_inside_functions(tmp_path):
    path = _notebook(
        tmp_path,
        ("imports", "import numpy as np\nimport cupy as cp"),
        ("cell_level", 'k = cp.RawKernel(r"""extern "C" __global__ void at_cell(float* x) { x[0] = 1; }""",'
                       ' "at_cell", options=("-DFOO=1",))'),
        ("in_function", 'def make():\n'
                        '    return cp.RawKernel(r"""extern "C" __global__ void in_body(float* x) { x[0] = 2; }""",'
                        ' "in_body")'),
        ("module", 'm = cp.RawModule(code="template<typename T> __global__ void t(T* x) {}",'
                   ' name_expressions=["t<float>"])'),
        ("array_at_cell_level", "table = cp.asarray([1.0, 2.0])"),  # needs a GPU: the stand-in takes over
    )
    found = discover(path, "test/nb")
    assert found.error is None
    by_name = {k.name: k for k in found.kernels}
    assert set(by_name) == {"at_cell", "in_body", "t<float>"}
    assert by_name["at_cell"].kind == "RawKernel" and by_name["at_cell"].options == ("-DFOO=1",)
    assert by_name["in_body"].kind.startswith("source scan") and by_name["in_body"].symbol == "in_body"
    assert by_name["t<float>"].name_expressions == ("t<float>",)
    import cupy
    if not cupy.is_available():
        assert "stand-in" in found.how, found.how
