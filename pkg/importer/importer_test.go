package importer

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/egressd/egressd/internal/golden"
	"github.com/egressd/egressd/pkg/policy"
)

var roles = map[string][]netip.Prefix{
	"payments": {netip.MustParsePrefix("10.0.2.0/24")},
	"webhooks": {netip.MustParsePrefix("10.0.3.0/24"), netip.MustParsePrefix("10.0.4.0/24")},
	"scanner":  {netip.MustParsePrefix("10.0.9.0/24")},
}

// imports are the inputs, written from each product's documented format,
// and the translation each must give.
var imports = []struct {
	file  string
	parse func(file string, data []byte) (*Result, error)
}{
	{"anf-allowlist.json", ANF},
	{"anf-denylist.json", ANF},
	{"anf-suricata.json", ANF},
	{"squid.conf", Squid},
	{"smokescreen.yaml", func(f string, d []byte) (*Result, error) { return Smokescreen(f, d, roles) }},
}

func translate(t *testing.T, file string, parse func(string, []byte) (*Result, error)) (*policy.Policy, string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	text, _, err := r.Policy(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("imported.yaml", text, policy.Options{})
	if err != nil {
		t.Fatalf("the translation does not compile: %v\n%s", err, text)
	}
	return p, string(text)
}

// TestImportGolden compares each translation with its golden file: every
// rule and entry with its source line, every note.
func TestImportGolden(t *testing.T) {
	for _, tc := range imports {
		t.Run(tc.file, func(t *testing.T) {
			_, got := translate(t, tc.file, tc.parse)
			golden.Check(t, filepath.Join("testdata", tc.file+".golden.yaml"), got)
		})
	}
}

// TestImportDecides: the translations decide flows as the source did,
// where egressd can.
func TestImportDecides(t *testing.T) {
	ip := netip.MustParseAddr
	named := func(src, name string, port uint16) policy.Query {
		return policy.Query{Src: ip(src), Dst: ip("203.0.113.10"), Port: port, Proto: policy.TCP, Inspected: true, Name: name}
	}
	for _, tc := range []struct {
		file    string
		q       policy.Query
		verdict policy.Verdict
		rule    string
	}{
		{"anf-allowlist.json", named("10.0.1.7", "api.github.com", 443), policy.Allow, "anf-egress-allow"},
		{"anf-allowlist.json", named("10.0.1.7", "github.com", 80), policy.Allow, "anf-egress-allow"},
		{"anf-allowlist.json", named("10.2.0.7", "github.com", 443), policy.Deny, "default"},     // not HOME_NET
		{"anf-allowlist.json", named("10.0.1.7", "evil.github.io", 443), policy.Deny, "default"}, // left out: a public suffix
		{"anf-denylist.json", named("10.0.1.7", "www.pastebin.com", 443), policy.Deny, "anf-anf-denylist"},
		{"squid.conf", named("10.0.1.7", "ftp.debian.org", 80), policy.Allow, "squid-http_access-allow-localnet-allowed_http"},
		{"squid.conf", named("10.0.1.7", "api.github.com", 443), policy.Allow, "squid-ssl_bump-splice-ci_runners-ci_sites"},
		{"squid.conf", named("10.0.2.7", "api.github.com", 443), policy.Deny, "default"},
		{"squid.conf", named("10.0.1.7", "pastebin.com", 80), policy.Deny, "squid-http_access-deny-banned"},
		{"squid.conf", policy.Query{Src: ip("10.0.3.3"), Dst: ip("198.51.100.5"), Port: 443, Proto: policy.TCP}, policy.Allow, "squid-http_access-allow-localnet-partner-Safe_ports"},
		{"squid.conf", policy.Query{Src: ip("10.0.3.3"), Dst: ip("198.51.100.5"), Port: 22, Proto: policy.TCP}, policy.Deny, "default"},
		{"smokescreen.yaml", named("10.0.2.7", "api.stripe.com", 443), policy.Allow, "smokescreen-payments"},
		{"smokescreen.yaml", named("10.0.2.7", "m.stripe.network", 443), policy.Allow, "smokescreen-payments"},
		{"smokescreen.yaml", named("10.0.2.7", "stripe.network", 443), policy.Deny, "default"}, // "*." is not the apex, in both
		{"smokescreen.yaml", named("10.0.3.7", "api.stripe.com", 443), policy.Deny, "default"},
		{"smokescreen.yaml", named("10.0.2.7", "pastebin.com", 443), policy.Deny, "smokescreen-global-deny"},
		{"smokescreen.yaml", named("10.0.7.7", "time.cloudflare.com", 443), policy.Allow, "smokescreen-default"},
		{"smokescreen.yaml", named("10.0.9.9", "anything.example", 443), policy.Allow, "smokescreen-scanner"},
		{"smokescreen.yaml", named("10.0.5.5", "sftp.partner.example", 443), policy.Deny, "default"}, // legacy-batch has no --role
	} {
		var parse func(string, []byte) (*Result, error)
		for _, im := range imports {
			if im.file == tc.file {
				parse = im.parse
			}
		}
		p, text := translate(t, tc.file, parse)
		d := p.Decide(tc.q)
		if d.Verdict != tc.verdict || d.Rule != tc.rule {
			t.Errorf("%s: %s %s:%d: %s by %s, want %s by %s\n%s", tc.file, tc.q.Src, tc.q.Name, tc.q.Port, d.Verdict, d.Rule, tc.verdict, tc.rule, text)
		}
	}
}

// TestImportErrors: input that is not the product's format is an error
// naming the file and, where there is one, the line.
func TestImportErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parse func(string, []byte) (*Result, error)
		input string
		want  string
	}{
		{"anf: not JSON", ANF, "{\n  \"RuleGroup\": [\n", "x:2: JSON: unexpected EOF"},
		{"anf: not a rule group", ANF, "{\"Firewall\": {}}", "x:1: no RuleGroup"},
		{"anf: a duplicate key", ANF, "{\"RuleGroup\": {}, \n\"RuleGroup\": {}}", `x:2: key "RuleGroup" appears twice`},
		{"anf: no rules type", ANF, "{\"RulesSource\": {\"RulesSourceList\": {\"Targets\": [\"a.example\"]}}}", "x:1: RulesSourceList has no GeneratedRulesType"},
		{"anf: a bad rules type", ANF, "{\"RulesSource\": {\"RulesSourceList\": {\n\"GeneratedRulesType\": \"MAYBE\"}}}", `x:2: GeneratedRulesType "MAYBE"`},
		{"smokescreen: not YAML", func(f string, d []byte) (*Result, error) { return Smokescreen(f, d, nil) }, "version: [v1\n", "x: yaml: line 1"},
		{"smokescreen: another version", func(f string, d []byte) (*Result, error) { return Smokescreen(f, d, nil) }, "version: v2\n", "x:1: not a Smokescreen ACL of version v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.parse("x", []byte(tc.input))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %v, want it to start with %q", err, tc.want)
			}
		})
	}
}

// fuzzImport is the property every importer holds: an error or a result,
// never a panic; a result's policy compiles, or Policy says why not.
func fuzzImport(f *testing.F, seeds []string, parse func(string, []byte) (*Result, error)) {
	for _, s := range seeds {
		data, err := os.ReadFile(filepath.Join("testdata", s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parse("f", data)
		if err != nil {
			return
		}
		text, _, err := r.Policy(policy.Options{})
		if err != nil {
			t.Fatalf("a translation that Policy cannot make compile: %v", err)
		}
		if _, err := policy.Parse("f.yaml", text, policy.Options{}); err != nil {
			t.Fatalf("Policy returned a policy that does not compile: %v\n%s", err, text)
		}
	})
}

func FuzzANF(f *testing.F) {
	// Seeds: an allow list with HOME_NET and names egressd refuses, a
	// deny list as a bare RuleGroup, Suricata rules.
	f.Add([]byte(`{"RulesSource":{"RulesSourceList":{"Targets":["*"],"TargetTypes":["TLS_SNI"],"GeneratedRulesType":"ALLOWLIST"}}}`)) // a match-all target
	f.Add([]byte(`{"RuleGroup":{"RulesSource":{"StatefulRules":[{"Action":"PASS"}]}}}`))                                              // 5-tuple rules
	fuzzImport(f, []string{"anf-allowlist.json", "anf-denylist.json", "anf-suricata.json"}, ANF)
}

func FuzzSquid(f *testing.F) {
	// Seeds: the documented example, a continuation, a redefined acl, an
	// include, a last line that allows.
	f.Add([]byte("acl a dstdomain .x.example \\\n  y.example\nacl a src 10.0.0.0/8\nhttp_access allow a\n"))
	f.Add([]byte("include /etc/squid/conf.d/*.conf\nacl n src 10.0.0.1-10.0.0.9\nhttp_access allow n\n"))
	fuzzImport(f, []string{"squid.conf"}, Squid)
}

func FuzzSmokescreen(f *testing.F) {
	// Seeds: the documented example with roles, aliases, a default open.
	f.Add([]byte("version: v1\nservices:\n  - &s {name: payments, action: enforce, allowed_domains: [a.example]}\n  - *s\n"))
	f.Add([]byte("version: v1\ndefault: {action: open}\n"))
	fuzzImport(f, []string{"smokescreen.yaml"}, func(f string, d []byte) (*Result, error) { return Smokescreen(f, d, roles) })
}

// TestUnprintableSource: what a source file holds beyond printable text
// (a C1 control, U+FFFE, a bidirectional override, invalid UTF-8, a
// carriage return), in a name or a note, leaves a policy that compiles and
// notes that print as one plain line. Found by FuzzSquid: a C1 control
// in a note's comment made the whole translation fail to parse.
func TestUnprintableSource(t *testing.T) {
	for _, odd := range []string{"\u0083", "\u009b31m", "\ufffe", "\u202e", "\xff", "\r"} {
		t.Run(fmt.Sprintf("%q", odd), func(t *testing.T) {
			conf := "acl a 0" + odd + "\nacl a 0\n" +
				"acl ok dstdomain .example.com" + odd + "\nhttp_access allow ok\n"
			r, err := Squid("squid.conf", []byte(conf))
			if err != nil {
				t.Fatal(err)
			}
			text, notes, err := r.Policy(policy.Options{})
			if err != nil {
				t.Fatalf("Policy: %v", err)
			}
			if _, err := policy.Parse("f.yaml", text, policy.Options{}); err != nil {
				t.Fatalf("the policy does not compile: %v\n%s", err, text)
			}
			if len(notes) == 0 {
				t.Fatal("no note for the redefined acl")
			}
			for _, n := range notes {
				if s := n.String(); strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) {
					t.Errorf("note %q holds an unprintable character", s)
				}
			}
		})
	}
}
