#!/usr/bin/env bash
# Install mixplugins and an OpenMMLab 2.0 stack into a venv (CPU).
#
#   bash tools/install.sh                              upstream stack, everything      -> .venv
#   PROFILE=classification bash tools/install.sh       upstream, classification only   -> .venv
#                                                      (mmcv-lite: no build, ~minutes)
#   STACK=onedl bash tools/install.sh                  the onedl-* forks, everything   -> .venv-onedl
#
# Idempotent: a second run only checks a stamp and returns in seconds.
# mmcv 2.1.0 (and onedl-mmcv 2.3.6) has no binary wheel on PyPI, and its sdist
# does not build on current toolchains (setuptools>=82 removed pkg_resources;
# torch>=2.13 headers need C++20). We build it once, with ops, patched, and
# keep the wheel in a cache outside the repository, keyed by mmcv/torch/Python
# versions, so a fresh clone installs in minutes. The classification profile
# needs no mmcv op: it installs mmcv-lite (a pure wheel) instead; the full
# profile later replaces it (uninstalls mmcv-lite, installs the mmcv wheel).
# An upstream distribution and its fork own the same import name: the two
# stacks go to two venvs, and the script checks that no venv holds both.
#
# Environment:
#   STACK              upstream (default) or onedl
#   PROFILE            full (default) or classification (upstream only)
#   VENV               the venv (default: .venv, .venv-onedl for STACK=onedl)
#   PYTHON             interpreter for the venv (default: python3)
#   MIXPLUGINS_CACHE   wheel cache (default: ~/.cache/mixplugins)
#   MAX_JOBS           parallel compile jobs for mmcv (default: nproc)
#   EXTRAS             pip extras of mixplugins to install
#                      (default: rl,tests; rl,eval for PROFILE=classification)
#   TORCH_VERSION, TORCHVISION_VERSION
#                      default 2.14.1 / 0.29.1; an installed build of that
#                      version (e.g. +cu128) is kept. Another version is for
#                      STACK=onedl with the forks' prebuilt onedl-mmcv (GPU,
#                      docs/install.md); the upstream stack is tested on 2.14.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${STACK:-upstream}"
PROFILE="${PROFILE:-full}"
PY="${PYTHON:-python3}"
CACHE="${MIXPLUGINS_CACHE:-$HOME/.cache/mixplugins}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
FULL_EXTRAS=rl,tests

log() { printf '[install] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

case "$PROFILE" in
  full) ;;
  cls|classification) PROFILE=classification ;;
  *) die "PROFILE must be full or classification, got '$PROFILE'" ;;
esac
case "$STACK" in
  upstream)
    VENV="${VENV:-$ROOT/.venv}"
    MMCV_DIST=mmcv MMCV_VERSION=2.1.0 MMENGINE="mmengine==0.10.7"
    if [ "$PROFILE" = full ]; then REQ="$ROOT/requirements.txt"
    else REQ="$ROOT/requirements/classification.txt"; fi ;;
  onedl)
    [ "$PROFILE" = full ] || die "PROFILE=classification exists for the upstream stack only"
    VENV="${VENV:-$ROOT/.venv-onedl}"
    MMCV_DIST=onedl-mmcv MMCV_VERSION=2.3.6 MMENGINE="onedl-mmengine==0.10.12"
    REQ="$ROOT/requirements/onedl.txt" ;;
  *) die "STACK must be upstream or onedl, got '$STACK'" ;;
esac
if [ "$PROFILE" = full ]; then EXTRAS="${EXTRAS:-$FULL_EXTRAS}"; CHECK="mmcv.ops, mmdet.models, mmseg.models"
else EXTRAS="${EXTRAS:-rl,eval}"; CHECK="mmcv"; fi

stamp_of() {  # stamp_of PROFILE EXTRAS
  cat "$ROOT/requirements.txt" "$ROOT"/requirements/*.txt "$ROOT/setup.py" \
    "$ROOT/tools/install.sh" | sha256sum | cut -d' ' -f1
  echo "stack=$STACK profile=$1 extras=$2"
}

up_to_date() {
  [ -x "$VENV/bin/python" ] && [ -f "$VENV/.mixplugins-stamp" ] || return 1
  local have; have="$(cat "$VENV/.mixplugins-stamp")"
  # the full stack (default extras) covers the classification profile
  [ "$have" = "$(stamp_of "$PROFILE" "$EXTRAS")" ] \
    || { [ "$PROFILE" = classification ] && [ "$have" = "$(stamp_of full "$FULL_EXTRAS")" ]; } \
    || return 1
  "$VENV/bin/python" -W ignore -c "import mixplugins, mmpretrain.models, $CHECK" 2>/dev/null
}

if up_to_date; then
  log "environment at $VENV is up to date ($STACK stack, $PROFILE)"
  exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
installed() { "$VENV/bin/python" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$1" 2>/dev/null; }

if [ "$PROFILE" = classification ] && installed "$MMCV_DIST"; then
  # a full mmcv is already there: mmcv-lite would overwrite it; keep the full stack
  log "$VENV has the full $MMCV_DIST: installing the full profile instead"
  PROFILE=full EXTRAS="$FULL_EXTRAS" REQ="$ROOT/requirements.txt" CHECK="mmcv.ops, mmdet.models, mmseg.models"
fi

# mmcv's and mmengine's setup/import code still uses pkg_resources
"${PIP[@]}" install -q --upgrade "setuptools<82" wheel
log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION, $MMENGINE"
"${PIP[@]}" install -q "setuptools<82" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "$MMENGINE" ninja

if [ "$PROFILE" = full ]; then
  pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  torchver=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')
  WHEELDIR="$CACHE/$MMCV_DIST-$MMCV_VERSION-torch$torchver-$pyver-$(uname -m)"
  if installed mmcv-lite; then
    # mmcv-lite (classification profile) and mmcv own the same `mmcv` package
    log "replacing mmcv-lite by $MMCV_DIST $MMCV_VERSION with ops"
    "${PIP[@]}" uninstall -q -y mmcv-lite
  fi
  if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    if ! ls "$WHEELDIR"/*.whl >/dev/null 2>&1; then
      log "building $MMCV_DIST $MMCV_VERSION with ops (CPU; mmcv ~11-13 min, onedl-mmcv ~22 min on 2 cores), cached in $WHEELDIR"
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: \
        "$MMCV_DIST==$MMCV_VERSION" -d "$tmp"
      tar -xzf "$tmp"/*.tar.gz -C "$tmp"
      src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
      # torch>=2.13 headers require C++20
      sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/setup.py"
      mkdir -p "$WHEELDIR"
      (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$WHEELDIR.partial")
      mv "$WHEELDIR.partial"/*.whl "$WHEELDIR"/ && rmdir "$WHEELDIR.partial"
    fi
    log "installing $MMCV_DIST from $WHEELDIR"
    "${PIP[@]}" install -q "$WHEELDIR"/*.whl
  fi
fi

log "$(basename "$REQ") and mixplugins[$EXTRAS]"
"${PIP[@]}" install -q -r "$REQ"
"${PIP[@]}" install -q -e "$ROOT[$EXTRAS]"
# an upstream distribution and its fork must never share a venv
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
import sys
groups = [('mmcv', 'mmcv-lite', 'onedl-mmcv'), ('mmengine', 'onedl-mmengine'),
          ('mmpretrain', 'onedl-mmpretrain'), ('mmdet', 'onedl-mmdetection'),
          ('mmsegmentation', 'onedl-mmsegmentation')]
names = {d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()}
clash = [g for g in groups if len(names.intersection(g)) > 1]
if clash:
    sys.exit(f'[install] error: distributions owning the same import name: {clash}')
EOF
"$VENV/bin/python" -W ignore -c "import pkg_resources, mmpretrain.models, mixplugins, $CHECK"
stamp_of "$PROFILE" "$EXTRAS" > "$VENV/.mixplugins-stamp"
log "done in $(( $(date +%s) - start )) s ($STACK stack, $PROFILE)"
