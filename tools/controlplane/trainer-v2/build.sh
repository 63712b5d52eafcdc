#!/usr/bin/env bash
# Builds the Kubeflow Trainer v2 controller manager and the JobSet controller from their
# pinned Go modules (Go module proxy), cached outside the repo and reused:
#   $TRAINSTACK_CACHE/controlplane/trainer-<version>/bin/trainer-controller-manager
#   $TRAINSTACK_CACHE/controlplane/jobset-<version>/bin/jobset-controller
# (TRAINSTACK_CACHE defaults to ~/.cache/trainstack), each with a link to its module's
# manifests (CRDs, webhook configurations). The versions are infra/operators/trainer_v2.py's.
# Nothing here listens or dials beyond the module proxy.
set -euo pipefail
TRAINER_VERSION=${TRAINER_VERSION:-v2.3.0}
JOBSET_VERSION=${JOBSET_VERSION:-v0.12.0}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$GO" ]; then
  echo "go is missing: install Go >= 1.26 (https://go.dev/dl/) to build the Trainer v2" \
       "and JobSet controllers for the cluster tests" >&2
  exit 2
fi
CACHE=${TRAINSTACK_CACHE:-$HOME/.cache/trainstack}/controlplane
MODCACHE=$("$GO" env GOMODCACHE)
# Built inside the module's own source tree (its go.mod and go.sum, as released): `go
# install mod@version` also asks the proxy for the module's version list, which it
# refuses for sigs.k8s.io/jobset (403), and a wrapper module could resolve other versions.
build() {  # $1 component, $2 module, $3 version, $4 package dir, $5 binary, $6 manifests dir
  local dest="$CACHE/$1-$3" out="$CACHE/$1-$3/bin/$5"
  mkdir -p "$dest/bin"
  if ! [ -x "$out" ]; then
    local start=$SECONDS
    (cd "$dest" && "$GO" mod download "$2@$3")
    (cd "$MODCACHE/$2@$3" && nice -n 10 "$GO" build -trimpath -o "$out.tmp" "./$4")
    mv "$out.tmp" "$out"
    echo "built $1 $3 in $((SECONDS - start)) s" >&2
  fi
  (cd "$dest" && "$GO" mod download "$2@$3")  # the manifests, if the module cache was cleaned
  ln -sfn "$MODCACHE/$2@$3/$6" "$dest/manifests"
}
build trainer github.com/kubeflow/trainer/v2 "$TRAINER_VERSION" cmd/trainer-controller-manager \
  trainer-controller-manager manifests
build jobset sigs.k8s.io/jobset "$JOBSET_VERSION" . jobset-controller config
