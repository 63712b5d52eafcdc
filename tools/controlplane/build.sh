#!/usr/bin/env bash
# Build (or reuse) every component in components.txt; print how long setup took.
#   tools/controlplane/build.sh            all components
#   tools/controlplane/build.sh kwok etcd  just these
# To add a component: a line in components.txt (and, for `wrapper`, a folder here with
# its go.mod); tests/cluster/components.py then finds its binaries by name.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TRAINSTACK_CACHE:-$HOME/.cache/trainstack}/controlplane"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if ! [ -x "$GO" ] && ! command -v "$GO" >/dev/null; then
  echo "build.sh: Go is needed to build the test control plane (kube-apiserver, etcd," \
       "kwok, the Training Operator). Install Go >= 1.24 (https://go.dev/dl/) and put" \
       "\`go\` on PATH, or run make with GO=/path/to/go." >&2
  exit 2
fi
# Kubernetes' own builds stamp the version this way (hack/lib/version.sh).
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/client-go/pkg/version.gitVersion=%s"

build_wrapper() {  # name version dest packages...
  local name=$1 version=$2 dest=$3; shift 3
  local module_dir="$HERE/$name"
  grep -q " $version\$\|=> .* $version\$\| $version " "$module_dir/go.mod" || {
    echo "build.sh: $module_dir/go.mod does not pin $version (components.txt)" >&2; exit 1; }
  local ldflags=""
  if [ "$name" = kube ]; then
    local minor=${version#v1.}; minor=${minor%%.*}
    # shellcheck disable=SC2059
    ldflags=$(printf -- "$KUBE_LDFLAGS" "$version" 1 "$minor" "$version")
  fi
  for pkg in "$@"; do
    local out="$dest/$(basename "$pkg")"
    [ "$pkg" = . ] && out="$dest/$name"
    (cd "$module_dir" && nice -n 10 "$GO" build -ldflags "$ldflags" -o "$out" "$pkg")
  done
}

build_install() {  # version dest package
  GOBIN="$2" nice -n 10 "$GO" install "$3@$1"
}

copy_manifests() {  # version dest module:folder
  local module=${3%%:*} folder=${3#*:}
  local src; src=$(cd "$HERE" && "$GO" mod download -json "$module@$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  local into; into="$2/$(basename "$folder")"
  rm -rf "$into" && cp -r "$src/$folder" "$into" && chmod -R u+w "$into"
}

start=$(date +%s)
built=()
while read -r name version how what; do
  case "$name" in ''|'#'*) continue;; esac
  if [ $# -gt 0 ] && ! [[ " $* " == *" $name "* ]]; then continue; fi
  root="$CACHE/$name-$version"
  stamp="$root/.complete-$how"
  [ -f "$stamp" ] && continue
  mkdir -p "$root/bin"
  echo "build.sh: building $name $version ($how) into $root" >&2
  case "$how" in
    wrapper) read -ra pkgs <<<"$what"; build_wrapper "$name" "$version" "$root/bin" "${pkgs[@]}";;
    install) build_install "$version" "$root/bin" "$what";;
    manifests) copy_manifests "$version" "$root" "$what";;
    *) echo "build.sh: unknown how '$how' for $name" >&2; exit 1;;
  esac
  touch "$stamp"
  built+=("$name-$version/$how")
done <"$HERE/components.txt"
elapsed=$(( $(date +%s) - start ))
if [ ${#built[@]} -eq 0 ]; then
  echo "control plane: all components cached in $CACHE (setup ${elapsed}s)"
else
  echo "control plane: built ${built[*]} in ${elapsed}s (cache: $CACHE)"
fi
