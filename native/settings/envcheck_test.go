package settings_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Calls that read this process's environment, directly or not. Inside Node
// that environment is the copy taken when the addon loaded, so the addon's
// code must use the settings of the boot request instead.
var envReaders = map[string]map[string]string{
	"os": {
		"Getenv": "", "LookupEnv": "", "Environ": "", "ExpandEnv": "",
		"TempDir":      "reads TMPDIR",
		"UserCacheDir": "reads XDG_CACHE_HOME/HOME", "UserHomeDir": "reads HOME", "UserConfigDir": "reads XDG_CONFIG_HOME/HOME",
	},
	"syscall": {"Getenv": "", "Environ": ""},
	"os/exec": {"LookPath": "reads PATH"},
}

// Calls whose child inherits this process's environment unless the
// function sets the command's Env.
var inheritors = map[string]map[string]bool{
	"os/exec": {"Command": true, "CommandContext": true},
}

// TestNoStaleEnvironment fails when code the addon is built from (the
// packages of this module that ./native depends on, tests excluded) reads
// the process environment, or starts a child without setting its Env.
func TestNoStaleEnvironment(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"-f", `{{if .Module}}{{if eq .Module.Path "github.com/torkbot/sandbox"}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .CgoFiles}} {{.}}{{end}}{{"\n"}}{{end}}{{end}}`,
		"github.com/torkbot/sandbox/native").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		for _, name := range fields[1:] {
			files++
			for _, problem := range check(t, filepath.Join(fields[0], name)) {
				t.Error(problem)
			}
		}
	}
	if files < 20 {
		t.Fatalf("checked only %d files: the package list is wrong", files)
	}
}

// check returns the environment reads of one file.
func check(t *testing.T, path string) []string {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]string{} // local name → import path
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		name := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		imports[name] = p
	}
	var problems []string
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		setsEnv := false
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if a, ok := n.(*ast.AssignStmt); ok {
				for _, l := range a.Lhs {
					if sel, ok := l.(*ast.SelectorExpr); ok && sel.Sel.Name == "Env" {
						setsEnv = true
					}
				}
			}
			return true
		})
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			imp := imports[pkg.Name]
			pos := fset.Position(call.Pos())
			if why, bad := envReaders[imp][sel.Sel.Name]; bad {
				if why != "" {
					why = " (" + why + ")"
				}
				problems = append(problems, pos.String()+": "+imp+"."+sel.Sel.Name+" reads this process's environment"+why+
					"; take the value from the boot request's settings (native/settings, docs/settings.md)")
			}
			if inheritors[imp][sel.Sel.Name] && !setsEnv {
				problems = append(problems, pos.String()+": "+imp+"."+sel.Sel.Name+" without setting the command's Env: the child would inherit this process's stale environment; use vmm.Command with the boot request's environment")
			}
			return true
		})
	}
	return problems
}
