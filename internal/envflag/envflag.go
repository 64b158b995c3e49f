// Package envflag owns the command-line convention of Berth's programs
// (berth-exporter, berth-proxy): every flag but --version is also the
// environment variable BERTH_<NAME> (upper case, "-" as "_"); a flag on the
// command line wins over its variable; a variable set to "" empties a
// string flag (BERTH_LISTEN= turns a listener off) and is ignored for the
// others. One file: envflag.go.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Name is the variable that sets flag name, or "" for --version, which only
// the command line asks for.
func Name(flagName string) string {
	if flagName == "version" {
		return ""
	}
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets, after fs.Parse, every flag the command line did not set from
// its variable, looked up with lookupEnv. Its error names each variable
// whose value the flag refused.
func Apply(fs *flag.FlagSet, lookupEnv func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs error
	fs.VisitAll(func(f *flag.Flag) {
		env := Name(f.Name)
		if env == "" || set[f.Name] {
			return
		}
		v, ok := lookupEnv(env)
		if !ok || v == "" && !isString(f) {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = errors.Join(errs, fmt.Errorf("%s: %w", env, err))
		}
	})
	return errs
}

func isString(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(string)
	return ok
}
