#!/usr/bin/env bash
# Builds the Kubeflow Trainer v2 controller manager and the JobSet controller from
# their pinned Go modules (Go module proxy), cached outside the repo and reused.
# Prints the cache folder on its last line. Nothing here listens or dials.
set -euo pipefail
TRAINER_VERSION=${TRAINER_VERSION:-v2.3.0}
JOBSET_VERSION=${JOBSET_VERSION:-v0.12.0}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$GO" ]; then
  echo "go is missing: install Go >= 1.26 (https://go.dev/dl/) to build the Trainer v2 control plane" >&2
  exit 2
fi
CACHE=${TRAINSTACK_CONTROLPLANE_CACHE:-$HOME/.cache/trainstack/controlplane}
DEST="$CACHE/trainer-$TRAINER_VERSION-jobset-$JOBSET_VERSION"
mkdir -p "$DEST/bin"
build() {  # $1 module@version path, $2 output binary name
  local out="$DEST/bin/$2"
  if [ -x "$out" ]; then return; fi
  local start=$SECONDS
  GOBIN="$DEST/bin.tmp" nice -n 10 "$GO" install -trimpath "$1"
  mv "$DEST/bin.tmp/$(basename "${1%@*}")" "$out"
  echo "built $2 in $((SECONDS - start)) s" >&2
}
build "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager@$TRAINER_VERSION" trainer-controller-manager
build "sigs.k8s.io/jobset@$JOBSET_VERSION" jobset-controller
# CRDs and webhook configurations come from the same pinned modules.
MODDIR=$("$GO" env GOMODCACHE)
for mod in "github.com/kubeflow/trainer/v2@$TRAINER_VERSION" "sigs.k8s.io/jobset@$JOBSET_VERSION"; do
  (cd "$DEST" && GOFLAGS=-mod=mod "$GO" mod download "$mod" >/dev/null 2>&1 || true)
done
ln -sfn "$MODDIR/github.com/kubeflow/trainer/v2@$TRAINER_VERSION/manifests" "$DEST/trainer-manifests"
ln -sfn "$MODDIR/sigs.k8s.io/jobset@$JOBSET_VERSION/config" "$DEST/jobset-config"
echo "$DEST"
