#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that `dalle-ort` loads at run time (the `ort` crate is
# built with `load-dynamic`, so nothing is downloaded at build time).
#
#   scripts/setup-ort.sh          CPU build    -> <repo>/.onnxruntime/cpu/
#   scripts/setup-ort.sh --gpu    CUDA+TensorRT -> <repo>/.onnxruntime/gpu/
#
# The library comes from the PyPI wheel (`onnxruntime==1.31.1` / `onnxruntime-gpu==1.31.1`),
# downloaded with pip but never installed: only the .so files are unpacked, after the wheel's
# SHA-256 is checked against the one pinned here. Idempotent: a folder that already holds the
# files with the recorded checksums is left alone (`--force` re-fetches).
# `PYTHON` picks the interpreter whose pip is used (default: python3).
# The GPU build also needs CUDA 13, cuBLAS, cuDNN 9 and TensorRT 10.x on the loader path at run
# time (not fetched here; README "Execution providers and GPU nodes").
set -euo pipefail

ORT_VERSION=1.31.1
# SHA-256 of the wheels pip picks for these flags (cp312, manylinux_2_28_x86_64), checked after
# download; from PyPI's JSON API (https://pypi.org/pypi/<package>/json, releases["1.31.1"]).
CPU_WHEEL_SHA256="1f3dea47f2f0e5117c2404cea7d21fd253ae7836a3bf167a501cdfbb2600d536"
# onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl, 255,569,273 bytes.
GPU_WHEEL_SHA256="05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7"

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "usage: $0 [--gpu] [--force]"
}

flavor=cpu
force=0
for arg in "$@"; do
    case "$arg" in
        --gpu) flavor=gpu ;;
        --force) force=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "setup-ort.sh: unknown argument '$arg'" >&2
            usage >&2
            exit 2
            ;;
    esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/.onnxruntime/$flavor"
lib="libonnxruntime.so.$ORT_VERSION"
sums_file="$dest/SHA256SUMS"

if [[ $flavor == gpu ]]; then
    package="onnxruntime-gpu"
    files=("$lib" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so
        libonnxruntime_providers_tensorrt.so)
    wheel_sha256="$GPU_WHEEL_SHA256"
else
    package="onnxruntime"
    files=("$lib" libonnxruntime_providers_shared.so)
    wheel_sha256="$CPU_WHEEL_SHA256"
fi

# Already there and intact?
if [[ $force == 0 && -f $sums_file ]]; then
    ok=1
    for f in "${files[@]}"; do
        [[ -s "$dest/$f" ]] || ok=0
    done
    if [[ $ok == 1 ]] && (cd "$dest" && sha256sum --quiet --check SHA256SUMS) >/dev/null 2>&1; then
        echo "ONNX Runtime $ORT_VERSION ($flavor) already set up: $dest/$lib"
        exit 0
    fi
    echo "setup-ort.sh: $dest is incomplete or changed; fetching again" >&2
fi

python="${PYTHON:-python3}"
if ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "setup-ort.sh: '$python -m pip' does not work; set PYTHON to an interpreter with pip" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "Downloading $package==$ORT_VERSION (wheel only, not installed)..."
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.12 \
    --dest "$tmp" "$package==$ORT_VERSION"

shopt -s nullglob
wheels=("$tmp"/*.whl)
shopt -u nullglob
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "setup-ort.sh: expected one wheel from pip, got ${#wheels[@]}" >&2
    exit 1
fi
wheel="${wheels[0]}"

got="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ $got != "$wheel_sha256" ]]; then
    echo "setup-ort.sh: checksum mismatch for $(basename "$wheel")" >&2
    echo "  expected $wheel_sha256" >&2
    echo "  got      $got" >&2
    exit 1
fi
echo "Wheel checksum OK ($(basename "$wheel"))"

mkdir -p "$tmp/unpacked"
members=()
for f in "${files[@]}"; do
    members+=("onnxruntime/capi/$f")
done
if ! unzip -q -j -o "$wheel" "${members[@]}" -d "$tmp/unpacked"; then
    echo "setup-ort.sh: $(basename "$wheel") lacks some of: ${members[*]}" >&2
    exit 1
fi
for f in "${files[@]}"; do
    if [[ ! -s "$tmp/unpacked/$f" ]]; then
        echo "setup-ort.sh: $f is missing or empty in $(basename "$wheel")" >&2
        exit 1
    fi
done

mkdir -p "$dest"
for f in "${files[@]}"; do
    install -m 0755 "$tmp/unpacked/$f" "$dest/$f"
done
(cd "$dest" && sha256sum "${files[@]}" >SHA256SUMS)

echo "ONNX Runtime $ORT_VERSION ($flavor) is in $dest:"
for f in "${files[@]}"; do
    echo "  $f ($(stat -c %s "$dest/$f") bytes)"
done
echo "dalle-ort finds it there (from the repo or from target/*/dalle-ort); or set ORT_DYLIB_PATH=$dest/$lib"
