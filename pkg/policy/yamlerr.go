package policy

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Where go.yaml.in/yaml/v3 says a syntax error is, and where it is.
//
// yaml/v3 gives one line per syntax error, "yaml: line N: problem", and it is
// often not the line to fix (v3.0.6, decode.go, (*parser).fail):
//
//   - It names the line of the error's context mark when there is one (where
//     the collection, scalar or key being read started), else of its problem
//     mark (where reading failed). A tab that breaks the indentation on line
//     5, below a rule's "name: a" on line 4, is reported on line 4: the tab
//     would have continued the plain scalar "a".
//   - Marks count lines from 0, and fail adds 1 only to scanner errors: a
//     parser error ("did not find expected key") names the line before its
//     mark's.
//   - An error whose marks are on the first line, and a reader error
//     (control characters, invalid UTF-8), name no line at all.
//
// So the line is found again: from the line the error names, made 1-based
// (the context, which is never after the problem), the first line L such
// that the file cut after L fails with the same problem. The parser fails
// when it reaches the offending token, so the file cut after the problem's
// line fails as the whole does, while a file cut earlier reads on (or fails
// otherwise). A binary search over the lines makes that a few dozen parses
// of a bad file at most.

// yamlParserProblems are the problems yaml/v3's parser raises (parserc.go);
// the others come from its scanner or reader. The line a parser problem
// names is 0-based.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

// yamlProblem splits a yaml/v3 error into the line it names (0 for none)
// and the problem.
func yamlProblem(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ":"); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n, strings.TrimSpace(tail)
			}
		}
	}
	return 0, msg
}

// yamlBreaks are the line breaks of YAML 1.1 (§5.4), CR LF before CR.
var yamlBreaks = [][]byte{[]byte("\r\n"), []byte("\r"), []byte("\n"), []byte("\u0085"), []byte("\u2028"), []byte("\u2029")}

// yamlLineEnds returns where each line of data ends, its break included, as
// yaml counts lines. The last line ends at len(data).
func yamlLineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); i++ {
		for _, br := range yamlBreaks {
			if bytes.HasPrefix(data[i:], br) {
				i += len(br) - 1
				ends = append(ends, i+1)
				break
			}
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	return ends
}

// yamlSyntaxError returns the line of a yaml/v3 syntax error in data and
// the message to show for it.
func yamlSyntaxError(err error, data []byte) (int, string) {
	line, problem := yamlProblem(err)
	switch {
	case line == 0:
		line = 1
	case yamlParserProblems[problem]:
		line++
	}
	ends := yamlLineEnds(data)
	if line > len(ends) {
		return line, "YAML syntax: " + problem
	}
	failsAt := func(i int) bool { // the file cut after line+i fails with problem
		var n yaml.Node
		err := yaml.NewDecoder(bytes.NewReader(data[:ends[line-1+i]])).Decode(&n)
		if err == nil {
			return false
		}
		_, p := yamlProblem(err)
		return p == problem
	}
	if i := sort.Search(len(ends)-line+1, failsAt); line+i <= len(ends) {
		line += i
	}
	msg := "YAML syntax: " + problem
	start := 0
	if line > 1 {
		start = ends[line-2]
	}
	text := data[start:ends[line-1]]
	indent := text[:len(text)-len(bytes.TrimLeft(text, " \t"))]
	if strings.Contains(problem, "tab character") ||
		problem == "found character that cannot start any token" && bytes.IndexByte(indent, '\t') >= 0 {
		msg += " (indent with spaces: YAML takes no tabs there)"
	}
	return line, msg
}
