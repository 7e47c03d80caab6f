package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/egressd/egressd/test/lab"
)

// The hot paths' Go benchmarks (make bench), run once more after the lab
// so that BENCHMARKS.md has their figures from the same machine and day:
// per packet and per flow, what each costs and whether it allocates.
var microPackages = []string{"./pkg/classify", "./pkg/policy", "./pkg/engine", "./pkg/nfq", "./pkg/declog", "./pkg/resolve"}

const microBench = `^(BenchmarkParseClientHello|BenchmarkParseRequestHead|BenchmarkReassembly|BenchmarkTCPFlow|BenchmarkQUICFlow|BenchmarkQUICKeySetup|BenchmarkQUICWarmDatagram|BenchmarkDecide|BenchmarkFlow|BenchmarkPacketPath|BenchmarkLogStalled|BenchmarkLogFolded|BenchmarkShareAccounting|BenchmarkVerifyHit|BenchmarkCached)$`

// microResult is one benchmark's line.
type microResult struct {
	Name    string  `json:"name"`
	NsPerOp float64 `json:"ns_per_op"`
	BPerOp  int     `json:"bytes_per_op"`
	Allocs  int     `json:"allocs_per_op"`
	Why     string  `json:"why,omitempty"` // for an allocation: what it is
	Package string  `json:"package"`
}

// allocReasons say why a hot path allocates, by benchmark name prefix.
var allocReasons = []struct {
	prefix, why string
}{
	{"BenchmarkQUICFlow", "3 are crypto/aes and crypto/cipher key schedules, which cannot be keyed again in place; 1 is the name's string"},
	{"BenchmarkQUICKeySetup", "crypto/aes and crypto/cipher key schedules, which cannot be keyed again in place"},
	{"BenchmarkTCPFlow", "the name's string, once per flow: it outlives the packet's buffer (DNS verification off the packet path, the decision line)"},
	{"BenchmarkFlow", "the name's string, once per flow"},
	{"BenchmarkPacketPath", "the name's string, once per flow"},
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op.*?\s(\d+) B/op\s+(\d+) allocs/op`)

// runMicro runs the hot paths' benchmarks with go test.
func runMicro() ([]microResult, error) {
	root, err := lab.Root()
	if err != nil {
		return nil, err
	}
	args := append([]string{"test", "-run", "^$", "-bench", microBench, "-benchmem", "-benchtime", "200ms", "-timeout", "5m"}, microPackages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %v: %s", err, tail(out, 2000))
	}
	return parseMicro(out), nil
}

func parseMicro(out []byte) []microResult {
	var res []microResult
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/egressd/egressd/")
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.Atoi(m[3])
		a, _ := strconv.Atoi(m[4])
		r := microResult{Name: m[1], NsPerOp: ns, BPerOp: b, Allocs: a, Package: pkg}
		if a > 0 {
			for _, ar := range allocReasons {
				if strings.HasPrefix(r.Name, ar.prefix) {
					r.Why = ar.why
					break
				}
			}
			if r.Why == "" {
				r.Why = "NOT EXPLAINED: a hot path that allocates"
			}
		}
		res = append(res, r)
	}
	return res
}

// microTable writes the benchmarks as Markdown.
func microTable(w *bytes.Buffer, res []microResult) {
	w.WriteString("\n## Hot paths (make bench)\n\n")
	w.WriteString("The hot paths' Go benchmarks, run by the same `make bench-lab` after the lab (200 ms each). " +
		"Every per-packet path allocates nothing; a TLS or HTTP flow allocates once (the name's string, which must outlive the packet's buffer: " +
		"DNS verification runs off the packet path, and the decision line is written later); a QUIC flow four times " +
		"(three crypto/aes and crypto/cipher key schedules that cannot be re-keyed in place, and the name). " +
		"Each allocation test (`go test -run Allocs`, part of `make test`) fails if that grows.\n\n")
	rows := [][]string{}
	for _, r := range res {
		why := r.Why
		if r.Allocs == 0 {
			why = ""
		}
		rows = append(rows, []string{"`" + strings.TrimPrefix(r.Name, "Benchmark") + "`", r.Package,
			fmt.Sprintf("%.0f", r.NsPerOp), fmt.Sprint(r.BPerOp), fmt.Sprint(r.Allocs), why})
	}
	mdTable(w, []string{"benchmark", "package", "ns/op", "B/op", "allocs/op", "why it allocates"}, rows)
}
