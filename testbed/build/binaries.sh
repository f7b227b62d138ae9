#!/usr/bin/env bash
# Build or install the testbed's infrastructure binaries into a cache outside the repo,
# keyed by version, and reuse them when present.
#   usage: binaries.sh [all|etcd|kubernetes|kubernetes-node|containerd|coredns|crictl|pause|node-packages|browser-packages|livekit|helm|prometheus|redis|keda|keda-crds]...
# (keda is not in all, keda-crds is: KEDA is built on demand by the stacks that run it)
# Cache: ${VOICEFLEET_CACHE:-~/.cache/voicefleet}/bin/<name>-<version>/
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"
cache=${VOICEFLEET_CACHE:-$HOME/.cache/voicefleet}
bin="$cache/bin"
# The sandbox image the real node pins (built by build_pause, imported by the stack).
PAUSE_IMAGE="voicefleet.dev/testbed/pause:$PAUSE_VERSION"
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
# The wrapper module in $1 with the given k8s.io/kubernetes commands in its tools.go.
k8s_wrapper() {
  local w=$1 v=$KUBERNETES_VERSION minor="0.${KUBERNETES_VERSION#1.}"; shift
  mkdir -p "$w/out"
  {
    echo "module local/k8sbuild"; echo; echo "go 1.26"; echo
    echo "require k8s.io/kubernetes v$v"; echo; echo "replace ("
    for m in $K8S_STAGING; do echo "	k8s.io/$m => k8s.io/$m v$minor"; done
    echo ")"
  } >"$w/go.mod.new"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for cmd in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'
  } >"$w/tools.go"
  # Keep a tidied go.mod/go.sum from an earlier run (a re-run skips the tidy).
  if [[ ! -f $w/go.sum ]] || ! cmp -s "$w/go.mod.new" "$w/go.mod.in"; then
    cp "$w/go.mod.new" "$w/go.mod"; cp "$w/go.mod.new" "$w/go.mod.in"
    run_logged "go mod tidy" "$w/tidy.log" bash -c "cd '$w' && go mod tidy" || fail "resolve kubernetes modules" "$w/tidy.log" "$target"
  fi
}
# Version ldflags: without them the binaries report v0.0.0-master+$Format:%H$.
k8s_ldflags() {
  local v=$KUBERNETES_VERSION
  echo "-s -w -X k8s.io/component-base/version.gitVersion=v$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${v#1.} -X k8s.io/client-go/pkg/version.gitVersion=v$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${v#1.}"
}
# go build the k8s.io/kubernetes commands in wrapper $1 into $1/out (skipping built ones).
k8s_build() {
  local w=$1 target=$2; shift 2
  local ld; ld=$(k8s_ldflags)
  for cmd in "$@"; do
    [[ -x $w/out/$cmd ]] && continue
    step "go build $cmd"
    run_logged "$cmd" "$w/$cmd.log" bash -c "cd '$w' && go build -trimpath -ldflags '$ld' -o out/$cmd.tmp k8s.io/kubernetes/cmd/$cmd && mv out/$cmd.tmp out/$cmd" \
      || fail "build $cmd" "$w/$cmd.log" "$target"
  done
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION dest="$bin/kubernetes-$KUBERNETES_VERSION"
  if [[ -x $dest/kube-apiserver && -x $dest/kube-controller-manager && -x $dest/kubectl ]]; then
    echo "kubernetes $v: cached at $dest"; return
  fi
  need_go
  step "building kube-apiserver, kube-controller-manager, kubectl v$v (Go, 15-25 min cold on 2 cores)"
  local w="$work/kubernetes-$v"
  target=kubernetes k8s_wrapper "$w" kube-apiserver kube-controller-manager kubectl
  k8s_build "$w" kubernetes kube-apiserver kube-controller-manager kubectl
  mkdir -p "$dest"; cp "$w"/out/kube-apiserver "$w"/out/kube-controller-manager "$w"/out/kubectl "$dest/"
  echo "kubernetes $v: built into $dest"
}

# The real node's Kubernetes parts, from the same wrapper module and version, in their own
# cache dir (so adding them never invalidates the control plane's).
build_kubernetes_node() {
  local v=$KUBERNETES_VERSION dest="$bin/kubernetes-node-$KUBERNETES_VERSION"
  if [[ -x $dest/kubelet && -x $dest/kube-scheduler && -x $dest/kube-proxy ]]; then
    echo "kubernetes node $v: cached at $dest"; return
  fi
  need_go
  step "building kubelet, kube-scheduler, kube-proxy v$v (Go, ~10 min cold on 2 cores)"
  local w="$work/kubernetes-node-$v"
  target=kubernetes-node k8s_wrapper "$w" kubelet kube-scheduler kube-proxy
  k8s_build "$w" kubernetes-node kubelet kube-scheduler kube-proxy
  mkdir -p "$dest"; cp "$w"/out/kubelet "$w"/out/kube-scheduler "$w"/out/kube-proxy "$dest/"
  echo "kubernetes node $v: built into $dest"
}

# A wrapper module in $1 requiring module $2 at version $3 (go install pkg@v refuses
# modules whose go.mod has replace directives; a wrapper builds them all the same way).
go_wrapper() {
  local w=$1 mod=$2 ver=$3 target=$4
  mkdir -p "$w/out"
  if [[ ! -f $w/go.sum ]] || ! grep -q "^require $mod $ver\$" "$w/go.mod" 2>/dev/null; then
    rm -f "$w/go.mod" "$w/go.sum"
    (cd "$w" && go mod init local/wrapper >/dev/null 2>&1 && echo "require $mod $ver" >>go.mod)
    run_logged "go mod tidy" "$w/tidy.log" bash -c "cd '$w' && go mod tidy" || fail "resolve $mod" "$w/tidy.log" "$target"
  fi
}

# containerd 2.x with its runc shim and ctr, static (no cgo): the real node's CRI runtime.
build_containerd() {
  local v=$CONTAINERD_VERSION dest="$bin/containerd-$CONTAINERD_VERSION"
  if [[ -x $dest/containerd && -x $dest/containerd-shim-runc-v2 && -x $dest/ctr ]]; then
    echo "containerd $v: cached at $dest"; return
  fi
  need_go
  step "building containerd, containerd-shim-runc-v2, ctr v$v (Go, ~2 min cold)"
  local w="$work/containerd-$v" m=github.com/containerd/containerd/v2
  mkdir -p "$w"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/containerd"\n\t_ "%s/cmd/containerd-shim-runc-v2"\n\t_ "%s/cmd/ctr"\n)\n' "$m" "$m" "$m" >"$w/tools.go"
  go_wrapper "$w" "$m" "v$v" containerd
  local ld="-s -w -X $m/version.Version=$v -X $m/version.Package=github.com/containerd/containerd"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    [[ -x $w/out/$cmd ]] && continue
    run_logged "$cmd" "$w/$cmd.log" bash -c "cd '$w' && go build -trimpath -tags no_btrfs,no_devmapper,no_zfs -ldflags '$ld' -o out/$cmd.tmp $m/cmd/$cmd && mv out/$cmd.tmp out/$cmd" \
      || fail "build $cmd" "$w/$cmd.log" containerd
  done
  mkdir -p "$dest"; cp "$w"/out/containerd "$w"/out/containerd-shim-runc-v2 "$w"/out/ctr "$dest/"
  echo "containerd $v: built into $dest"
}

# CoreDNS with only the plugins cluster DNS needs (the default build links every cloud
# provider's SDK): it answers cluster.local from the API and forwards nothing.
build_coredns() {
  local v=$COREDNS_VERSION dest="$bin/coredns-$COREDNS_VERSION"
  [[ -x $dest/coredns ]] && { echo "coredns $v: cached at $dest"; return; }
  need_go
  step "building coredns v$v (Go, ~3 min cold; plugins: errors log health ready kubernetes cache loadbalance)"
  local w="$work/coredns-$v" m=github.com/coredns/coredns
  mkdir -p "$w"
  cat >"$w/main.go" <<GO
package main

import (
	"$m/coremain"

	_ "$m/plugin/bind"
	_ "$m/plugin/cache"
	_ "$m/plugin/errors"
	_ "$m/plugin/health"
	_ "$m/plugin/kubernetes"
	_ "$m/plugin/loadbalance"
	_ "$m/plugin/log"
	_ "$m/plugin/ready"
)

func main() { coremain.Run() }
GO
  go_wrapper "$w" "$m" "v$v" coredns
  run_logged coredns "$w/build.log" bash -c "cd '$w' && go build -trimpath -ldflags '-s -w' -o out/coredns.tmp . && mv out/coredns.tmp out/coredns" \
    || fail "build coredns" "$w/build.log" coredns
  mkdir -p "$dest"; cp "$w/out/coredns" "$dest/"
  echo "coredns $v: built into $dest"
}

# crictl: the CRI command line (tests kill containers with it, as an operator would).
build_crictl() {
  local v=$CRICTL_VERSION dest="$bin/crictl-$CRICTL_VERSION"
  [[ -x $dest/crictl ]] && { echo "crictl $v: cached at $dest"; return; }
  need_go
  step "building crictl v$v (Go, ~1 min cold)"
  local w="$work/crictl-$v" m=sigs.k8s.io/cri-tools
  mkdir -p "$w"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/crictl"\n' "$m" >"$w/tools.go"
  go_wrapper "$w" "$m" "v$v" crictl
  run_logged crictl "$w/build.log" bash -c "cd '$w' && go build -trimpath -ldflags '-s -w -X $m/pkg/version.Version=v$v' -o out/crictl.tmp $m/cmd/crictl && mv out/crictl.tmp out/crictl" \
    || fail "build crictl" "$w/build.log" crictl
  mkdir -p "$dest"; cp "$w/out/crictl" "$dest/"
  echo "crictl $v: built into $dest"
}

# The pod sandbox image: Kubernetes' own pause.c (from the module cache), static, in an OCI
# archive the stack imports into the node's containerd. No registry involved.
build_pause() {
  local v=$PAUSE_VERSION dest="$bin/pause-$PAUSE_VERSION"
  [[ -f $dest/pause.oci.tar ]] && { echo "pause $v: cached at $dest"; return; }
  need_go
  command -v gcc >/dev/null || { echo "ERROR: gcc not found (apt-get install gcc libc6-dev)" >&2; exit 1; }
  step "building the pause image $v (gcc -static)"
  local src w="$work/pause-$v"; mkdir -p "$w"
  src=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -f $src/build/pause/linux/pause.c ]] || { echo "ERROR: pause.c not found in $src" >&2; exit 1; }
  gcc -Os -Wall -Werror -static -DVERSION="v$v-voicefleet" -o "$w/pause" "$src/build/pause/linux/pause.c"
  python3 "$here/oci_pack.py" "$w/pause.oci.tar" "$PAUSE_IMAGE" /pause 65535:65535 "$w/pause:/pause:0755"
  mkdir -p "$dest"; cp "$w/pause.oci.tar" "$w/pause" "$dest/"
  echo "pause $v: built into $dest ($PAUSE_IMAGE)"
}

# apt-get install of Debian packages, as root, logged; a failure names the retry target.
#   apt_install <retry target> <package>...
apt_install() {
  local target=$1; shift
  step "installing Debian's $* (apt-get)"
  if [[ $(id -u) -ne 0 ]]; then echo "ERROR: need root for apt-get install $*" >&2; exit 1; fi
  local log="$work/apt-$target.log"
  run_logged apt "$log" bash -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $*" \
    || fail "apt-get install $*" "$log" "$target"
}

# Debian's runc (the OCI runtime containerd's shim calls), the CNI plugins (bridge,
# host-local, loopback, portmap in /usr/lib/cni), iptables and conntrack for kube-proxy,
# and a static busybox the real-node tests pack into a tiny image (sh, httpd, nslookup).
install_node_packages() {
  local missing=()
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback && -x /usr/lib/cni/portmap ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  if [[ ${#missing[@]} -eq 0 ]]; then echo "node packages: runc, CNI plugins, iptables, conntrack, busybox present"; return; fi
  apt_install node-packages "${missing[@]}"
  echo "node packages: installed ${missing[*]}"
}

# `go install <package>@v<version>` once, into $bin/<dir>-<version>/<binary>.
#   go_tool <dir> <version> <package> <built name> <binary> <cold time> <ldflags> <retry target>
go_tool() {
  local dir=$1 version=$2 pkg=$3 built=$4 binary=$5 cold=$6 ldflags=$7 target=$8
  local dest="$bin/$dir-$version"
  [[ -x $dest/$binary ]] && { echo "$binary $version: cached at $dest"; return; }
  need_go
  step "building $binary v$version (Go, ~$cold cold)"
  local w="$work/$dir-$version"; mkdir -p "$w"
  run_logged "$target" "$w/build.log" env GOBIN="$w/out" go install -trimpath -ldflags "$ldflags" "$pkg@v$version" \
    || fail "build $binary" "$w/build.log" "$target"
  mkdir -p "$dest"; mv "$w/out/$built" "$dest/$binary"
  echo "$binary $version: built into $dest"
}

build_livekit() {
  go_tool livekit "$LIVEKIT_VERSION" github.com/livekit/livekit-server/cmd/server server livekit-server \
    "5 min" "-s -w" livekit
}

build_helm() {
  go_tool helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm helm helm "3 min" \
    "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" helm
}

build_actionlint() {
  go_tool actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint actionlint actionlint \
    "1 min" "-s -w" actionlint
}

# prometheus-operator's CRDs, as its Go module ships them (example/prometheus-operator-crd).
fetch_monitoring_crds() {
  local dest="$bin/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
  [[ -f $dest/monitoring.coreos.com_prometheusrules.yaml ]] && { echo "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION: cached at $dest"; return; }
  need_go
  step "fetching prometheus-operator v$PROMETHEUS_OPERATOR_VERSION's CRDs (Go module proxy)"
  local w="$work/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"; mkdir -p "$w"
  local dir
  dir=$(cd "$w" && go mod download -json "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -n $dir && -d $dir/example/prometheus-operator-crd ]] || fail "fetch prometheus-operator's CRDs" /dev/null monitoring-crds
  mkdir -p "$dest"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$dest/"
  done
  echo "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION: into $dest"
}

# KEDA's module source (cached by Go), downloaded once: its CRDs and its main packages.
# Prints the module's directory.
keda_source() {
  local w="$work/keda-$KEDA_VERSION" m=github.com/kedacore/keda/v2 src
  mkdir -p "$w"
  if [[ ! -s $w/module.json ]]; then
    # Progress to stderr: stdout is the path this prints.
    run_logged "go mod download" "$w/download.log" bash -c "cd '$work' && go mod download -json '$m@v$KEDA_VERSION' >'$w/module.json.tmp' && mv '$w/module.json.tmp' '$w/module.json'" >&2 \
      || fail "download $m" "$w/download.log" "$1"
  fi
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$w/module.json")
  [[ -n $src && -f $src/cmd/operator/main.go ]] || fail "find KEDA's module source" "$w/module.json" "$1"
  echo "$src"
}

# KEDA's CRDs as its module ships them (config/crd/bases; the keda.sh and eventing.keda.sh
# kinds): a ~3 MB download, so part of `all`; the ScaledObject's schema checks what mode
# keda renders (tests/operator/test_keda_crd.py), and the keda stack installs them.
fetch_keda_crds() {
  local dest="$bin/keda-crds-$KEDA_VERSION" src
  [[ -f $dest/keda.sh_scaledobjects.yaml ]] && { echo "KEDA CRDs $KEDA_VERSION: cached at $dest"; return; }
  need_go
  step "fetching KEDA v$KEDA_VERSION's CRDs (Go module proxy)"
  src=$(keda_source keda-crds)
  mkdir -p "$dest.tmp"
  install -m 0644 "$src"/config/crd/bases/*.yaml "$dest.tmp/"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
  echo "KEDA CRDs $KEDA_VERSION: into $dest"
}

# KEDA's operator and metrics API server (the external metrics APIService), built inside
# KEDA's own module (its go.mod's replace and its go.sum apply, as its Makefile builds
# them). Not in `all`: ~18 min cold on 2 cores (measured with other builds' Go cache, on a
# loaded machine), for the stacks that run KEDA only; the `keda` test fixture builds it.
# nice: the largest Go build here, it must not starve stacks running beside it.
build_keda() {
  local v=$KEDA_VERSION dest="$bin/keda-$KEDA_VERSION"
  fetch_keda_crds
  if [[ -x $dest/keda && -x $dest/keda-adapter ]]; then
    echo "keda $v: cached at $dest"; return
  fi
  need_go
  step "building keda, keda-adapter v$v (Go, nice 10, ~18 min cold on 2 cores)"
  local w="$work/keda-$v" m=github.com/kedacore/keda/v2 src
  src=$(keda_source keda)
  mkdir -p "$w/out"
  local ld="-s -w -X=$m/version.Version=$v -X=$m/version.GitCommit=v$v"
  run_logged keda "$w/build.log" bash -c "cd '$src' && nice -n 10 go build -trimpath -ldflags '$ld' -o '$w/out/' ./cmd/operator ./cmd/adapter" \
    || fail "build keda" "$w/build.log" keda
  mkdir -p "$dest"
  cp "$w/out/operator" "$dest/keda"; cp "$w/out/adapter" "$dest/keda-adapter"
  echo "keda $v: built into $dest"
}

# Debian's prometheus package brings prometheus and promtool.
install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "prometheus: $(command -v prometheus)"; return
  fi
  apt_install prometheus prometheus
  # The package starts a system service; the testbed runs its own Prometheus instead.
  (systemctl stop prometheus prometheus-node-exporter 2>/dev/null; pkill -x prometheus-node-exporter 2>/dev/null; pkill -x prometheus 2>/dev/null) || true
  echo "prometheus: installed $(command -v prometheus)"
}

# Debian's redis-server: what makes livekit-server multi-node (its router, room store and
# message bus), and where LiveKit's SIP API keeps trunks and rules. Each stack that asks
# for it runs its own redis-server on a free loopback port (voicefleet_testbed.redis).
install_redis() {
  if command -v redis-server >/dev/null; then
    echo "redis: $(command -v redis-server)"; return
  fi
  apt_install redis redis-server
  # The package starts and enables a system service on port 6379; the testbed runs its own.
  # Stopped through its service manager (by its pidfile), never by process name: a
  # stack's own redis-server may be running.
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  else
    service redis-server stop >/dev/null 2>&1 || true
    update-rc.d redis-server disable >/dev/null 2>&1 || true
  fi
  echo "redis: installed $(command -v redis-server)"
}

# Debian's Chromium (the call page's test drives it headless, Playwright with
# executablePath; Playwright's own browser download needs the internet) and espeak-ng (the
# speech its fake microphone plays).
install_browser_packages() {
  local missing=()
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  if [[ ${#missing[@]} -eq 0 ]]; then echo "browser packages: chromium, espeak-ng present"; return; fi
  apt_install browser-packages "${missing[@]}"  # ~1 min
  echo "browser packages: installed ${missing[*]}"
}

# Everything the real node needs (kubelet, kube-scheduler, kube-proxy, containerd, CoreDNS,
# crictl, the pause image, Debian's runc and CNI plugins).
build_node() {
  install_node_packages; build_kubernetes_node; build_containerd; build_coredns; build_crictl; build_pause
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(all)
for t in "${targets[@]}"; do
  case $t in
    all) build_etcd; build_livekit; build_kubernetes; build_helm; build_actionlint; fetch_monitoring_crds; fetch_keda_crds; install_prometheus; install_redis; install_browser_packages; build_node ;;
    node) build_node ;;
    kubernetes-node) build_kubernetes_node ;;
    containerd) build_containerd ;;
    coredns) build_coredns ;;
    crictl) build_crictl ;;
    pause) build_pause ;;
    node-packages) install_node_packages ;;
    browser-packages) install_browser_packages ;;
    etcd) build_etcd ;;
    kubernetes) build_kubernetes ;;
    livekit) build_livekit ;;
    helm) build_helm ;;
    actionlint) build_actionlint ;;
    monitoring-crds) fetch_monitoring_crds ;;
    prometheus) install_prometheus ;;
    redis) install_redis ;;
    keda) build_keda ;;
    keda-crds) fetch_keda_crds ;;
    *) echo "unknown target: $t (all|node|etcd|kubernetes|kubernetes-node|containerd|coredns|crictl|pause|node-packages|livekit|helm|actionlint|monitoring-crds|prometheus|redis|browser-packages|keda|keda-crds)" >&2; exit 2 ;;
  esac
done
echo "binaries ready under $bin"
