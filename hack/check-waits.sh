#!/usr/bin/env bash
# check-waits.sh: no fixed wait in a test. Every duration a *_test.go writes
# with time.Microsecond, Millisecond, Second or Minute must be either
#   - a named bound: a const, alone (const x = ...) or in a const ( ... )
#     block, with a comment right above it (or above its block) that names
#     the product bound it follows from and the margin; or
#   - marked on its line "// not a wait: <why>" (a TTL put into a document,
#     a flag's value, a backoff policy under test, a client's own timeout).
# A .Round(...) of a duration for a log line is not a duration of the test.
# Everything else (5*time.Second in an Eventually, a Sleep, a deadline) is
# printed with its place, and the script fails. make lint runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -co --exclude-standard '*_test.go' | xargs awk '
FNR == 1 { block = 0; blockdoc = 0; prev = "" }
{
	line = $0
	trimmed = line; sub(/^[ \t]+/, "", trimmed)
	if (trimmed ~ /^const \($/) { block = 1; blockdoc = (prev ~ /^\/\//) }
	else if (block && trimmed ~ /^\)/) { block = 0 }
	code = line
	gsub(/\.Round\([^()]*\)/, "", code)
	sub(/\/\/.*/, "", code)
	if (code ~ /time\.(Microsecond|Millisecond|Second|Minute)/ && line !~ /\/\/ not a wait: [^ ]/) {
		named = (trimmed ~ /^const [A-Za-z_][A-Za-z0-9_]* / && prev ~ /^\/\//) ||
			(block && (blockdoc || prev ~ /^\/\// || prev ~ /^[A-Za-z_][A-Za-z0-9_]* .*=/))
		if (!named) { printf "%s:%d: %s\n", FILENAME, FNR, trimmed; bad++ }
	}
	prev = trimmed
}
END {
	if (bad) {
		printf "%d fixed waits in tests: derive each from a named bound of the product (internal/testenv/bounds.go, or a const beside the bound) with its margin, or mark a duration that is no wait \"// not a wait: <why>\"\n", bad > "/dev/stderr"
		exit 1
	}
}'
