#!/usr/bin/env bash
# Run a built image's commands the way a pod does: as the image's USER, in its WORKDIR, with
# its ENV, a read-only root filesystem and a tmpfs /tmp. `podman run` cannot start
# containers in every sandbox (crun's setrlimit), so: a private mount namespace (unshare)
# over the container's root filesystem (buildah mount), and chroot --userspec.
# Usage: run_checks.sh BUILDAH-COMMAND... -- CONTAINER   (env: PORT, LOCK, PYTHON)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BUILDAH=()
while [ "$1" != "--" ]; do BUILDAH+=("$1"); shift; done
CTR=$2
log() { echo "image-smoke: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

ROOT=$("${BUILDAH[@]}" mount "$CTR")
config() { "${BUILDAH[@]}" inspect --type container --format "{{$1}}" "$CTR"; }
USER_SPEC=$(config .OCIv1.Config.User)
WORKDIR=$(config .OCIv1.Config.WorkingDir)
mapfile -t IMAGE_ENV < <(config 'range .OCIv1.Config.Env}}{{println .}}{{end' | grep .)
CMD=$(config .OCIv1.Config.Cmd)  # [python -m inference serve ...]: no argument has a space
[ "$USER_SPEC" = 10001:10001 ] || die "image USER is '$USER_SPEC', expected 10001:10001"

# One session: its own tmpfs /tmp (a pod's emptyDir), so commands that share files (the
# store under /tmp) run in the same one.
inside() {
  unshare --mount --propagation private --fork -- bash -euc '
    root=$1 user=$2 workdir=$3; shift 3
    mount --bind "$root" "$root" && mount -o remount,bind,ro "$root"
    mount -t tmpfs -o mode=1777,size=2g tmpfs "$root/tmp"
    mount -t proc proc "$root/proc" 2>/dev/null || mount --rbind /proc "$root/proc"
    mount --rbind /dev "$root/dev"
    exec chroot --userspec="$user" --groups="${user#*:}" "$root" \
      /usr/bin/env -i "$@"
  ' _ "$ROOT" "$USER_SPEC" "$WORKDIR" "${IMAGE_ENV[@]}" /bin/bash -euc "cd $WORKDIR && $1"
}

who=$(inside 'echo "$(id -u):$(id -g) $(touch /app/probe 2>/dev/null && echo writable || echo read-only)"')
[ "$who" = "10001:10001 read-only" ] || die "expected uid:gid 10001:10001 on a read-only root, got '$who'"
log "runs as $who root filesystem, in $WORKDIR"

inside 'python -m trainer --help && python -m inference --help && python -m inference serve --help' \
  >/dev/null || die "a CLI's --help"
log "both CLIs answer --help"

PIP_LIST=$(mktemp)
inside 'python -m pip list --format=json 2>/dev/null' >"$PIP_LIST" || die "pip list"
"$PYTHON" -m tools.image.check_installed "$LOCK" "$PIP_LIST" "$ROOT" \
  || die "installed distributions differ from the lock"
rm -f "$PIP_LIST"

# The default command, moved to 127.0.0.1 and the smoke port: nothing listens beyond it.
SERVE=$(echo "$CMD" | tr -d '[]' | sed -e "s/ 0\.0\.0\.0 / 127.0.0.1 /" -e "s/ 7860\$/ $PORT/")
case $SERVE in *" 127.0.0.1 "*" $PORT") ;; *) die "unexpected default command: $CMD" ;; esac
SESSION_LOG=$(mktemp)
trap 'kill -- -"$SESSION" 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$SESSION_LOG"' EXIT
setsid bash -c "$(declare -f inside); $(declare -p ROOT USER_SPEC WORKDIR IMAGE_ENV); inside \
  'python -m trainer buckets && python -m trainer train --dataset digits --model smallcnn --epochs 2 \
   && exec $SERVE'" >"$SESSION_LOG" 2>&1 &
SESSION=$!

for _ in $(seq 600); do
  ready=$(curl -s "http://127.0.0.1:$PORT/readyz" || true)
  case $ready in *'"ready"'*) break ;; esac
  kill -0 "$SESSION" 2>/dev/null || { tail -30 "$SESSION_LOG" >&2; die "the session ended"; }
  sleep 1
done
case $ready in *'"ready"'*) ;; *) tail -30 "$SESSION_LOG" >&2; die "/readyz: $ready" ;; esac
grep -q '"event": "published"' "$SESSION_LOG" || { tail -30 "$SESSION_LOG" >&2; die "nothing published"; }
log "buckets + digits training published; the default command serves it: /readyz $ready"
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || die "/healthz"
PNG=$(mktemp --suffix .png)
"$PYTHON" -c 'import sys; from PIL import Image; Image.new("L", (8, 8), 255).save(sys.argv[1])' \
  "$PNG"
answer=$(curl -sf -F "file=@$PNG;type=image/png" "http://127.0.0.1:$PORT/predict") \
  || die "/predict"
rm -f "$PNG"
summary=$(echo "$answer" | "$PYTHON" -c 'import json, sys
answer = json.load(sys.stdin)
print("class %(prediction)s (%(confidence).2f) by %(model_version)s" % answer)') \
  || die "/predict: $answer"
log "/predict: $summary"
