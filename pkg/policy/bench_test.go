package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// bigPolicy writes a policy of n domain rules (a mix of exact, "*." and "."
// entries, every fourth rule restricted to port 443) and c CIDR rules.
func bigPolicy(n, c int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\ndefault: deny\nrules:\n")
	kinds := []string{"", "*.", "."}
	for i := 0; i < n; i++ {
		ports := ""
		if i%4 == 0 {
			ports = ", ports: [443]"
		}
		action := "allow"
		if i%10 == 9 {
			action = "deny"
		}
		fmt.Fprintf(&b, "  - {name: d%d, domains: [\"%ssvc%d.tenant%d.example.com\"]%s, action: %s}\n", i, kinds[i%3], i, i%97, ports, action)
	}
	for i := 0; i < c; i++ {
		fmt.Fprintf(&b, "  - {name: c%d, cidrs: [10.%d.%d.0/24], action: allow}\n", i, (i>>8)&0xff, i&0xff)
	}
	return []byte(b.String())
}

func BenchmarkDecide(b *testing.B) {
	for _, size := range []struct {
		name           string
		domains, cidrs int
	}{
		{"domains=10", 10, 0},
		{"domains=1000", 1000, 0},
		{"domains=100000", 100000, 0},
		{"cidrs=100000", 0, 100000},
		{"domains=100000+cidrs=100000", 100000, 100000},
	} {
		p, err := Parse("bench.yaml", bigPolicy(size.domains, size.cidrs), Options{})
		if err != nil {
			b.Fatal(err)
		}
		queries := map[string]Query{
			// A name deep under a listed base: walks every suffix.
			"name-hit":  tlsQuery(fmt.Sprintf("a.b.svc%d.tenant%d.example.com", size.domains/2+1, (size.domains/2+1)%97)),
			"name-miss": tlsQuery("www.unlisted.example.net"),
			"cidr-hit":  {Src: client, Dst: netip.MustParseAddr(fmt.Sprintf("10.%d.%d.9", (size.cidrs/2>>8)&0xff, size.cidrs/2&0xff)), Port: 22, Proto: TCP},
			"syn":       {Src: client, Dst: server, Port: 443, Proto: TCP, Inspected: true, Pending: true},
		}
		for _, qn := range []string{"name-hit", "name-miss", "cidr-hit", "syn"} {
			q := queries[qn]
			b.Run(size.name+"/"+qn, func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					p.Decide(q)
				}
			})
		}
	}
}

// BenchmarkCompile measures loading a 100,000-rule policy from YAML bytes:
// parse, validate, index.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		data := bigPolicy(n, 0)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for range b.N {
				if _, err := Parse("bench.yaml", data, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
