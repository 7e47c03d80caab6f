package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFile calls changed when the file at path is written, created or
// replaced, including by an atomic rename (an editor's save, the SSM
// push: write beside, then rename over). It watches the directory, since a
// watch on the file itself ends when the file is replaced. Bursts of
// events within debounce count as one change.
//
// A policy directory (path is one, or a link to one) is watched inside
// too: a change to any of its policy files counts, and when path itself
// is replaced (the SSM push swaps a link to a new directory) the watch
// moves to the new directory.
func watchFile(ctx context.Context, path string, debounce time.Duration, log *slog.Logger, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return err
	}
	inside := false // abs is a directory, watched
	watchInside := func() {
		if inside {
			_ = w.Remove(abs) // fails when the directory went away, which is fine
			inside = false
		}
		if fi, err := os.Stat(abs); err == nil && fi.IsDir() {
			if err := w.Add(abs); err != nil {
				log.Warn("watching the policy directory", "dir", path, "err", err)
				return
			}
			inside = true
		}
	}
	watchInside()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Clean(ev.Name)
			switch {
			case ev.Op == fsnotify.Chmod:
				continue
			case name == abs:
				watchInside()
			case !inside || filepath.Dir(name) != abs || !isPolicyFileName(filepath.Base(name)):
				continue
			}
			timer = time.After(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching the policy file", "file", path, "err", err)
		case <-timer:
			timer = nil
			changed()
		}
	}
}

// isPolicyFileName reports whether a file in a policy directory is one of
// its files (policy.DirFiles): *.yaml, not hidden.
func isPolicyFileName(n string) bool {
	return strings.HasSuffix(n, ".yaml") && !strings.HasPrefix(n, ".")
}
