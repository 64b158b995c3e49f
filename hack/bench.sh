#!/usr/bin/env bash
# Runs Berth's benchmark suite (issue #5) in one go and writes
# bench/results.md; `make bench` calls it after building bin/ and Consul.
# Needs a Docker Engine; installs dnsperf (Debian package) when missing, and
# BIND 9 for the secondary part through hack/deps.sh.
# Extra arguments go to the driver, e.g. `bash hack/bench.sh -quick` or
# `bash hack/bench.sh -parts queries`; `make bench-large` runs
# `bash hack/bench.sh -large` (a million instances, saved as
# bench/large.json, which the next make bench renders as part 5). Nothing
# here fails on speed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dnsperf >/dev/null 2>&1; then
  echo "bench: installing dnsperf" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  if ! $sudo apt-get install -y dnsperf >/dev/null 2>&1; then
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y dnsperf >/dev/null
  fi
fi

# BIND's named (part 4's secondary), as the tests install it.
bash hack/deps.sh

# The binaries under test; make bench has just built them, a direct call
# builds what is missing.
[[ -x bin/coredns ]] || go build -o bin/coredns ./plugin/coredns
[[ -x bin/berth-exporter ]] || go build -o bin/berth-exporter ./exporter/cmd/berth-exporter
# Measure copies: a rebuild of bin/ while the suite runs (make test, a
# colleague's make build) must not swap the binaries under it.
snap="$(mktemp -d)"
trap 'rm -rf "$snap"' EXIT
cp bin/coredns bin/berth-exporter "$snap/"
export BERTH_COREDNS="$snap/coredns"
export BERTH_EXPORTER="$snap/berth-exporter"
export BERTH_CONSUL="${BERTH_CONSUL:-$(bash hack/get-consul.sh)}"

# Leftovers of an interrupted run.
if command -v docker >/dev/null 2>&1; then
  ids=$(docker ps -aq -f label=berth.test=bench 2>/dev/null || true)
  if [[ -n "$ids" ]]; then docker rm -f $ids >/dev/null || true; fi
fi

go build -o "$snap/berthbench" ./bench/cmd/berthbench
"$snap/berthbench" "$@"
