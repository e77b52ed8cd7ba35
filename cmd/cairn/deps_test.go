package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps the import directions of STYLE.md: data flows one way, and
// a backup restores with the repository alone.
func TestLayering(t *testing.T) {
	const mod = "github.com/cairn-backup/cairn/internal/"
	out, err := exec.Command("go", "list", "-json", "github.com/cairn-backup/cairn/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		imports[strings.TrimPrefix(p.ImportPath, mod)] = p.Imports
	}
	// allowed lists, for each package, the internal packages it may import;
	// forbidden lists other imports it must not have.
	allowed := map[string][]string{
		"core":     {},
		"apitypes": {"core"},
		"testenv":  {},
		"client":   {"apitypes", "core"},
		"cli": {"client", "apitypes", "core", "atomicfile", "repo", "repo/format", "filebackup", "qcow2", "qemu",
			"chunker", "blob", "blob/location", "retention", "nbd", "fsimage", "fsimage/mount", "repo/nbdexport", "schedule",
			"uncached"},
		"nbd":         {},
		"atomicfile":  {},
		"meta":        {"core"},
		"meta/sqlite": {"meta"},
		"qemu":        {"core"},
		"pki":         {"atomicfile"},
		"node": {"qemu", "qcow2", "apitypes", "core", "atomicfile", "repo", "chunker", "blob/location", "fsimage/mount",
			"nbd", "repo/nbdexport", "repo/format"},
		"repo/nbdexport": {"repo", "nbd"},
		"service":        {"meta", "apitypes", "core", "blob/location", "retention", "schedule"},
		"chunker":        {"core"},
		"repo/crypto":    {"core"},
		"repo/format":    {"core"},
		"repo":           {"repo/format", "repo/crypto", "chunker", "blob", "filebackup", "retention", "core"},
		"retention":      {"core"},
		"schedule":       {},
		"filebackup":     {"repo/format", "chunker", "core", "uncached"},
		"qcow2":          {"core", "uncached"},
		"uncached":       {},
		"benchdata":      {},
		"blob":           {"core"},
		"blob/mem":       {"blob", "core"},
		"blob/local":     {"blob", "core"},
		"blob/s3":        {"blob", "core"},
	}
	forbidden := map[string][]string{
		"service": {"net/http"},
		"meta":    {"net/http"},
		"core":    {"github.com/"},
		"repo":    {"net/http"},
		"pki":     {"github.com/"},
	}
	for pkg, want := range allowed {
		imps, ok := imports[pkg]
		if !ok {
			t.Errorf("package %s not found", pkg)
			continue
		}
		for _, imp := range imps {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			okDep := false
			for _, w := range want {
				okDep = okDep || w == dep
			}
			if !okDep {
				t.Errorf("%s imports %s; it may import only %v", pkg, dep, want)
			}
		}
	}
	// forbidden "github.com/" means no third-party module; the allowed lists
	// above govern this module's own packages.
	for pkg, bad := range forbidden {
		for _, imp := range imports[pkg] {
			if strings.HasPrefix(imp, mod) {
				continue
			}
			for _, b := range bad {
				if imp == b || (strings.HasSuffix(b, "/") && strings.HasPrefix(imp, b)) {
					t.Errorf("%s imports %s, which it must not", pkg, imp)
				}
			}
		}
	}
}
