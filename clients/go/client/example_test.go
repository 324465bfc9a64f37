package client

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleProgram runs examples/retrieve against a server of the quick start's registry
// (examples/features.yaml), with auth on.
func TestExampleProgram(t *testing.T) {
	shared := needServer(t)
	spec := filepath.Join(repoRoot(t), "examples", "features.yaml")
	s, err := newServerOf(shared.bin, t.TempDir(), spec, "OFS_READER_TOKEN="+readerToken, "OFS_WRITER_TOKEN="+writerToken)
	if err != nil {
		t.Fatal(err)
	}
	defer s.kill()
	cmd := exec.Command("go", "run", "./examples/retrieve", "-addr", s.addr)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "OFS_READER_TOKEN="+readerToken, "OFS_WRITER_TOKEN="+writerToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{
		"go-u1: ctr_7d=0.125 sessions_7d=7 (found) user_emb=[0.5 -1 0.25 0 1 2 -0.5 3]",
		"go-nobody: ctr_7d=0 sessions_7d=0 (missing) user_emb=[0 0 0 0 0 0 0 0]",
		"decoded activity [ctr_7d sessions_7d@DataTypeFP16]: [[0.125 7] [0.75 2] [0 0]]",
		"not found, as expected: ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
