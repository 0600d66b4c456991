// SPDX-License-Identifier: AGPL-3.0-only

// Package repo checks properties of the repository itself: licence
// headers and texts, the release archive, and that the documentation's
// commands and links stay true.
package repo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// root is the repository's top directory, found from this package's.
var root = func() string {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return dir
}()

// sourceFile reports whether a repository path is a source file that
// must carry a licence identifier. Data (JSON, results, corpora, the
// compiled BPF object) and prose (Markdown) carry none.
func sourceFile(rel string) bool {
	switch filepath.Base(rel) {
	case "Dockerfile", "run":
		return rel == "Dockerfile" || rel == filepath.Join(".ci", "run")
	}
	switch filepath.Ext(rel) {
	case ".go", ".c", ".h", ".sh", ".bash", ".py", ".nix", ".gp", ".yaml", ".yml", ".service", ".toml":
		return true
	}
	return false
}

// wantLicence is the SPDX identifier a source file must carry: the BPF
// program is GPL-2.0-only (the kernel requires a GPL-compatible licence
// for the helpers it uses), everything else AGPL-3.0-only.
func wantLicence(rel string) string {
	if strings.HasPrefix(rel, "bpf"+string(filepath.Separator)) {
		return "GPL-2.0-only"
	}
	return "AGPL-3.0-only"
}

var spdxLine = regexp.MustCompile(`^(?://|#) SPDX-License-Identifier: (\S+)$`)

// TestSourceFilesCarrySPDX requires every source file to name its licence
// in one of its first two lines (the second after a #! line).
func TestSourceFilesCarrySPDX(t *testing.T) {
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "node_modules", "dist":
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !sourceFile(rel) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.SplitN(string(data), "\n", 3)
		head := lines[0]
		if strings.HasPrefix(head, "#!") && len(lines) > 1 {
			head = lines[1]
		}
		checked++
		m := spdxLine.FindStringSubmatch(head)
		switch {
		case m == nil:
			t.Errorf("%s: no SPDX-License-Identifier line at the top (want %s)", rel, wantLicence(rel))
		case m[1] != wantLicence(rel):
			t.Errorf("%s: SPDX-License-Identifier: %s, want %s", rel, m[1], wantLicence(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 150 {
		t.Fatalf("checked only %d source files under %s", checked, root)
	}
}

// TestLicenceTexts requires the full text of each licence named by an
// identifier, and LICENSE to be the AGPL (the project's main licence).
func TestLicenceTexts(t *testing.T) {
	// Opening lines and the closing of the terms, as published by the FSF.
	texts := map[string][]string{
		"AGPL-3.0-only": {"GNU AFFERO GENERAL PUBLIC LICENSE", "Version 3, 19 November 2007",
			"13. Remote Network Interaction; Use with the GNU General Public License.", "END OF TERMS AND CONDITIONS"},
		"GPL-2.0-only": {"GNU GENERAL PUBLIC LICENSE", "Version 2, June 1991",
			"NO WARRANTY", "END OF TERMS AND CONDITIONS"},
	}
	for id, markers := range texts {
		path := filepath.Join(root, "LICENSES", id+".txt")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("licence text for %s: %v", id, err)
			continue
		}
		for _, m := range markers {
			if !bytes.Contains(data, []byte(m)) {
				t.Errorf("%s: does not contain %q", path, m)
			}
		}
		if len(data) < 15000 {
			t.Errorf("%s: %d bytes, too short for the full text", path, len(data))
		}
	}
	main, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	agpl, _ := os.ReadFile(filepath.Join(root, "LICENSES", "AGPL-3.0-only.txt"))
	if !bytes.Equal(main, agpl) {
		t.Error("LICENSE differs from LICENSES/AGPL-3.0-only.txt")
	}
}

// TestReleaseArchiveCarriesLicences builds a release archive with
// scripts/release.sh and checks what is in it.
func TestReleaseArchiveCarriesLicences(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/release.sh", "v0.0.0-test", out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, b)
	}
	matches, _ := filepath.Glob(filepath.Join(out, "rfm-v0.0.0-test-linux-*.tar.gz"))
	if len(matches) != 1 {
		t.Fatalf("release archive: want one rfm-v0.0.0-test-linux-*.tar.gz in %s, got %v", out, matches)
	}
	f, err := os.Open(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			name := h.Name[strings.Index(h.Name, "/")+1:]
			contents[name], _ = io.ReadAll(tr)
		}
	}
	var names []string
	for n := range contents {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, want := range []string{"rfm", "LICENSE", "LICENSES/AGPL-3.0-only.txt", "LICENSES/GPL-2.0-only.txt"} {
		if _, ok := contents[want]; !ok {
			t.Errorf("release archive lacks %s; it has %v", want, names)
		}
	}
	for _, lic := range []string{"LICENSE", "LICENSES/GPL-2.0-only.txt"} {
		src, _ := os.ReadFile(filepath.Join(root, lic))
		if got, ok := contents[lic]; ok && !bytes.Equal(got, src) {
			t.Errorf("release archive: %s differs from the repository's", lic)
		}
	}
	// The version given to the script is the binary's.
	bin := filepath.Join(t.TempDir(), "rfm")
	if err := os.WriteFile(bin, contents["rfm"], 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "rfm v0.0.0-test ") {
		t.Errorf("rfm version from the release archive: %q, %v", v, err)
	}
}
