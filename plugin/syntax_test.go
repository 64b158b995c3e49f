package berth

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSyntaxDocumentsEveryDirective proves README.md's Syntax section lists
// every directive parse accepts, in its block and with a description, and
// none it does not: a directive added to setup.go without docs fails here.
// The directives are read from setup.go's own source (the cases of parse's
// switch on the property), so the test follows the parser rather than a
// copy of its list.
func TestSyntaxDocumentsEveryDirective(t *testing.T) {
	accepted := setupDirectives(t)
	if len(accepted) < 10 {
		t.Fatalf("found %d directives in setup.go's parse (%v): the switch on property was not found", len(accepted), accepted)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, syntax, ok := strings.Cut(string(readme), "\n## Syntax\n")
	if !ok {
		t.Fatal("README.md has no Syntax section")
	}
	syntax, _, _ = strings.Cut(syntax, "\n## ")
	_, block, ok := strings.Cut(syntax, "~~~ txt\n")
	if !ok {
		t.Fatal("README.md's Syntax has no ~~~ txt block")
	}
	block, prose, _ := strings.Cut(block, "~~~\n")
	var inBlock []string
	for _, line := range strings.Split(block, "\n")[1:] { // after "berth [ZONES...] {"
		if f := strings.Fields(line); len(f) > 0 && f[0] != "}" {
			inBlock = append(inBlock, f[0])
		}
	}
	// A description is a bullet that starts by naming the directive in
	// backquotes, alone or with others and their arguments ("`refresh`,
	// `retry`, `expire` **DURATION** ...", "`token` **TOKEN** / `token_file`
	// **PATH** ...").
	described := map[string]bool{}
	head := regexp.MustCompile(`^\* ((?:` + "`[a-z_]+`" + `|\*\*[A-Z]+\*\*|\[[^\]]*\]|[ ,/.])+)`)
	name := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(prose, "\n") {
		h := head.FindStringSubmatch(line)
		if h == nil {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(h[1], -1) {
			described[m[1]] = true
		}
	}
	for _, d := range accepted {
		if !slices.Contains(inBlock, d) {
			t.Errorf("directive %q is accepted by setup.go but missing from README.md's Syntax block", d)
		}
		if !described[d] {
			t.Errorf("directive %q is accepted by setup.go but has no description (a bullet naming `%s`) in README.md's Syntax", d, d)
		}
	}
	for _, d := range inBlock {
		if !slices.Contains(accepted, d) {
			t.Errorf("README.md's Syntax block lists %q, which setup.go does not accept", d)
		}
	}
}

// setupDirectives are the string cases of the switch on property in
// setup.go's parse.
func setupDirectives(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "setup.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "parse" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			sw, ok := n.(*ast.SwitchStmt)
			if !ok {
				return true
			}
			if tag, isIdent := sw.Tag.(*ast.Ident); !isIdent || tag.Name != "property" {
				return true
			}
			for _, s := range sw.Body.List {
				for _, e := range s.(*ast.CaseClause).List {
					if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						d, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						out = append(out, d)
					}
				}
			}
			return false
		})
		return false
	})
	return out
}
