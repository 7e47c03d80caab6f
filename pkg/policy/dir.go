package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A policy may be a directory: every *.yaml file in it (not in its
// subdirectories, not hidden) is one file of the policy, typically one per
// team, each with "version: 1", an optional "owner:", its rules and its
// tests. They are merged in file-name order into one policy: rule names
// are unique across the files, exactly one file sets the default, every
// problem is reported as file:line of the file that has it, and every
// file's tests run against the whole policy.
//
// The directory has one hash, the SHA-256 of its manifest: a line
// "HEX  NAME\n" per file in name order, HEX the file's own SHA-256. That
// is what `cd DIR && LC_ALL=C sha256sum -- *.yaml | sha256sum` computes,
// so a deploy script can compare it with what the daemon reports without
// egressd at hand.

// DirFiles lists the files of a policy directory, sorted by name: the
// regular *.yaml files directly in dir whose names do not start with ".".
func DirFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".yaml") {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, n)) // follows links, as the daemon reads them
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// loadDir reads, merges, validates and compiles a policy directory.
func loadDir(dir string, opts Options) (*Policy, error) {
	names, err := DirFiles(dir)
	if err != nil {
		return nil, &Error{File: dir, Msg: fmt.Sprintf("cannot read the policy directory: %v", err)}
	}
	if len(names) == 0 {
		return nil, &Error{File: dir, Msg: "the policy directory has no *.yaml files; put the policy in one or more (e.g. one per team)"}
	}
	merged := &Spec{}
	var manifest bytes.Buffer
	var list ErrorList
	total := 0
	var defaultAt string
	for _, n := range names {
		file := filepath.Join(dir, n)
		data, err := os.ReadFile(file)
		if err != nil {
			list = append(list, &Error{File: file, Msg: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		if total += len(data); total > maxPolicyBytes {
			return nil, &Error{File: dir, Msg: fmt.Sprintf("its files are larger than %d MiB together; a policy this size is a mistake", maxPolicyBytes>>20)}
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&manifest, "%s  %s\n", hex.EncodeToString(sum[:]), n)
		c := &errs{file: file}
		s := parseSpec(c, data, true)
		list = append(list, c.list...)
		if s == nil {
			continue
		}
		if s.Version.set && s.Version.s != "1" {
			list = append(list, &Error{File: file, Line: s.Version.line, Msg: fmt.Sprintf("version %q is not supported; this egressd reads version 1", s.Version.s)})
		}
		if s.Default.set {
			if defaultAt != "" {
				list = append(list, &Error{File: file, Line: s.defaultLine, Msg: fmt.Sprintf(
					"default is already set at %s; set it in one file of the directory (the owners' base file)", defaultAt)})
			} else {
				defaultAt = fmt.Sprintf("%s:%d", file, s.defaultLine)
				merged.Default, merged.defaultLine, merged.defaultFile = s.Default, s.defaultLine, file
			}
		}
		for _, r := range s.Rules {
			r.File, r.Owner = file, s.Owner.s
			merged.Rules = append(merged.Rules, r)
		}
		for _, t := range s.Tests {
			t.File = file
			merged.Tests = append(merged.Tests, t)
		}
	}
	merged.Version = value{s: "1", set: true}
	if len(list) > 0 {
		// The files that were read are still compiled, so that their
		// problems are reported too; their tests are not run, since
		// they may rest on the rules of a file that could not be read.
		merged.Tests = nil
		if _, err := Compile(dir, merged, opts); err != nil {
			list = append(list, AsList(err)...)
		}
		sortErrors(list)
		return nil, list
	}
	if !merged.Default.set {
		return nil, ErrorList{{File: dir, Msg: fmt.Sprintf(
			"no file sets the default; add \"default: deny\" (or allow) to one of them, e.g. %s", filepath.Join(dir, names[0]))}}
	}
	p, err := Compile(dir, merged, opts)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(manifest.Bytes())
	p.hash = hex.EncodeToString(sum[:])
	p.files = names
	return p, nil
}

// Files returns the names of a policy directory's files, in the order they
// were merged; nil for a policy read from one file.
func (p *Policy) Files() []string { return p.files }

// SpentFiles returns the files of a policy directory that have rules and
// none in force: every rule in them has expired (a break-glass file after
// its time). They change nothing and can be removed.
func (p *Policy) SpentFiles() []string {
	if p.files == nil {
		return nil
	}
	live, has := map[string]bool{}, map[string]bool{}
	for i := range p.all {
		f := p.all[i].file
		has[f] = true
		if p.pos[i] >= 0 {
			live[f] = true
		}
	}
	var out []string
	for _, n := range p.files {
		f := filepath.Join(p.file, n)
		if has[f] && !live[f] {
			out = append(out, f)
		}
	}
	return out
}
