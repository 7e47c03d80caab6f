package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one problem in a policy file, at a line.
type Error struct {
	File string // the file's name as given to Load; may be empty
	Line int    // 1-based; 0 when the problem has no single line
	Msg  string // says what is wrong, the rule and field, and the fix when known
}

func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// ErrorList is every problem found in one file, in line order. A policy
// with any problem is refused whole.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Errors returns the list's errors (for errors.Is/As on each).
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// AsList returns the problems err carries: the list of a policy error, or
// err itself as a one-line list.
func AsList(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var e *Error
	if errors.As(err, &e) {
		return ErrorList{e}
	}
	return ErrorList{{Msg: err.Error()}}
}

// errs collects problems while a file is read.
type errs struct {
	file string
	list ErrorList
}

func (c *errs) add(line int, format string, args ...any) {
	c.list = append(c.list, &Error{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}
