package protocol_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/native/protocol"
)

// root is the repository's root, from this package's directory.
const root = "../.."

// goNames returns protocol.go's string constants whose names start with
// prefix, name → value, read from the source so that a constant added there
// is checked without being listed here.
func goNames(t *testing.T, prefix string) map[string]string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), "protocol.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !strings.HasPrefix(name.Name, prefix) || !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				names[name.Name] = v
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("protocol.go has no %s* constants", prefix)
	}
	return names
}

var (
	tsObject = regexp.MustCompile(`(?s)export const (\w+) = \{(.*?)\} as const;`)
	tsEntry  = regexp.MustCompile(`(?m)^\s*(\w+): "([^"]*)",`)
)

// tsNames returns the entries of src/addon-protocol.ts's `export const
// object = {...} as const`, key → value.
func tsNames(t *testing.T, source, object string) map[string]string {
	t.Helper()
	for _, m := range tsObject.FindAllStringSubmatch(source, -1) {
		if m[1] != object {
			continue
		}
		names := map[string]string{}
		for _, e := range tsEntry.FindAllStringSubmatch(m[2], -1) {
			names[e[1]] = e[2]
		}
		return names
	}
	t.Fatalf("src/addon-protocol.ts has no `export const %s = {...} as const;`", object)
	return nil
}

func values(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// TestSameAsTypeScript: both sides of the contract name the same version,
// methods, events and error codes.
func TestSameAsTypeScript(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "src/addon-protocol.ts"))
	if err != nil {
		t.Fatal(err)
	}
	ts := string(b)
	m := regexp.MustCompile(`export const NATIVE_PROTOCOL = (\d+);`).FindStringSubmatch(ts)
	if m == nil || m[1] != strconv.Itoa(protocol.Version) {
		t.Errorf("src/addon-protocol.ts NATIVE_PROTOCOL %v, protocol.Version %d", m, protocol.Version)
	}
	for _, pair := range [][2]string{{"Method", "NativeMethods"}, {"Event", "NativeEvents"}, {"Code", "NativeErrorCodes"}} {
		goSide, tsSide := values(goNames(t, pair[0])), values(tsNames(t, ts, pair[1]))
		if !slices.Equal(goSide, tsSide) {
			t.Errorf("protocol.go's %s* constants %q differ from src/addon-protocol.ts's %s %q: change both", pair[0], goSide, pair[1], tsSide)
		}
		if len(slices.Compact(slices.Clone(goSide))) != len(goSide) {
			t.Errorf("two %s* constants share a value: %q", pair[0], goSide)
		}
	}
}

var (
	codeLiteral = regexp.MustCompile(`"ERR_SANDBOX[A-Z_]*"`)
	goEventCall = regexp.MustCompile(`\.Call\([^,()]*, "`)
	tsEventTest = regexp.MustCompile(`event(\.startsWith\(| ===| !==) "`)
	tsCase      = regexp.MustCompile(`case "([^"]*)"`)
)

// TestNamesDefinedOnce: no file but the two vocabularies (and errors.ts,
// for the codes only JavaScript raises) spells out an error code, and no
// code sends or dispatches an event by a literal name.
func TestNamesDefinedOnce(t *testing.T) {
	native, events := map[string]bool{}, map[string]bool{}
	for _, v := range goNames(t, "Code") {
		native[v] = true
	}
	for _, v := range goNames(t, "Event") {
		events[v] = true
	}
	var files []string
	for _, dir := range []string{"native", "bridge", "vfs", "netpolicy", "blockstore", "control", "vmm", "src"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch filepath.Ext(path) {
			case ".go", ".c", ".h", ".ts":
				if !strings.HasSuffix(path, "_test.go") {
					files = append(files, path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(files) < 50 {
		t.Fatalf("found only %d source files under %s: wrong root?", len(files), root)
	}
	for _, path := range files {
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		eventSwitch := strings.Contains(string(b), "switch (event)")
		for i, line := range strings.Split(string(b), "\n") {
			where := rel + ":" + strconv.Itoa(i+1)
			for _, lit := range codeLiteral.FindAllString(line, -1) {
				switch {
				case rel == "native/protocol/protocol.go" || rel == "src/addon-protocol.ts":
				case rel == "src/errors.ts" && !native[strings.Trim(lit, `"`)]:
				default:
					t.Errorf("%s: error code %s spelled out; use protocol.Code* (Go) or NativeErrorCodes/ErrorCodes (TypeScript)", where, lit)
				}
			}
			if strings.HasSuffix(rel, ".go") && goEventCall.MatchString(line) {
				t.Errorf("%s: event sent by a literal name; use protocol.Event*", where)
			}
			if strings.HasSuffix(rel, ".ts") && rel != "src/addon-protocol.ts" {
				// A case is an event's only in a switch on the event.
				c := tsCase.FindStringSubmatch(line)
				if tsEventTest.MatchString(line) || c != nil && events[c[1]] && eventSwitch {
					t.Errorf("%s: event dispatched by a literal name; use NativeEvents", where)
				}
			}
		}
	}
}
