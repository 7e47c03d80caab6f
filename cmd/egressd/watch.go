package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFile calls changed when the file at path is written, created or
// replaced, including by an atomic rename (an editor's save, the SSM
// push: write beside, then rename over). It watches the directory, since a
// watch on the file itself ends when the file is replaced. Bursts of
// events within debounce count as one change.
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
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != abs || ev.Op == fsnotify.Chmod {
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
