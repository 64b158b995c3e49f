#!/usr/bin/env bash
# Builds a pinned Consul release from the Go module proxy into a cache folder,
# once, and prints the binary's path. Consul ships no Debian package, and
# `go install` refuses its replace directives, so we build it from inside a
# throw-away module instead. v1.16.3 is the last MPL-licensed release.
set -euo pipefail

CONSUL_VERSION="${CONSUL_VERSION:-v1.16.3}"
CACHE_DIR="${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
BIN="$CACHE_DIR/consul-$CONSUL_VERSION/consul"

if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

# One build at a time: a second caller (a parallel make, a colleague's test)
# waits for the first and then finds the binary.
mkdir -p "$(dirname "$BIN")"
exec 9>"$(dirname "$BIN")/.lock"
flock 9
if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building consul $CONSUL_VERSION into $BIN (once; a few minutes)" >&2
(
  cd "$work"
  go mod init berth.local/consul-build >/dev/null 2>&1
  # The checksum database has no entry for these two MPL-2.0 modules at the
  # versions Consul pins, although the module proxy serves them.
  export GONOSUMDB="github.com/hashicorp/hcp-sdk-go,github.com/hashicorp/consul/envoyextensions${GONOSUMDB:+,$GONOSUMDB}"
  export GOFLAGS="-mod=mod"
  go get "github.com/hashicorp/consul@$CONSUL_VERSION" >&2
  # Built beside its final name and renamed: no reader sees half a binary.
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.$$" github.com/hashicorp/consul >&2
  mv "$BIN.$$" "$BIN"
)
echo "$BIN"
