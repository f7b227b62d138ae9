#!/usr/bin/env bash
# Build or install the testbed's infrastructure binaries into a cache outside the repo,
# keyed by version, and reuse them when present.
#   usage: binaries.sh [all|etcd|kubernetes|livekit|helm|prometheus]...
# Cache: ${VOICEFLEET_CACHE:-~/.cache/voicefleet}/bin/<name>-<version>/
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"
cache=${VOICEFLEET_CACHE:-$HOME/.cache/voicefleet}
bin="$cache/bin"
work="$cache/build"
mkdir -p "$bin" "$work"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
  printf '\nERROR: step "%s" failed.\n  log: %s\n  retry: %s\n' "$1" "$2" "make binaries (or bash testbed/build/binaries.sh $3)" >&2
  exit 1
}
# Runs a build command, streaming a line of progress every 30 s and the log tail on error.
run_logged() {
  local name=$1 log=$2; shift 2
  ( "$@" ) >"$log" 2>&1 &
  local pid=$! t=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5; t=$((t + 5))
    if (( t % 30 == 0 )); then
      printf '    ... %s: %ds, %s\n' "$name" "$t" "$(tail -n 1 "$log" | cut -c1-100)"
    fi
  done
  if ! wait "$pid"; then tail -n 30 "$log" >&2; return 1; fi
}
need_go() {
  command -v go >/dev/null || { echo "ERROR: go toolchain not found (need Go 1.26+: apt-get install golang or see docs/testbed.md)" >&2; exit 1; }
}

build_etcd() {
  local dest="$bin/etcd-$ETCD_VERSION"
  [[ -x $dest/etcd ]] && { echo "etcd $ETCD_VERSION: cached at $dest"; return; }
  need_go
  step "building etcd v$ETCD_VERSION (Go, ~2 min cold)"
  local w="$work/etcd-$ETCD_VERSION"; rm -rf "$w"; mkdir -p "$w"
  (cd "$w" && go mod init local/etcdbuild >/dev/null 2>&1)
  run_logged etcd "$w/build.log" bash -c "cd '$w' && go get go.etcd.io/etcd/server/v3@v$ETCD_VERSION && go build -trimpath -o '$w/out/etcd' go.etcd.io/etcd/server/v3" \
    || fail "build etcd" "$w/build.log" etcd
  mkdir -p "$dest"; mv "$w/out/etcd" "$dest/etcd"
  echo "etcd $ETCD_VERSION: built into $dest"
}

# kube-apiserver and kube-controller-manager from k8s.io/kubernetes through a wrapper
# module: its go.mod points the staging modules at ./staging, which a dependency cannot
# use, so the wrapper replaces each with the published v0.x release.
K8S_STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"
build_kubernetes() {
  local v=$KUBERNETES_VERSION dest="$bin/kubernetes-$KUBERNETES_VERSION"
  if [[ -x $dest/kube-apiserver && -x $dest/kube-controller-manager && -x $dest/kubectl ]]; then
    echo "kubernetes $v: cached at $dest"; return
  fi
  need_go
  step "building kube-apiserver, kube-controller-manager, kubectl v$v (Go, 15-25 min cold on 2 cores)"
  local w="$work/kubernetes-$v" minor="0.${v#1.}"
  mkdir -p "$w/out"
  {
    echo "module local/k8sbuild"; echo; echo "go 1.26"; echo
    echo "require k8s.io/kubernetes v$v"; echo; echo "replace ("
    for m in $K8S_STAGING; do echo "	k8s.io/$m => k8s.io/$m v$minor"; done
    echo ")"
  } >"$w/go.mod"
  cat >"$w/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=v$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${v#1.}"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=v$v"
  run_logged "go mod tidy" "$w/tidy.log" bash -c "cd '$w' && go mod tidy" || fail "resolve kubernetes modules" "$w/tidy.log" kubernetes
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    [[ -x $w/out/$cmd ]] && continue
    step "go build $cmd"
    run_logged "$cmd" "$w/$cmd.log" bash -c "cd '$w' && go build -trimpath -ldflags '$ld' -o out/$cmd.tmp k8s.io/kubernetes/cmd/$cmd && mv out/$cmd.tmp out/$cmd" \
      || fail "build $cmd" "$w/$cmd.log" kubernetes
  done
  mkdir -p "$dest"; cp "$w"/out/kube-apiserver "$w"/out/kube-controller-manager "$w"/out/kubectl "$dest/"
  echo "kubernetes $v: built into $dest"
}

build_livekit() {
  local dest="$bin/livekit-$LIVEKIT_VERSION"
  [[ -x $dest/livekit-server ]] && { echo "livekit-server $LIVEKIT_VERSION: cached at $dest"; return; }
  need_go
  step "building livekit-server v$LIVEKIT_VERSION (Go, ~5 min cold)"
  local w="$work/livekit-$LIVEKIT_VERSION"; mkdir -p "$w"
  run_logged livekit "$w/build.log" env GOBIN="$w/out" go install -trimpath -ldflags "-s -w" "github.com/livekit/livekit-server/cmd/server@v$LIVEKIT_VERSION" \
    || fail "build livekit-server" "$w/build.log" livekit
  mkdir -p "$dest"; mv "$w/out/server" "$dest/livekit-server"
  echo "livekit-server $LIVEKIT_VERSION: built into $dest"
}

build_helm() {
  local dest="$bin/helm-$HELM_VERSION"
  [[ -x $dest/helm ]] && { echo "helm $HELM_VERSION: cached at $dest"; return; }
  need_go
  step "building helm v$HELM_VERSION (Go, ~3 min cold)"
  local w="$work/helm-$HELM_VERSION"; mkdir -p "$w"
  run_logged helm "$w/build.log" env GOBIN="$w/out" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION" \
    || fail "build helm" "$w/build.log" helm
  mkdir -p "$dest"; mv "$w/out/helm" "$dest/helm"
  echo "helm $HELM_VERSION: built into $dest"
}

# Debian's prometheus package brings prometheus and promtool.
install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "prometheus: $(command -v prometheus)"; return
  fi
  step "installing Debian's prometheus (apt-get)"
  if [[ $(id -u) -ne 0 ]]; then echo "ERROR: need root for apt-get install prometheus" >&2; exit 1; fi
  local log="$work/apt-prometheus.log"
  run_logged apt "$log" bash -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus" \
    || fail "apt-get install prometheus" "$log" prometheus
  # The package starts a system service; the testbed runs its own Prometheus instead.
  (systemctl stop prometheus prometheus-node-exporter 2>/dev/null; pkill -x prometheus-node-exporter 2>/dev/null; pkill -x prometheus 2>/dev/null) || true
  echo "prometheus: installed $(command -v prometheus)"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(all)
for t in "${targets[@]}"; do
  case $t in
    all) build_etcd; build_livekit; build_kubernetes; build_helm; install_prometheus ;;
    etcd) build_etcd ;;
    kubernetes) build_kubernetes ;;
    livekit) build_livekit ;;
    helm) build_helm ;;
    prometheus) install_prometheus ;;
    *) echo "unknown target: $t (all|etcd|kubernetes|livekit|helm|prometheus)" >&2; exit 2 ;;
  esac
done
echo "binaries ready under $bin"
