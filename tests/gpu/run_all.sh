#!/usr/bin/env bash
# Run everything in the course that needs a CUDA GPU, from the repository root:
#
#     bash tests/gpu/run_all.sh
#
# One summary line per item (PASS/FAIL/SKIP), then a TOTAL line; exit status 1
# when anything failed. See tests/gpu/README.md.
#
# Python: $MHA_GPU_PYTHON, else python3. When it lacks a module the checks need
# (nbformat, nbclient, ipykernel, IPython, yaml, pytest, ...), a virtual
# environment .gpu-venv/ is made with --system-site-packages (plus a .pth file
# naming that Python's own site folders, so a preinstalled torch/CuPy in a venv
# or user site stays visible) and the missing packages are installed offline
# from .gpu-wheels/ (made by tests/gpu/prepare.sh). MHA_GPU_NO_INSTALL=1 skips
# that step. Without bwrap on PATH, a bubblewrap .deb in .gpu-wheels/ is
# unpacked and used. Logs: $MHA_GPU_OUT (default .gpu-out/).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$PWD
WHEELS=$ROOT/.gpu-wheels
VENV=$ROOT/.gpu-venv
OUT=${MHA_GPU_OUT:-$ROOT/.gpu-out}
mkdir -p "$OUT" || exit 2
SETUP_LOG=$OUT/setup.log
: >"$SETUP_LOG"

note() { printf -- '-- %s\n' "$*"; }
setup_failed() {
    printf 'FAIL  setup: %s\n' "$*"
    printf 'TOTAL  1 items: 0 passed, 1 failed, 0 skipped (the GPU items did not run)\n'
    exit 1
}

PY=${MHA_GPU_PYTHON:-$(command -v python3 || command -v python || true)}
[ -n "$PY" ] && [ -x "$(command -v "$PY" 2>/dev/null)" ] || setup_failed "no python3 on PATH (set MHA_GPU_PYTHON)"

NEEDED="numpy nbformat nbclient ipykernel IPython yaml pytest"
missing_modules() {  # the modules of $NEEDED that python "$1" cannot import
    "$1" - $NEEDED <<'EOF' 2>>"$SETUP_LOG"
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}

MISSING=$(missing_modules "$PY") || setup_failed "$PY does not run (see $SETUP_LOG)"
if [ -n "$MISSING" ] && [ "${MHA_GPU_NO_INSTALL:-0}" != 1 ]; then
    if [ -x "$VENV/bin/python" ] && [ -z "$(missing_modules "$VENV/bin/python")" ]; then
        note "using $VENV ($PY lacks: $MISSING)"
    else
        ls "$WHEELS"/*.whl >/dev/null 2>&1 || setup_failed "$PY lacks $MISSING and there is no .gpu-wheels/ \
to install them from: run tests/gpu/prepare.sh on a machine with internet and carry .gpu-wheels/ here"
        note "$PY lacks: $MISSING; installing them offline from .gpu-wheels/ into $VENV"
        rm -rf "$VENV"
        if ! "$PY" -m venv --system-site-packages "$VENV" >>"$SETUP_LOG" 2>&1; then
            rm -rf "$VENV"  # no ensurepip (Debian without python3-venv): a venv without pip, pip from $PY
            "$PY" -m venv --system-site-packages --without-pip "$VENV" >>"$SETUP_LOG" 2>&1 \
                || setup_failed "cannot create a virtual environment with $PY (see $SETUP_LOG)"
        fi
        # Keep the packages of $PY visible, even when $PY is itself a venv or uses a user site.
        SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        "$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
            >"$SITE/_mha_outer_site.pth"
        if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            PIP=("$VENV/bin/python" -m pip)
        else
            PIP=("$PY" -m pip --python "$VENV/bin/python")
        fi
        "${PIP[@]}" install --no-index --find-links "$WHEELS" -r tests/gpu/requirements.txt >>"$SETUP_LOG" 2>&1 \
            || setup_failed "offline install from .gpu-wheels/ failed: $(tail -n 3 "$SETUP_LOG" | tr '\n' ' ')"
        STILL=$(missing_modules "$VENV/bin/python")
        [ -z "$STILL" ] || setup_failed "still missing after the install: $STILL (see $SETUP_LOG)"
    fi
    PY=$VENV/bin/python
elif [ -n "$MISSING" ]; then
    setup_failed "$PY lacks $MISSING (MHA_GPU_NO_INSTALL=1: nothing is installed)"
fi

# CuPy's RawKernel needs NVRTC on the GPU machine; the nvidia-cuda-nvrtc-cu12 wheel
# (prepare.sh --with-nvrtc) provides it where CuPy finds none.
if ! "$PY" -c 'import cupy; cupy.cuda.nvrtc.getVersion()' >>"$SETUP_LOG" 2>&1; then
    NVRTC_WHEEL=$(ls "$WHEELS"/nvidia_cuda_nvrtc_cu12-*.whl 2>/dev/null | head -n 1)
    if [ -n "$NVRTC_WHEEL" ] && [ "$PY" = "$VENV/bin/python" ]; then
        note "CuPy finds no NVRTC: installing $(basename "$NVRTC_WHEEL")"
        "$PY" -m pip install --no-index --find-links "$WHEELS" "$NVRTC_WHEEL" >>"$SETUP_LOG" 2>&1 \
            || note "installing NVRTC failed (see $SETUP_LOG)"
    else
        note "CuPy cannot load NVRTC here (RawKernel compilation will fail on a GPU; see $SETUP_LOG)"
    fi
fi

# The grader's sandbox is bubblewrap; unpack the .deb from .gpu-wheels/ if bwrap is missing
# (looked up as the grader does, with shutil.which).
if [ -z "$("$PY" -c 'import shutil; print(shutil.which("bwrap") or "")')" ]; then
    DEB=$(ls "$WHEELS"/bubblewrap_*.deb 2>/dev/null | head -n 1)
    if [ -n "$DEB" ]; then
        DEST=$OUT/bubblewrap
        rm -rf "$DEST" && mkdir -p "$DEST"
        if command -v dpkg >/dev/null 2>&1; then
            dpkg -x "$DEB" "$DEST" >>"$SETUP_LOG" 2>&1
        else
            (cd "$DEST" && ar x "$DEB" && tar -xf data.tar.*) >>"$SETUP_LOG" 2>&1
        fi
        if [ -x "$DEST/usr/bin/bwrap" ]; then
            PATH=$DEST/usr/bin:$PATH
            export PATH
            note "bwrap unpacked from .gpu-wheels/$(basename "$DEB")"
        else
            note "could not unpack $DEB (see $SETUP_LOG); grading runs unsandboxed"
        fi
    else
        note "bwrap is not installed and .gpu-wheels/ has no bubblewrap .deb; grading runs unsandboxed"
    fi
fi

"$PY" tests/gpu/verify.py --out "$OUT" "$@"
