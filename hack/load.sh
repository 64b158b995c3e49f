#!/usr/bin/env bash
# Runs a command while a CPU load equal to the machine's core count runs
# beside it, and leaves nothing running: .ci/run proves the suite under load
# with it, so a test that holds only on a quiet machine fails at landing
# rather than on a newcomer's machine. Usage: hack/load.sh COMMAND [ARG...];
# the exit status is the command's. BERTH_LOAD_CPUS overrides the count.
set -uo pipefail
(($#)) || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
cpus="${BERTH_LOAD_CPUS:-$(nproc)}"
[[ "$cpus" =~ ^[0-9]+$ ]] || { echo "load: BERTH_LOAD_CPUS is not a number: $cpus" >&2; exit 2; }

# One busy loop per core, each its own process so that the kernel spreads
# them; they run at normal priority, as a colleague's build would.
burners=()
stop() {
  ((${#burners[@]})) || return 0
  kill "${burners[@]}" 2>/dev/null
  wait "${burners[@]}" 2>/dev/null
  burners=()
}
trap stop EXIT
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
for ((i = 0; i < cpus; i++)); do
  bash -c 'while :; do :; done' &
  burners+=($!)
done
echo "load: $cpus busy loops (pids ${burners[*]}) beside: $*" >&2

"$@"
status=$?
stop
echo "load: stopped; the command exited $status" >&2
exit $status
