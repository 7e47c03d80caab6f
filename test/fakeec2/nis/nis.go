// Package nis is a fake EC2 endpoint that answers DescribeNetworkInterfaces
// only, for the tests of egressd's workload sources (security groups and
// tags in a rule's from). It speaks the EC2 Query API as aws-sdk-go-v2's
// ec2 client does: a form POST with Action, Version and Filter.N.Name /
// Filter.N.Value.M, paged with MaxResults and NextToken, answered in XML.
// It keeps a list of interfaces the test sets, counts requests, and fails
// them with an EC2 error when told to.
//
// It is deliberately separate from the HA work's test/fakeec2 (branch ha),
// which fakes the EC2 calls of a failover; the two can be folded into one
// endpoint later.
package nis

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Interface is a network interface the fake knows.
type Interface struct {
	ID     string
	VPC    string
	IPs    []string // private IPv4 addresses, the first primary
	Groups []string
	Tags   map[string]string
}

// Server is the fake endpoint.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	ifaces   []Interface
	fail     string // an EC2 error code to answer with; "": answer
	requests int
	pageSize int
}

// New starts a fake endpoint; Close stops it.
func New() *Server {
	s := &Server{pageSize: 2}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Set replaces the interfaces.
func (s *Server) Set(ifaces ...Interface) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ifaces = slices.Clone(ifaces)
}

// Fail makes every request fail with the EC2 error code (e.g.
// "UnauthorizedOperation"); "" answers again.
func (s *Server) Fail(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = code
}

// Requests returns how many requests were served.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

type filter struct {
	name   string
	values []string
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		ec2Error(w, http.StatusBadRequest, "InvalidRequest", "want a form POST")
		return
	}
	if a := r.PostForm.Get("Action"); a != "DescribeNetworkInterfaces" {
		ec2Error(w, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("the action %s is not valid for this fake", a))
		return
	}
	if s.fail != "" {
		ec2Error(w, http.StatusForbidden, s.fail, "failing as the test asked")
		return
	}
	var filters []filter
	for n := 1; ; n++ {
		name := r.PostForm.Get(fmt.Sprintf("Filter.%d.Name", n))
		if name == "" {
			break
		}
		f := filter{name: name}
		for m := 1; ; m++ {
			v, ok := r.PostForm[fmt.Sprintf("Filter.%d.Value.%d", n, m)]
			if !ok {
				break
			}
			f.values = append(f.values, v[0])
		}
		filters = append(filters, f)
	}
	var match []Interface
	for _, ifc := range s.ifaces {
		ok := true
		for _, f := range filters {
			switch {
			case f.name == "group-id":
				ok = ok && slices.ContainsFunc(ifc.Groups, func(g string) bool { return slices.Contains(f.values, g) })
			case f.name == "vpc-id":
				ok = ok && slices.Contains(f.values, ifc.VPC)
			case strings.HasPrefix(f.name, "tag:"):
				v, has := ifc.Tags[strings.TrimPrefix(f.name, "tag:")]
				ok = ok && has && slices.Contains(f.values, v)
			default:
				ec2Error(w, http.StatusBadRequest, "InvalidParameterValue", "the filter "+f.name+" is not supported by this fake")
				return
			}
		}
		if ok {
			match = append(match, ifc)
		}
	}
	start, _ := strconv.Atoi(r.PostForm.Get("NextToken"))
	end := min(len(match), start+s.pageSize)
	resp := response{Xmlns: "http://ec2.amazonaws.com/doc/2016-11-15/", RequestID: fmt.Sprintf("req-%d", s.requests)}
	for _, ifc := range match[min(start, end):end] {
		it := item{ID: ifc.ID, VPC: ifc.VPC, Status: "in-use"}
		for i, ip := range ifc.IPs {
			if i == 0 {
				it.PrivateIP = ip
			}
			it.IPs = append(it.IPs, ipItem{IP: ip, Primary: i == 0})
		}
		for _, g := range ifc.Groups {
			it.Groups = append(it.Groups, groupItem{ID: g, Name: g})
		}
		keys := make([]string, 0, len(ifc.Tags))
		for k := range ifc.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			it.Tags = append(it.Tags, tagItem{Key: k, Value: ifc.Tags[k]})
		}
		resp.Items = append(resp.Items, it)
	}
	if end < len(match) {
		resp.NextToken = strconv.Itoa(end)
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(resp)
}

type response struct {
	XMLName   xml.Name `xml:"DescribeNetworkInterfacesResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	Items     []item   `xml:"networkInterfaceSet>item"`
	NextToken string   `xml:"nextToken,omitempty"`
}

type item struct {
	ID        string      `xml:"networkInterfaceId"`
	VPC       string      `xml:"vpcId"`
	Status    string      `xml:"status"`
	PrivateIP string      `xml:"privateIpAddress"`
	Groups    []groupItem `xml:"groupSet>item"`
	IPs       []ipItem    `xml:"privateIpAddressesSet>item"`
	Tags      []tagItem   `xml:"tagSet>item"`
}

type groupItem struct {
	ID   string `xml:"groupId"`
	Name string `xml:"groupName"`
}

type ipItem struct {
	IP      string `xml:"privateIpAddress"`
	Primary bool   `xml:"primary"`
}

type tagItem struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func ec2Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%s<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>fake</RequestID></Response>",
		xml.Header, code, msg)
}
