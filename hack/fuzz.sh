#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a while each (default 10s).
# New crashers land in <package>/testdata/fuzz/<Target>/ and then run as
# regression cases in every plain `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-10s}"
status=0
while IFS=: read -r file target; do
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $target for $fuzztime"
  if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
    status=1
  fi
done < <(grep -rHoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' --exclude-dir=.git . \
          | sed -E 's#^\./##; s#:func #:#' | sort -u)
exit $status
