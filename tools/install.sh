#!/usr/bin/env bash
# Install mixplugins and the whole OpenMMLab 2.0 stack into .venv (CPU).
#
# Idempotent: a second run only checks a stamp and returns in seconds.
# mmcv 2.1.0 has no binary wheel on PyPI, and its sdist does not build on
# current toolchains (setuptools>=82 removed pkg_resources; torch>=2.13
# headers need C++20). We build it once, with ops, patched, and keep the
# wheel in a cache outside the repository, keyed by mmcv/torch/Python
# versions, so a fresh clone installs in minutes.
#
# Environment:
#   PYTHON             interpreter for the venv (default: python3)
#   MIXPLUGINS_CACHE   wheel cache (default: ~/.cache/mixplugins)
#   MAX_JOBS           parallel compile jobs for mmcv (default: nproc)
#   EXTRAS             pip extras of mixplugins to install (default: rl,tests)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
CACHE="${MIXPLUGINS_CACHE:-$HOME/.cache/mixplugins}"
EXTRAS="${EXTRAS:-rl,tests}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

log() { printf '[install] %s\n' "$*" >&2; }

stamp_of() {
  cat "$ROOT/requirements.txt" "$ROOT/setup.py" "$ROOT/tools/install.sh" \
    | sha256sum | cut -d' ' -f1
  echo "extras=$EXTRAS"
}

if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.mixplugins-stamp" ] \
   && [ "$(cat "$VENV/.mixplugins-stamp")" = "$(stamp_of)" ] \
   && "$VENV/bin/python" -c "import mixplugins, mmcv.ops" 2>/dev/null; then
  log "environment at .venv is up to date"
  exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# mmcv's and mmengine's setup/import code still uses pkg_resources
"${PIP[@]}" install -q --upgrade "setuptools<82" wheel
log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
"${PIP[@]}" install -q "setuptools<82" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "mmengine==0.10.7" ninja

pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torchver=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')
WHEELDIR="$CACHE/mmcv-$MMCV_VERSION-torch$torchver-$pyver-$(uname -m)"
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  if ! ls "$WHEELDIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with ops (CPU; ~11-13 min on 2 cores), cached in $WHEELDIR"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$tmp"
    tar -xzf "$tmp"/mmcv-"$MMCV_VERSION".tar.gz -C "$tmp"
    src="$tmp/mmcv-$MMCV_VERSION"
    # torch>=2.13 headers require C++20
    sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/setup.py"
    mkdir -p "$WHEELDIR"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$WHEELDIR.partial")
    mv "$WHEELDIR.partial"/mmcv-*.whl "$WHEELDIR"/ && rmdir "$WHEELDIR.partial"
  fi
  log "installing mmcv from $WHEELDIR"
  "${PIP[@]}" install -q "$WHEELDIR"/mmcv-*.whl
fi

log "mmpretrain, mmdet, mmsegmentation and mixplugins[$EXTRAS]"
"${PIP[@]}" install -q -r "$ROOT/requirements.txt"
"${PIP[@]}" install -q -e "$ROOT[$EXTRAS]"
"$VENV/bin/python" -W ignore -c "import pkg_resources, mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models, mixplugins"
stamp_of > "$VENV/.mixplugins-stamp"
log "done in $(( $(date +%s) - start )) s"
