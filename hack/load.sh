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
cmd_pid=""
stop() {
  ((${#burners[@]})) || return 0
  kill "${burners[@]}" 2>/dev/null
  wait "${burners[@]}" 2>/dev/null
  burners=()
}
# A signal to this script ends the command's whole process group (make, the
# phases, go test and what they started), as TERM: a background job of a
# script ignores INT; the script waits for the command: nothing it started
# outlives it.
forward() {
  [[ -n "$cmd_pid" ]] && kill "-$1" -- "-$cmd_pid" 2>/dev/null && wait "$cmd_pid" 2>/dev/null
  stop
}
trap stop EXIT
trap 'forward TERM; exit 130' INT
trap 'forward TERM; exit 143' TERM
for ((i = 0; i < cpus; i++)); do
  bash -c 'while :; do :; done' &
  burners+=($!)
done
echo "load: $cpus busy loops (pids ${burners[*]}) beside: $*" >&2

# In the background, so that a signal is handled at once rather than when
# the command ends, and in a process group of its own (setsid), so that the
# signal reaches everything the command started.
setsid "$@" &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=""
stop
echo "load: stopped; the command exited $status" >&2
exit $status
