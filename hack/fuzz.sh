#!/usr/bin/env bash
# Runs every Go fuzz target in the module with a budget of executions each,
# multiplied by SCALE (default 1; `make fuzz` uses 20). New crashers land in
# <package>/testdata/fuzz/<Target>/ and then run as regression cases in every
# plain `go test`.
#
# Budgets are counts, not durations: with a duration, Go 1.26's fuzzing
# coordinator can report its own deadline as a failure ("context deadline
# exceeded", go.dev/issue/75804, fixed in Go 1.27) when a worker is still
# busy as time runs out. A count has no deadline to race. Minimization is
# bounded by a count for the same reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1}"
[[ "$scale" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SCALE]" >&2; exit 2; }

# Executions per target at SCALE 1, about ten seconds each on two cores.
budget() {
  case "$1" in
    FuzzDNSWire) echo 300 ;;    # two network round trips to bin/coredns per input, 200 ms wait when it drops one
    FuzzServeDNS) echo 40000 ;; # the whole handler, packing included
    FuzzKVDocument) echo 50000 ;; # decoding, re-encoding and decoding again
    FuzzLabels) echo 40000 ;;   # the exporter's whole mapping, twice, and a decode (about 4000/s here)
    FuzzContainerTXT) echo 40000 ;; # a zone compiled, looked up and packed per input (about 8000/s here)
    *) echo 200000 ;;           # decoders
  esac
}

status=0
while IFS=: read -r file target; do
  pkg="./$(dirname "$file")"
  n=$(( $(budget "$target") * scale ))
  echo "fuzz: $pkg $target, ${n} executions"
  if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "${n}x" -fuzzminimizetime 100x "$pkg"; then
    status=1
  fi
done < <(grep -rHoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' --exclude-dir=.git . \
          | sed -E 's#^\./##; s#:func #:#' | sort -u)
exit $status
