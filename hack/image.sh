#!/usr/bin/env bash
# Builds the berth-exporter image (make image) from bin/berth-exporter, a
# static binary, and the host's CA bundle. No registry is needed: the image
# is FROM scratch. IMAGE overrides the tag.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
image="${IMAGE:-berth-exporter:latest}"
bin="$root/bin/berth-exporter"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [[ ! -x "$bin" ]]; then
  (cd "$root" && CGO_ENABLED=0 go build -o "$bin" ./exporter/cmd/berth-exporter)
fi
# FROM scratch has no libc: refuse a dynamically linked binary.
if ! go version -m "$bin" | grep -q 'CGO_ENABLED=0'; then
  echo "image.sh: $bin was not built with CGO_ENABLED=0" >&2
  exit 1
fi
[[ -r "$ca" ]] || { echo "image.sh: no CA bundle at $ca" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$root/exporter/Dockerfile" "$ctx/Dockerfile"
cp "$bin" "$ctx/berth-exporter"
cp "$ca" "$ctx/ca-certificates.crt"

docker build --label berth.component=exporter -t "$image" "$ctx" >&2
echo "$image"
