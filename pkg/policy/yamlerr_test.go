package policy

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestYAMLSyntaxLines checks the line a YAML syntax error is reported on
// against the line to fix, for the mistakes people make in a policy. yaml
// says what yaml/v3 itself names, for the record (0: no line).
func TestYAMLSyntaxLines(t *testing.T) {
	rules := "version: 1\ndefault: deny\nrules:\n  - name: a\n    domains: [a.example]\n    action: allow\n  - name: b\n    domains: [b.example]\n"
	tests := []struct {
		name    string
		text    string
		yaml    int
		want    int
		problem string
	}{
		{"tab before a key below a scalar", "version: 1\ndefault: deny\nrules:\n  - name: a\n\tdomains: [a.example]\n    action: allow\n", 4, 5, "found a tab character that violates indentation"},
		{"tab before a key, CRLF", "version: 1\r\ndefault: deny\r\nrules:\r\n  - name: a\r\n\tdomains: [a.example]\r\n", 4, 5, "found a tab character that violates indentation"},
		{"tab starting a rule's line", rules + "\taction: allow\n", 9, 9, "found character that cannot start any token"},
		{"tab on the second line", "version: 1\n\tdefault: deny\n", 2, 2, "found a tab character that violates indentation"},
		{"tab on the first line", "\tversion: 1\n", 0, 1, "found character that cannot start any token"},
		{"tab in a block scalar", "version: 1\ndescription: |\n  x\n\ty\n", 2, 4, "found a tab character where an indentation space is expected"},
		{"unclosed flow sequence", "version: 1\ndefault: deny\nrules:\n  - name: a\n    domains: [example.com\n    action: allow\n", 4, 5, "did not find expected ',' or ']'"},
		{"unclosed flow sequence, rules after", rules[:len(rules)-1] + "\n    action: allow\n  - name: c\n    domains: [c.example\n    action: deny\n  - name: d\n", 10, 11, "did not find expected ',' or ']'"},
		{"key indented less", rules + "   action: allow\n", 3, 9, "did not find expected '-' indicator"},
		{"key indented more", rules + "      action: allow\n", 6, 9, "did not find expected key"},
		{"mapping after a list", "a:\n  - b\n  - c\n  - d\n  e: f\n", 1, 5, "did not find expected '-' indicator"},
		{"key indented more after a flow list over lines", rules + "    ports: [80,\n      443]\n      action: allow\n", 6, 11, "did not find expected key"},
		{"missing colon", rules + "    action allow\n  - name: c\n", 9, 9, "could not find expected ':'"},
		{"unclosed quote", rules + "    action: \"allow\n  - name: c\n", 9, 9, "found unexpected end of stream"},
		{"two colons", rules + "    action: allow: x\n", 9, 9, "mapping values are not allowed in this context"},
		{"control character", rules + "    action: al\x01low\n", 0, 9, "control characters are not allowed"},
		{"invalid UTF-8", rules + "    action: al\xfflow\n", 0, 9, "invalid leading UTF-8 octet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n yaml.Node
			err := yaml.NewDecoder(bytes.NewReader([]byte(tt.text))).Decode(&n)
			if err == nil {
				t.Fatal("the text parsed")
			}
			if line, _ := yamlProblem(err); line != tt.yaml {
				t.Errorf("yaml/v3 now names line %d, not %d (%v): check the notes in yamlerr.go", line, tt.yaml, err)
			}
			line, msg := yamlSyntaxError(err, []byte(tt.text))
			if line != tt.want || !strings.HasPrefix(msg, "YAML syntax: "+tt.problem) {
				t.Errorf("line %d: %q; want line %d: %q", line, msg, tt.want, tt.problem)
			}
			if tabs := strings.Contains(msg, "indent with spaces"); tabs != strings.Contains(tt.name, "tab") {
				t.Errorf("%q: the hint about tabs is there: %v", msg, tabs)
			}
		})
	}
}

func TestYAMLLineEnds(t *testing.T) {
	got := yamlLineEnds([]byte("a\nb\r\nc\rd\u2028e\u0085f"))
	want := []int{2, 5, 7, 11, 14, 15}
	if !slices.Equal(got, want) {
		t.Errorf("yamlLineEnds = %v, want %v", got, want)
	}
	if got := yamlLineEnds([]byte("a\n")); !slices.Equal(got, []int{2}) {
		t.Errorf("yamlLineEnds(\"a\\n\") = %v, want [2]", got)
	}
}
