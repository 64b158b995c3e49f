#!/usr/bin/env bash
# The whole suite, phase by phase, as `make test` runs it once bin/, Consul
# and the Debian packages are in place: the packages (unit, integration and
# end-to-end tests against the real Consul, Docker Engine, Podman, CoreDNS,
# BIND), the fuzz targets' budgets, then the fault scenarios on their own
# (they time outages and must not share the two cores with the packages).
#
# Every phase runs whatever an earlier one did, so one failure never hides
# another; the script ends with one line per phase and fails if any failed.
# FAULT_LOAD is the load scenario's length (make test cuts it to a minute).
set -uo pipefail
cd "$(dirname "$0")/.."

export BERTH_CONSUL="${BERTH_CONSUL:-$(bash hack/get-consul.sh)}"
export BERTH_COREDNS="${BERTH_COREDNS:-$PWD/bin/coredns}"
export BERTH_FAULT_LOAD_DURATION="${FAULT_LOAD:-60s}"

# A phase's bound is go test's -timeout: past it the test binary panics with
# every goroutine's stack, rather than CI's 90 minutes running out silently.
# The packages take about 10 minutes on a quiet two-core machine and under
# 20 with a CPU load on both cores (.ci/run); the fault scenarios 8 and 11.
phases=(packages fuzz faults)
declare -A cmd=(
  [packages]="go test -count=1 -timeout 25m ./..."
  [fuzz]="bash hack/fuzz.sh"
  [faults]="go test -count=1 -timeout 30m -run Fault -v ./faults/..."
)
declare -A result took

for p in "${phases[@]}"; do
  echo "=== phase $p: ${cmd[$p]}"
  start=$SECONDS
  if ${cmd[$p]}; then result[$p]=ok; else result[$p]=FAIL; fi
  took[$p]=$((SECONDS - start))
  echo "=== phase $p: ${result[$p]} in ${took[$p]} s"
done

status=0
echo "=== summary"
for p in "${phases[@]}"; do
  printf 'phase %-8s %-4s %5d s  %s\n' "$p" "${result[$p]}" "${took[$p]}" "${cmd[$p]}"
  [[ ${result[$p]} == ok ]] || status=1
done
exit $status
