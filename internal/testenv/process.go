package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStat is the fields of /proc/PID/stat after the command, which may
// hold spaces and parentheses: fields[0] is the state, fields[19] the start
// time. ok is false when there is no such process.
func procStat(pid int) (fields []string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	fields = strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return fields, len(fields) >= 20
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	f, ok := procStat(pid)
	return ok && f[0] != "Z" && f[0] != "X"
}

// RSS is a process's resident set size in bytes, from /proc.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
