package deploy_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

const (
	testInstance = "i-0123456789abcdef0"
	testENI      = "eni-0abc1234def567890"
	testMAC      = "02:aa:bb:cc:dd:ee"
)

// fakeIMDS answers the IMDSv2 calls egressd-eni.sh makes, and only with a
// token, as the real service does with http_tokens = "required".
type fakeIMDS struct {
	mu    sync.Mutex
	tag   string // the egressd-eni tag; "" is no tag
	calls []string
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		w.Write([]byte("tok"))
		return
	}
	if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	values := map[string]string{
		"/latest/meta-data/instance-id":                                                    testInstance,
		"/latest/meta-data/placement/region":                                               "eu-west-1",
		"/latest/meta-data/network/interfaces/macs/" + testMAC + "/subnet-ipv4-cidr-block": "198.18.7.0/24",
	}
	if f.tag != "" {
		values["/latest/meta-data/tags/instance/egressd-eni"] = f.tag
	}
	v, ok := values[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write([]byte(v))
}

// fakeAWSEC2 is an `aws` for egressd-eni.sh: describe-network-interfaces
// reports the state in $STATE (status, owner, and how many more times to
// report the ENI held by another instance); attach-network-interface
// "attaches" it by creating a link with its MAC address in the current
// network namespace, which then gets an address as DHCP would give it.
const fakeAWSEC2 = `#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"$STATE/calls"
case "$1 $2" in
"ec2 describe-network-interfaces")
	busy="$(cat "$STATE/busy")"
	if [ "$busy" -gt 0 ]; then
		echo $((busy - 1)) >"$STATE/busy"
		printf '02:AA:BB:CC:DD:EE\tin-use\ti-0dying000000000000\n'
	else
		printf '02:AA:BB:CC:DD:EE\t%s\t%s\n' "$(cat "$STATE/status")" "$(cat "$STATE/owner")"
	fi ;;
"ec2 attach-network-interface")
	args=" $* "
	[[ "$args" == *" --device-index 1 "* ]] || { echo "want --device-index 1" >&2; exit 1; }
	id="${args##* --instance-id }"; id="${id%% *}"
	ip link add eni9 address 02:aa:bb:cc:dd:ee type veth peer name eni9p
	ip link set eni9p up
	ip link set eni9 up
	ip addr add 198.18.7.20/24 dev eni9
	echo in-use >"$STATE/status"
	echo "$id" >"$STATE/owner" ;;
*) echo "fake aws: unexpected $*" >&2; exit 1 ;;
esac
`

func TestEgressdENI(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "curl")
	for _, tc := range []struct {
		name         string
		tag          string
		status       string // the ENI's status before the run
		owner        string
		busy         string // times it is reported held by a dying instance first
		tries        string
		wantOK       bool
		wantAttached bool
		wantOutput   string
	}{
		{name: "no tag: nothing to do", status: "available", owner: "None", busy: "0", wantOK: true, wantOutput: "nothing to attach"},
		{name: "attaches an available ENI", tag: testENI, status: "available", owner: "None", busy: "0", wantOK: true, wantAttached: true},
		{name: "waits for a dying instance to let go", tag: testENI, status: "available", owner: "None", busy: "2", wantOK: true, wantAttached: true,
			wantOutput: "is in-use (attached to i-0dying000000000000); waiting"},
		{name: "held for good", tag: testENI, status: "in-use", owner: "i-0other00000000000", busy: "0", tries: "3",
			wantOutput: "still not attached"},
		{name: "a tag that is no ENI id", tag: "eni-; rm -rf /", status: "available", owner: "None", busy: "0",
			wantOutput: "not an ENI id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t, "eni")
			imds := &fakeIMDS{tag: tc.tag}
			ln, err := ns.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: imds}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })

			dir := t.TempDir()
			bin, state := filepath.Join(dir, "bin"), filepath.Join(dir, "state")
			fakeBin(t, bin, "aws", fakeAWSEC2)
			writeFile(t, filepath.Join(state, "status"), tc.status+"\n", 0o644)
			writeFile(t, filepath.Join(state, "owner"), tc.owner+"\n", 0o644)
			writeFile(t, filepath.Join(state, "busy"), tc.busy+"\n", 0o644)
			writeFile(t, filepath.Join(state, "calls"), "", 0o644)
			out := filepath.Join(dir, "run/egressd/interfaces.env")
			tries := tc.tries
			if tries == "" {
				tries = "10"
			}
			r := inNS(t, ns.Name, []string{pathWith(bin), "STATE=" + state, "IMDS_ENDPOINT=http://" + ln.Addr().String(),
				"EGRESSD_ENI_OUT=" + out, "EGRESSD_ENI_TRIES=" + tries, "EGRESSD_ENI_SLEEP=0.1"},
				repoPath("deploy/libexec/egressd-eni.sh"))
			if ok := r.code == 0; ok != tc.wantOK {
				t.Fatalf("egressd-eni.sh: %v; want success %v", r, tc.wantOK)
			}
			if !strings.Contains(r.stdout+r.stderr, tc.wantOutput) {
				t.Errorf("output lacks %q: %v", tc.wantOutput, r)
			}
			calls := readFile(t, filepath.Join(state, "calls"))
			attachCalls := strings.Count(calls, "attach-network-interface")
			if !tc.wantAttached {
				if attachCalls != 0 && tc.tag == "" {
					t.Errorf("aws calls without a tag: %s", calls)
				}
				if r := runCmd(t, nil, "test", "-e", out); r.code == 0 {
					t.Errorf("%s written although nothing was attached", out)
				}
				return
			}
			if attachCalls != 1 || !strings.Contains(calls, "--instance-id "+testInstance) {
				t.Errorf("want one attach for %s, calls:\n%s", testInstance, calls)
			}
			if got, want := readFile(t, out), "PRIVATE_IF=eni9\nPUBLIC_IF=eni9\n"; got != want {
				t.Errorf("%s = %q, want %q", out, got, want)
			}
			route := inNS(t, ns.Name, nil, "ip", "-4", "route", "show", "default").stdout
			if !strings.Contains(route, "default via 198.18.7.1 dev eni9 metric 10") {
				t.Errorf("default route %q, want via the subnet's router 198.18.7.1 on eni9, metric 10", route)
			}

			// A second run (a reboot, or a restart of the unit) finds the ENI
			// attached to this instance and attaches nothing.
			r = inNS(t, ns.Name, []string{pathWith(bin), "STATE=" + state, "IMDS_ENDPOINT=http://" + ln.Addr().String(),
				"EGRESSD_ENI_OUT=" + out, "EGRESSD_ENI_TRIES=3", "EGRESSD_ENI_SLEEP=0.1"},
				repoPath("deploy/libexec/egressd-eni.sh"))
			if r.code != 0 {
				t.Fatalf("second run: %v", r)
			}
			if n := strings.Count(readFile(t, filepath.Join(state, "calls")), "attach-network-interface"); n != 1 {
				t.Errorf("a second run attached again (%d attach calls)", n)
			}
		})
	}
}
