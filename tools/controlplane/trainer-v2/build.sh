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
MODCACHE=$("$GO" env GOMODCACHE)
# Built inside the module's own source tree (its go.mod and go.sum, as released): `go
# install mod@version` also asks the proxy for the module's version list, which it may
# refuse (403 for sigs.k8s.io/jobset), and a wrapper module could resolve other versions.
build() {  # $1 module, $2 version, $3 package dir in the module, $4 output binary name
  local out="$DEST/bin/$4"
  if [ -x "$out" ]; then return; fi
  local start=$SECONDS
  (cd "$DEST" && "$GO" mod download "$1@$2")
  (cd "$MODCACHE/$1@$2" && nice -n 10 "$GO" build -trimpath -o "$out.tmp" "./$3")
  mv "$out.tmp" "$out"
  echo "built $4 in $((SECONDS - start)) s" >&2
}
build github.com/kubeflow/trainer/v2 "$TRAINER_VERSION" cmd/trainer-controller-manager \
  trainer-controller-manager
build sigs.k8s.io/jobset "$JOBSET_VERSION" . jobset-controller
# CRDs and webhook configurations come from the same pinned modules.
ln -sfn "$MODCACHE/github.com/kubeflow/trainer/v2@$TRAINER_VERSION/manifests" \
  "$DEST/trainer-manifests"
ln -sfn "$MODCACHE/sigs.k8s.io/jobset@$JOBSET_VERSION/config" "$DEST/jobset-config"
echo "$DEST"
