#!/usr/bin/env bash
# Build trainer/Dockerfile with buildah and run the image, as its user with a read-only
# root, on a machine without Docker (`make image-smoke`; docs/testing.md "The image in
# CI" says what this proves and what it does not).
#
# - Base: a stand-in for python:3.11-slim made from Debian packages (debootstrap +
#   python3.11, its headers and pip, the host's CA bundle): the registry may be unreachable.
# - Python packages: the lock's own files (requirements-image.lock, hashes checked by pip),
#   downloaded once into a wheelhouse and served to the build as a file:// index, so a warm
#   build needs no network. torch is the lock's (PyPI's CUDA build): PyTorch's CPU index may
#   be unreachable too.
# - Caches (base root filesystem, wheelhouse, buildah's vfs storage) live in
#   $TRAINSTACK_IMAGE_CACHE (default ~/.cache/trainstack/image), outside the repository.
#   An image whose inputs did not change is reused; SMOKE_REBUILD=1 builds anyway.
# Everything the image serves listens on 127.0.0.1 only. Needs root (debootstrap, mounts).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$REPO/tools/image"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CACHE=${TRAINSTACK_IMAGE_CACHE:-$HOME/.cache/trainstack/image}
LOCK="$REPO/requirements-image.lock"
BASE_TAR="$CACHE/base-bookworm-python3.11.tar"
BASE_IMAGE=localhost/trainstack-standin-python:3.11-bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PORT=${SMOKE_PORT:-7869}
BUILDAH=(buildah --root "$CACHE/storage" --runroot "${TMPDIR:-/tmp}/trainstack-image-run"
         --storage-driver vfs)
START=$SECONDS

log() { echo "image-smoke: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# A root filesystem like python:3.11-slim's, from Debian's packages: `python` and `pip` on
# PATH, pip allowed to install into the system (PEP 668's marker removed), CA bundle of
# the host (a proxy's CA, if any, keeps working).
make_base_tar() {
  local rootfs="$CACHE/base-rootfs.tmp"
  rm -rf "$rootfs"
  log "debootstrap bookworm + python3.11 (once; cached in $BASE_TAR)"
  debootstrap --variant=minbase --include=python3.11,python3.11-dev,python3-pip \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap (log: $CACHE/debootstrap.log)"
  ln -sf python3 "$rootfs/usr/bin/python"
  ln -sf pip3 "$rootfs/usr/bin/pip"
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$rootfs"
}

ensure_base_image() {
  "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 && return
  [ -f "$BASE_TAR" ] || make_base_tar
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$BASE_TAR" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

# The lock's files, checked against its hashes by pip, as a PEP 503 index of file:// pages.
ensure_wheelhouse() {
  local stamp="$CACHE/wheels/.lock-sha256" want
  want=$(sha256sum "$LOCK" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "downloading the lock's wheels into $CACHE/wheels"
    mkdir -p "$CACHE/wheels"
    "$PYTHON" -m pip download --quiet --no-deps --require-hashes --only-binary :all: \
      --python-version 3.11 -r "$LOCK" -d "$CACHE/wheels"
    echo "$want" >"$stamp"
  fi
  rm -rf "$CACHE/index" && mkdir -p "$CACHE/index/simple"
  local wheel name
  for wheel in "$CACHE"/wheels/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    mkdir -p "$CACHE/index/simple/$name"
    ln -f "$wheel" "$CACHE/index/simple/$name/"
  done
  local project
  for project in "$CACHE"/index/simple/*/; do
    for wheel in "$project"*.whl; do
      printf '<a href="%s">%s</a>\n' "$(basename "$wheel")" "$(basename "$wheel")"
    done >"$project/index.html"
  done
}

# A name that changes with every build input (and the base), so unchanged inputs reuse it.
image_name() {
  local sum
  sum=$( (cd "$REPO" && cat trainer/Dockerfile .dockerignore requirements-image.lock \
            tools/lock/torch_split.py && find trainer inference -type f ! -path '*/__pycache__/*' -print0 \
            | sort -z | xargs -0 cat; cat "$BASE_TAR") | sha256sum | cut -c1-12)
  echo "localhost/trainstack-trainer:smoke-$sum"
}

build_image() {
  local image=$1 t0=$SECONDS
  if [ -z "${SMOKE_REBUILD:-}" ] && "${BUILDAH[@]}" inspect --type image "$image" >/dev/null 2>&1; then
    log "inputs unchanged: reusing $image (SMOKE_REBUILD=1 to build anyway)"
    return
  fi
  # Older smoke images only take space (vfs keeps full copies).
  "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/trainstack-trainer:' \
    | xargs -r "${BUILDAH[@]}" rmi --force >/dev/null 2>&1 || true
  log "building $image"
  nice -n 10 "${BUILDAH[@]}" bud --isolation chroot --format docker --quiet \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL= \
    --build-arg PIP_INDEX_URL=file:///wheelhouse/simple \
    --volume "$CACHE/index:/wheelhouse:ro" \
    -f "$REPO/trainer/Dockerfile" -t "$image" "$REPO" >"$CACHE/build.log" 2>&1 \
    || { tail -30 "$CACHE/build.log" >&2; die "buildah bud (log: $CACHE/build.log)"; }
  log "built in $((SECONDS - t0)) s"
}

main() {
  [ "$(id -u)" = 0 ] || die "needs root (debootstrap, buildah's vfs storage, mounts)"
  mkdir -p "$CACHE"
  ensure_base_image
  ensure_wheelhouse
  local image
  image=$(image_name)
  build_image "$image"
  log "image size: $("${BUILDAH[@]}" images --noheading --format '{{.Size}}' "$image")" \
      "(stand-in base + PyPI's CUDA torch)"
  CTR=$("${BUILDAH[@]}" from --quiet "$image")
  trap '"${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true' EXIT
  PORT=$PORT LOCK=$LOCK PYTHON=$PYTHON "$HERE/run_checks.sh" "${BUILDAH[@]}" -- "$CTR"
  log "passed in $((SECONDS - START)) s"
}

main "$@"
