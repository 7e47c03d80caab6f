// Package fakeec2 is an EC2 Query API endpoint for tests: the actions
// egressd ha calls (DescribeRouteTables, ReplaceRoute, DescribeAddresses,
// AssociateAddress, AssignPrivateIpAddresses), served over HTTP the way the
// real API answers them, so the AWS SDK is pointed at it with a custom base
// endpoint (BaseEndpoint) and static credentials.
//
// It keeps real state: route tables and their routes, network interfaces
// and their private addresses, Elastic IPs and their associations; a change
// is refused as EC2 would refuse it (an unknown ID, a route that does not
// exist, an address in use without AllowReassociation). A test can make it
// fail, delay or throttle any action (Fault), and can hook each change
// (OnRoute, OnAddress) to apply it to a lab for real: the change is in the
// state, and the hook has run, before the response is sent.
//
// Every request is recorded (Calls) with its time, action, parameters and
// outcome. Requests must carry AWS Signature V4 authorization naming
// AccessKey; the signature itself is not checked.
package fakeec2

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AccessKey is the access key ID requests must be signed with.
const AccessKey = "AKIDFAKEEC2TEST"

// SecretKey goes with AccessKey.
const SecretKey = "fake-ec2-secret-key"

// Throttled is EC2's throttling error code.
const Throttled = "RequestLimitExceeded"

// RouteTable is one route table: its tags and its routes, destination CIDR
// to network interface ID.
type RouteTable struct {
	ID     string
	Tags   map[string]string
	Routes map[string]string
}

// Address is an Elastic IP and its association ("" when not associated).
type Address struct {
	AllocationID, PublicIP    string
	AssociationID, ENI, Vaddr string // Vaddr: the private address it maps to
}

// Call is one request as the server saw it.
type Call struct {
	At     time.Time     // when it arrived
	Done   time.Time     // when it was answered (after any delay and hook)
	From   string        // the client's address (host:port)
	Path   string        // the URL path (a test may give each client its own base endpoint)
	Action string        // "ReplaceRoute"
	Params url.Values    // the request's parameters, Action and Version included
	Error  string        // the error code answered, "" on success
	Took   time.Duration // Done - At
}

// Fault makes requests fail or wait.
type Fault struct {
	Action string        // the action it applies to; "" every action
	Code   string        // error code to answer ("" only delays)
	Count  int           // requests it applies to; < 0 until cleared
	Delay  time.Duration // wait before answering (or failing)
}

// Server is the fake endpoint. The zero value is not usable; call New.
type Server struct {
	// OnRoute, if set, is called with each route change (route table,
	// destination, the network interface it now names) before it is
	// answered; an error fails the request with InternalError, state
	// unchanged.
	OnRoute func(table, dest, eni string) error
	// OnAddress, likewise, with each change of an Elastic IP's association
	// (eni "" when it is disassociated).
	OnAddress func(publicIP, eni, privateIP string) error

	mu     sync.Mutex
	tables map[string]*RouteTable
	order  []string // route table IDs in creation order
	enis   map[string][]string
	addrs  map[string]*Address
	faults []*Fault
	calls  []Call
	seq    int
}

// New returns a server with no resources.
func New() *Server {
	return &Server{tables: map[string]*RouteTable{}, enis: map[string][]string{}, addrs: map[string]*Address{}}
}

// AddENI adds a network interface with its private addresses, the primary
// first.
func (s *Server) AddENI(id string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enis[id] = append([]string(nil), addrs...)
}

// AddRouteTable adds a route table with tags and one route.
func (s *Server) AddRouteTable(id string, tags map[string]string, dest, eni string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[id] = &RouteTable{ID: id, Tags: tags, Routes: map[string]string{dest: eni}}
	s.order = append(s.order, id)
}

// AddAddress adds an Elastic IP associated with eni's address vaddr (eni
// "": not associated).
func (s *Server) AddAddress(alloc, publicIP, eni, vaddr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &Address{AllocationID: alloc, PublicIP: publicIP}
	if eni != "" {
		s.seq++
		a.AssociationID, a.ENI, a.Vaddr = fmt.Sprintf("eipassoc-%08d", s.seq), eni, vaddr
	}
	s.addrs[alloc] = a
}

// Route returns the network interface a route names ("" if none).
func (s *Server) Route(table, dest string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tables[table]; t != nil {
		return t.Routes[dest]
	}
	return ""
}

// Address returns an Elastic IP's state.
func (s *Server) Address(alloc string) Address {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.addrs[alloc]; a != nil {
		return *a
	}
	return Address{}
}

// ENIAddrs returns a network interface's private addresses.
func (s *Server) ENIAddrs(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.enis[id]...)
}

// Inject adds a fault; the newest fault that matches a request applies.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Clear removes every fault.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls returns the requests so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsOf returns the requests of one action (successful ones only if ok).
func (s *Server) CallsOf(action string, ok bool) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Action == action && (!ok || c.Error == "") {
			out = append(out, c)
		}
	}
	return out
}

// apiError is an error answered in EC2's format.
type apiError struct {
	status        int
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func fail(code, format string, a ...any) *apiError {
	status := http.StatusBadRequest
	switch code {
	case Throttled, "Unavailable":
		status = http.StatusServiceUnavailable
	case "InternalError":
		status = http.StatusInternalServerError
	case "UnauthorizedOperation", "AuthFailure":
		status = http.StatusForbidden
	}
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, a...)}
}

// ServeHTTP answers one Query API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if err := r.ParseForm(); err != nil {
		writeError(w, fail("MalformedQueryString", "%v", err))
		return
	}
	params := r.Form
	action := params.Get("Action")
	var resp any
	aerr := authorized(r)
	var f *Fault
	if aerr == nil {
		f = s.fault(action)
	}
	if f != nil && f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
		}
	}
	switch {
	case aerr != nil:
	case f != nil && f.Code != "":
		aerr = fail(f.Code, "injected fault")
	default:
		resp, aerr = s.handle(action, params)
	}
	c := Call{At: at, From: r.RemoteAddr, Path: r.URL.Path, Action: action, Params: params}
	if aerr != nil {
		c.Error = aerr.code
		writeError(w, aerr)
	} else {
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		w.Write([]byte(xml.Header))
		xml.NewEncoder(w).Encode(resp)
	}
	c.Done = time.Now()
	c.Took = c.Done.Sub(at)
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

// authorized checks that the request is signed with AccessKey.
func authorized(r *http.Request) *apiError {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "AWS4-HMAC-SHA256 ") || !strings.Contains(h, "Credential="+AccessKey+"/") {
		return fail("AuthFailure", "AWS was not able to validate the provided access credentials")
	}
	return nil
}

// fault takes the newest fault for action, counting it down.
func (s *Server) fault(action string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.faults) - 1; i >= 0; i-- {
		f := s.faults[i]
		if (f.Action != "" && f.Action != action) || f.Count == 0 {
			continue
		}
		if f.Count > 0 {
			f.Count--
		}
		cp := *f
		return &cp
	}
	return nil
}

func (s *Server) handle(action string, p url.Values) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch action {
	case "DescribeRouteTables":
		return s.describeRouteTables(p)
	case "ReplaceRoute":
		return s.replaceRoute(p)
	case "DescribeAddresses":
		return s.describeAddresses(p)
	case "AssociateAddress":
		return s.associateAddress(p)
	case "AssignPrivateIpAddresses":
		return s.assignPrivateIPs(p)
	}
	return nil, fail("InvalidAction", "The action %s is not valid for this web service.", action)
}

// list reads a Query API list: prefix.1, prefix.2, ...
func list(p url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := p[prefix+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v...)
	}
}

func (s *Server) requestID() string {
	s.seq++
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", s.seq)
}

type tagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type routeXML struct {
	Destination string `xml:"destinationCidrBlock"`
	ENI         string `xml:"networkInterfaceId"`
	State       string `xml:"state"`
	Origin      string `xml:"origin"`
}

type routeTableXML struct {
	ID     string     `xml:"routeTableId"`
	VPC    string     `xml:"vpcId"`
	Routes []routeXML `xml:"routeSet>item"`
	Tags   []tagXML   `xml:"tagSet>item"`
}

type describeRouteTablesXML struct {
	XMLName   xml.Name        `xml:"DescribeRouteTablesResponse"`
	Xmlns     string          `xml:"xmlns,attr"`
	RequestID string          `xml:"requestId"`
	Tables    []routeTableXML `xml:"routeTableSet>item"`
}

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

func (s *Server) describeRouteTables(p url.Values) (any, *apiError) {
	ids := list(p, "RouteTableId")
	for _, id := range ids {
		if s.tables[id] == nil {
			return nil, fail("InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", id)
		}
	}
	type filter struct {
		name   string
		values []string
	}
	var filters []filter
	for i := 1; ; i++ {
		k := "Filter." + strconv.Itoa(i)
		name := p.Get(k + ".Name")
		if name == "" {
			break
		}
		if name != "route-table-id" && !strings.HasPrefix(name, "tag:") {
			return nil, fail("InvalidParameterValue", "The filter '%s' is invalid", name)
		}
		filters = append(filters, filter{name, list(p, k+".Value")})
	}
	out := describeRouteTablesXML{Xmlns: xmlns, RequestID: s.requestID()}
	for _, id := range s.order {
		t := s.tables[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		match := true
		for _, f := range filters {
			v := id
			if key, ok := strings.CutPrefix(f.name, "tag:"); ok {
				var has bool
				if v, has = t.Tags[key]; !has {
					match = false
					break
				}
			}
			match = match && slices.Contains(f.values, v)
		}
		if !match {
			continue
		}
		x := routeTableXML{ID: id, VPC: "vpc-fake"}
		for _, dest := range sortedKeys(t.Routes) {
			x.Routes = append(x.Routes, routeXML{Destination: dest, ENI: t.Routes[dest], State: "active", Origin: "CreateRoute"})
		}
		for _, k := range sortedKeys(t.Tags) {
			x.Tags = append(x.Tags, tagXML{k, t.Tags[k]})
		}
		out.Tables = append(out.Tables, x)
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func noENI(id string) *apiError {
	return fail("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

type returnXML struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
	Return    bool   `xml:"return"`
}

func (s *Server) replaceRoute(p url.Values) (any, *apiError) {
	id, dest, eni := p.Get("RouteTableId"), p.Get("DestinationCidrBlock"), p.Get("NetworkInterfaceId")
	t := s.tables[id]
	switch {
	case t == nil:
		return nil, fail("InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", id)
	case eni == "":
		return nil, fail("InvalidParameterCombination", "this fake takes only NetworkInterfaceId as a target")
	case s.enis[eni] == nil:
		return nil, noENI(eni)
	}
	if _, ok := t.Routes[dest]; !ok {
		return nil, fail("InvalidRoute.NotFound", "no route with destination-cidr-block %s in route table %s", dest, id)
	}
	if s.OnRoute != nil {
		if err := s.OnRoute(id, dest, eni); err != nil {
			return nil, fail("InternalError", "applying the route: %v", err)
		}
	}
	t.Routes[dest] = eni
	return returnXML{XMLName: xml.Name{Local: "ReplaceRouteResponse"}, Xmlns: xmlns, RequestID: s.requestID(), Return: true}, nil
}

type addressXML struct {
	PublicIP      string `xml:"publicIp"`
	AllocationID  string `xml:"allocationId"`
	Domain        string `xml:"domain"`
	AssociationID string `xml:"associationId,omitempty"`
	ENI           string `xml:"networkInterfaceId,omitempty"`
	PrivateIP     string `xml:"privateIpAddress,omitempty"`
}

type describeAddressesXML struct {
	XMLName   xml.Name     `xml:"DescribeAddressesResponse"`
	Xmlns     string       `xml:"xmlns,attr"`
	RequestID string       `xml:"requestId"`
	Addresses []addressXML `xml:"addressesSet>item"`
}

func (s *Server) describeAddresses(p url.Values) (any, *apiError) {
	ids := list(p, "AllocationId")
	if len(ids) == 0 {
		for id := range s.addrs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
	}
	out := describeAddressesXML{Xmlns: xmlns, RequestID: s.requestID()}
	for _, id := range ids {
		a := s.addrs[id]
		if a == nil {
			return nil, fail("InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", id)
		}
		out.Addresses = append(out.Addresses, addressXML{PublicIP: a.PublicIP, AllocationID: id, Domain: "vpc",
			AssociationID: a.AssociationID, ENI: a.ENI, PrivateIP: a.Vaddr})
	}
	return out, nil
}

type associateXML struct {
	XMLName       xml.Name `xml:"AssociateAddressResponse"`
	Xmlns         string   `xml:"xmlns,attr"`
	RequestID     string   `xml:"requestId"`
	Return        bool     `xml:"return"`
	AssociationID string   `xml:"associationId"`
}

func (s *Server) associateAddress(p url.Values) (any, *apiError) {
	id, eni, vaddr := p.Get("AllocationId"), p.Get("NetworkInterfaceId"), p.Get("PrivateIpAddress")
	a := s.addrs[id]
	switch {
	case a == nil:
		return nil, fail("InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", id)
	case s.enis[eni] == nil:
		return nil, noENI(eni)
	}
	if vaddr == "" {
		vaddr = s.enis[eni][0]
	}
	if !slices.Contains(s.enis[eni], vaddr) {
		return nil, fail("InvalidParameterValue", "The private IP address %s is not on network interface %s", vaddr, eni)
	}
	if a.ENI != "" && (a.ENI != eni || a.Vaddr != vaddr) && p.Get("AllowReassociation") != "true" {
		return nil, fail("Resource.AlreadyAssociated", "resource %s is already associated with associate-id %s", id, a.AssociationID)
	}
	if err := s.associate(a, eni, vaddr); err != nil {
		return nil, err
	}
	return associateXML{Xmlns: xmlns, RequestID: s.requestID(), Return: true, AssociationID: a.AssociationID}, nil
}

// associate moves an Elastic IP to (eni, vaddr), through the hook.
func (s *Server) associate(a *Address, eni, vaddr string) *apiError {
	if s.OnAddress != nil && (a.ENI != eni || a.Vaddr != vaddr) {
		if err := s.OnAddress(a.PublicIP, eni, vaddr); err != nil {
			return fail("InternalError", "applying the association: %v", err)
		}
	}
	s.seq++
	a.AssociationID, a.ENI, a.Vaddr = fmt.Sprintf("eipassoc-%08d", s.seq), eni, vaddr
	return nil
}

type assignXML struct {
	XMLName   xml.Name `xml:"AssignPrivateIpAddressesResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	ENI       string   `xml:"networkInterfaceId"`
	Assigned  []struct {
		Addr string `xml:"privateIpAddress"`
	} `xml:"assignedPrivateIpAddressesSet>item"`
}

// assignPrivateIPs moves secondary addresses to an interface. As on EC2, an
// Elastic IP associated with a moved address moves with it.
func (s *Server) assignPrivateIPs(p url.Values) (any, *apiError) {
	eni := p.Get("NetworkInterfaceId")
	if s.enis[eni] == nil {
		return nil, noENI(eni)
	}
	want := list(p, "PrivateIpAddress")
	if len(want) == 0 {
		return nil, fail("MissingParameter", "this fake takes only explicit PrivateIpAddress lists")
	}
	for _, ip := range want {
		for other, ips := range s.enis {
			if other == eni || !slices.Contains(ips, ip) {
				continue
			}
			if ips[0] == ip {
				return nil, fail("InvalidParameterValue", "%s is the primary address of %s", ip, other)
			}
			if p.Get("AllowReassignment") != "true" {
				return nil, fail("PrivateIpAddressInUse", "Some of the specified addresses are already assigned: %s", ip)
			}
		}
	}
	out := assignXML{Xmlns: xmlns, RequestID: s.requestID(), ENI: eni}
	for _, ip := range want {
		for _, a := range s.addrs {
			if a.Vaddr == ip && a.ENI != eni {
				if err := s.associate(a, eni, ip); err != nil {
					return nil, err
				}
			}
		}
		for other, ips := range s.enis {
			if other != eni {
				s.enis[other] = slices.DeleteFunc(ips, func(x string) bool { return x == ip })
			}
		}
		if !slices.Contains(s.enis[eni], ip) {
			s.enis[eni] = append(s.enis[eni], ip)
		}
		out.Assigned = append(out.Assigned, struct {
			Addr string `xml:"privateIpAddress"`
		}{ip})
	}
	return out, nil
}

type errorXML struct {
	XMLName xml.Name `xml:"Response"`
	Errors  []struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Errors>Error"`
	RequestID string `xml:"RequestID"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.status)
	x := errorXML{RequestID: "00000000-0000-4000-8000-ffffffffffff"}
	x.Errors = append(x.Errors, struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}{e.code, e.message})
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(x)
}
