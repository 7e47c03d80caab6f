package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchPolicyDirectory: a change to a policy directory's file counts,
// one to a hidden or non-policy file does not; when the link the policy
// names is swapped to another directory the watch follows it.
func TestWatchPolicyDirectory(t *testing.T) {
	root := t.TempDir()
	v1, v2 := filepath.Join(root, "policy.d.1"), filepath.Join(root, "policy.d.2")
	for _, d := range []string{v1, v2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "policy.d")
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watchFile(ctx, link, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { changes <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond) // the watch is set up

	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-changes:
			if !want {
				t.Errorf("%s: counted as a change", what)
			}
		case <-time.After(300 * time.Millisecond):
			if want {
				t.Errorf("%s: no change seen", what)
			}
		}
	}
	write := func(path string) {
		t.Helper()
		if err := os.WriteFile(path, []byte("version: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(v1, "team.yaml"))
	expect("a team file written", true)
	write(filepath.Join(v1, ".team.yaml.tmp"))
	expect("a hidden file written", false)
	write(filepath.Join(v1, "notes.txt"))
	expect("a file that is not *.yaml", false)

	// Swap the link to v2, as the SSM push does (a new link renamed over).
	tmp := filepath.Join(root, ".policy.d.new")
	if err := os.Symlink(v2, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	expect("the link swapped", true)
	write(filepath.Join(v2, "team.yaml"))
	expect("a file of the new directory written", true)
	write(filepath.Join(v1, "team.yaml"))
	expect("a file of the old directory written", false)
}
