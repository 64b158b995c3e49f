#!/usr/bin/env bash
# Builds Berth's container images (make image), each FROM scratch around a
# static binary and the host's CA bundle, so no registry is needed:
#   berth-exporter  from bin/berth-exporter and exporter/Dockerfile
#   berth-coredns   from bin/coredns and deploy/dns/Dockerfile (with
#                   deploy/dns/Corefile as the image's default Corefile)
# Usage: hack/image.sh [exporter|coredns]... (default both); prints each
# image's tag on stdout. EXPORTER_IMAGE and COREDNS_IMAGE override the tags
# (IMAGE too, for the exporter, as before); BERTH_EXPORTER and BERTH_COREDNS
# name other binaries (the tests pass theirs). A missing bin/berth-exporter
# is built here; bin/coredns is not (make coredns: it is the slow one).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -r "$ca" ]] || { echo "image.sh: no CA bundle at $ca" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# static BIN: FROM scratch has no libc, so refuse a dynamically linked binary.
static() {
  if ! go version -m "$1" | grep -q 'CGO_ENABLED=0'; then
    echo "image.sh: $1 was not built with CGO_ENABLED=0" >&2
    exit 1
  fi
}

# build COMPONENT TAG DOCKERFILE : builds $work/COMPONENT, which holds the
# component's files, with the Dockerfile and the CA bundle added.
build() {
  local component=$1 tag=$2 ctx="$work/$1"
  cp "$3" "$ctx/Dockerfile"
  cp "$ca" "$ctx/ca-certificates.crt"
  docker build --label "berth.component=$component" -t "$tag" "$ctx" >&2 ||
    { echo "image.sh: building $tag failed" >&2; exit 1; }
  echo "$tag"
}

exporter() {
  local bin="${BERTH_EXPORTER:-$root/bin/berth-exporter}"
  if [[ ! -x "$bin" ]]; then
    (cd "$root" && CGO_ENABLED=0 go build -o "$bin" ./exporter/cmd/berth-exporter)
  fi
  static "$bin"
  mkdir -p "$work/exporter"
  cp "$bin" "$work/exporter/berth-exporter"
  build exporter "${EXPORTER_IMAGE:-${IMAGE:-berth-exporter:latest}}" "$root/exporter/Dockerfile"
}

coredns() {
  local bin="${BERTH_COREDNS:-$root/bin/coredns}"
  [[ -x "$bin" ]] || { echo "image.sh: no $bin: run make coredns first" >&2; exit 1; }
  static "$bin"
  mkdir -p "$work/coredns"
  cp "$bin" "$work/coredns/coredns"
  cp "$root/deploy/dns/Corefile" "$work/coredns/Corefile"
  build coredns "${COREDNS_IMAGE:-berth-coredns:latest}" "$root/deploy/dns/Dockerfile"
}

(($#)) || set -- exporter coredns
for component in "$@"; do
  case "$component" in
    exporter | coredns) "$component" ;;
    *) echo "image.sh: unknown image $component (exporter or coredns)" >&2; exit 2 ;;
  esac
done
