#!/usr/bin/env bash
# On a machine WITH internet, from the repository root:
#
#     bash tests/gpu/prepare.sh [--with-nvrtc]
#
# fills .gpu-wheels/ with what tests/gpu/run_all.sh installs offline on a GPU
# machine that has only torch, CuPy and pytest: the wheels of
# tests/gpu/requirements.txt and their dependencies, binary wheels for Linux
# x86_64 (glibc >= 2.28) and CPython 3.10 to 3.13 (MHA_GPU_PYTHON_VERSIONS), and
# the bubblewrap .deb of this machine's distribution (apt-get download), in case
# the GPU machine lacks bwrap.
#
# --with-nvrtc adds the nvidia-cuda-nvrtc-cu12 wheel (about 85 MiB), for a GPU
# machine whose CuPy finds no NVRTC (a CUDA build of torch usually brings it).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}
VERSIONS=${MHA_GPU_PYTHON_VERSIONS:-3.10 3.11 3.12 3.13}
NVRTC="nvidia-cuda-nvrtc-cu12==12.9.86"  # the pin of requirements.txt
mkdir -p "$WHEELS"
status=0

# pip does not widen a manylinux_2_28 target to older tags itself: name them all.
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 \
           manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done

for version in $VERSIONS; do
    echo "== wheels for CPython $version"
    # exceptiongroup, tomli and typing_extensions: dependencies behind python_version
    # markers, which pip may evaluate for the running Python rather than the target.
    if ! "$PY" -m pip download --quiet --only-binary=:all: "${PLATFORMS[@]}" \
            --implementation cp --python-version "$version" --dest "$WHEELS" \
            -r tests/gpu/requirements.txt exceptiongroup tomli typing_extensions; then
        echo "pip download failed for CPython $version" >&2
        status=1
    fi
done

if [ "${1:-}" = "--with-nvrtc" ]; then
    echo "== $NVRTC"
    "$PY" -m pip download --quiet --only-binary=:all: "${PLATFORMS[@]}" --no-deps \
        --implementation cp --python-version 3.11 --dest "$WHEELS" "$NVRTC" || status=1
fi

if command -v apt-get >/dev/null 2>&1; then
    echo "== bubblewrap .deb"
    (cd "$WHEELS" && rm -f bubblewrap_*.deb && apt-get download bubblewrap) \
        || echo "apt-get download bubblewrap failed: the GPU machine needs its own bwrap" >&2
else
    echo "no apt-get here: no bubblewrap .deb (the GPU machine needs its own bwrap)" >&2
fi

echo "== $WHEELS: $(ls "$WHEELS" | wc -l) files, $(du -sh "$WHEELS" | cut -f1)"
exit $status
