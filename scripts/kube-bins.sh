#!/usr/bin/env bash
# Build the real Kubernetes control-plane binaries the tests run (tests/realkube.py): kube-apiserver
# and kubectl of one pinned Kubernetes release, and etcd, from their Go modules through the Go module
# proxy. No Go code of theirs is kept in this repository: each build happens in a throw-away module
# in a temp dir, and the binaries are cached outside the clone, keyed by version:
#   ${VIGIL_KUBE_CACHE:-$HOME/.cache/vigil/kube}/kubernetes-<version>/{kube-apiserver,kubectl}
#   ${VIGIL_KUBE_CACHE:-$HOME/.cache/vigil/kube}/etcd-<version>/etcd
# A build whose binaries are present is skipped. Prints the directories on stdout when done:
#   KUBE_BIN_DIR=...
#   ETCD_BIN_DIR=...
# Progress and build times go to stderr. GOCACHE/GOMODCACHE stay at Go's defaults (outside the clone),
# so a second build after a version bump reuses the downloaded modules.
#
# Why a temp module: k8s.io/kubernetes is not meant to be required as a module: its go.mod points
# every k8s.io/<staging> module at ./staging/src/..., which a requirer does not get. Replacing each of
# those with its published v0.<minor>.<patch> tag (the same code, published from staging) makes
# `go build k8s.io/kubernetes/cmd/kube-apiserver` work from a plain module.
set -euo pipefail

KUBE_VERSION="${VIGIL_KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${VIGIL_ETCD_VERSION:-v3.6.16}"
cache="${VIGIL_KUBE_CACHE:-$HOME/.cache/vigil/kube}"
kube_dir="$cache/kubernetes-$KUBE_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"

say() { printf 'kube-bins: %s\n' "$*" >&2; }

go_bin="${GO:-}"
if [ -z "$go_bin" ]; then
  if command -v go >/dev/null 2>&1; then go_bin=$(command -v go)
  elif [ -x /usr/local/go/bin/go ]; then go_bin=/usr/local/go/bin/go
  fi
fi

need_go() {
  if [ -z "$go_bin" ]; then
    say "Go is needed to build $1 (none on PATH nor at /usr/local/go/bin/go); install Go >= 1.25"
    exit 1
  fi
}

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
# Several builds at once on a small machine: be nice to the others.
nice_cmd=(nice -n "${VIGIL_KUBE_NICE:-10}")

work=$(mktemp -d "${TMPDIR:-/tmp}/vigil-kube-bins.XXXXXX")
trap 'rm -rf "$work"' EXIT

build_kube() {
  if [ -x "$kube_dir/kube-apiserver" ] && [ -x "$kube_dir/kubectl" ]; then
    say "kube-apiserver and kubectl $KUBE_VERSION present in $kube_dir"
    return
  fi
  need_go "kube-apiserver $KUBE_VERSION"
  local start mod staging version minor patch m
  start=$(date +%s)
  # v1.37.2 -> the staging modules are published as v0.37.2
  version="${KUBE_VERSION#v}"
  minor=$(echo "$version" | cut -d. -f2)
  patch=$(echo "$version" | cut -d. -f3)
  staging="v0.$minor.$patch"
  mod="$work/kube"
  mkdir -p "$mod"
  say "kubernetes $KUBE_VERSION: reading its go.mod (staging modules pinned to $staging)"
  local gomod
  gomod=$(cd "$mod" && "$go_bin" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  if [ ! -f "$gomod" ]; then
    say "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
    exit 1
  fi
  # Every `k8s.io/x => ./staging/src/k8s.io/x` line of theirs becomes `k8s.io/x => k8s.io/x v0.Y.Z`.
  local replaces
  replaces=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod" | sort -u)
  if [ -z "$replaces" ]; then
    say "no staging replace lines found in $gomod: the go.mod layout changed"
    exit 1
  fi
  {
    echo "module vigil.dev/kube-bins"
    echo
    # their go.mod line decides the language version (and the godebug defaults) of the build
    grep -m1 '^go ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    for m in $replaces; do echo "	$m => $m $staging"; done
    echo ")"
  } > "$mod/go.mod"
  say "kubernetes $KUBE_VERSION: $(echo "$replaces" | wc -l) staging modules replaced; building kube-apiserver and kubectl (several minutes on 2 cores)"
  # A blank-import file pins the main packages so `go mod tidy` keeps their dependencies.
  cat > "$mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  (cd "$mod" && "${nice_cmd[@]}" "$go_bin" mod tidy >&2)
  local ldflags
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean"
  done
  mkdir -p "$mod/out"
  (cd "$mod" && "${nice_cmd[@]}" "$go_bin" build -trimpath -ldflags "$ldflags" -o "$mod/out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl >&2)
  mkdir -p "$kube_dir"
  # copy then rename: a concurrent reader never sees half a binary
  for b in kube-apiserver kubectl; do
    cp "$mod/out/$b" "$kube_dir/.$b.tmp" && mv "$kube_dir/.$b.tmp" "$kube_dir/$b"
  done
  say "kubernetes $KUBE_VERSION built in $(( $(date +%s) - start ))s -> $kube_dir"
}

build_etcd() {
  if [ -x "$etcd_dir/etcd" ]; then
    say "etcd $ETCD_VERSION present in $etcd_dir"
    return
  fi
  need_go "etcd $ETCD_VERSION"
  local start mod
  start=$(date +%s)
  mod="$work/etcd"
  mkdir -p "$mod/out"
  say "etcd $ETCD_VERSION: building go.etcd.io/etcd/server/v3 (its main package)"
  cat > "$mod/go.mod" <<EOF
module vigil.dev/etcd-bin

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat > "$mod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  (cd "$mod" && "${nice_cmd[@]}" "$go_bin" mod tidy >&2)
  (cd "$mod" && "${nice_cmd[@]}" "$go_bin" build -trimpath -ldflags "-s -w" -o "$mod/out/etcd" \
    go.etcd.io/etcd/server/v3 >&2)
  mkdir -p "$etcd_dir"
  cp "$mod/out/etcd" "$etcd_dir/.etcd.tmp" && mv "$etcd_dir/.etcd.tmp" "$etcd_dir/etcd"
  say "etcd $ETCD_VERSION built in $(( $(date +%s) - start ))s -> $etcd_dir"
}

total_start=$(date +%s)
build_etcd
build_kube
say "done in $(( $(date +%s) - total_start ))s"
echo "KUBE_BIN_DIR=$kube_dir"
echo "ETCD_BIN_DIR=$etcd_dir"
