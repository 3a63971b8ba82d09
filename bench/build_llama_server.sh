#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only, Release, native CPU flags) for bench/serving.py's
# llama-cpp system, from a pinned source: the llama.cpp tree vendored in PyPI's llama-cpp-python sdist
# (vendor/llama.cpp, llama.cpp commit LLAMA_CPP_COMMIT below). Reproducible: the sdist is fetched
# through pip and checked against its sha256; nothing else is downloaded (no curl, no OpenSSL, no web UI:
# its prebuilt assets would come from a Hugging Face bucket). Skips everything when the binary is there.
#
#   bash bench/build_llama_server.sh          # prints the binary's path on its last line
#   JOBS=8 bash bench/build_llama_server.sh   # more compile jobs on a machine of your own (default 2)
#
# Output, gitignored: .cache/llama.cpp/llama-cpp-python-$VERSION/bin/llama-server (llama.cpp's
# own libraries linked in), next to the sdist, the source tree and the cmake build folder (~20-30 min on 2
# shared cores under nice; delete the build folder afterwards if disk matters).
set -euo pipefail

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f # HEAD of the sdist's .git/modules/vendor/llama.cpp

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$ROOT/.cache/llama.cpp/llama-cpp-python-$VERSION"
BIN="$DIR/bin/llama-server"
SDIST="$DIR/llama_cpp_python-$VERSION.tar.gz"
JOBS=${JOBS:-2}

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DIR"

sha_ok() { [[ -f "$SDIST" ]] && echo "$SHA256  $SDIST" | sha256sum --check --status; }
if ! sha_ok; then
    # pip's own client and index (PIP_INDEX_URL etc. apply); --require-hashes refuses any other file
    python=python3
    [[ -x "$ROOT/.venv/bin/python" ]] && python="$ROOT/.venv/bin/python"
    req="$DIR/requirements.txt"
    echo "llama-cpp-python==$VERSION --hash=sha256:$SHA256" >"$req"
    "$python" -m pip download --no-deps --no-binary :all: --require-hashes -r "$req" -d "$DIR" >&2
    sha_ok || { echo "llama_cpp_python-$VERSION.tar.gz: sha256 differs from $SHA256" >&2; exit 1; }
fi

SRC="$DIR/src"
if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    # the whole sdist: its .git/modules/vendor/llama.cpp lets llama.cpp's build-info find its own commit
    # (with only vendor/llama.cpp, whose .git file would point nowhere, it says "unknown")
    tar -xzf "$SDIST" -C "$SRC" --strip-components=1
fi

BUILD="$DIR/build"
flags=(
    -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=ON      # -march=native: the build is for this machine only
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
)
nice -n 19 cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" "${flags[@]}" >&2
nice -n 19 cmake --build "$BUILD" --target llama-server -j "$JOBS" >&2
mkdir -p "$DIR/bin"
cp "$BUILD/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2 || true
echo "$BIN"
