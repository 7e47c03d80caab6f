package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

// hclConfig is every top-level block of a directory's HCL files.
type hclConfig struct {
	blocks []*hclsyntax.Block
	files  map[string]*hclsyntax.Body
}

// parseHCLDir parses every file in dir whose name ends in ext, failing the
// test on any syntax error.
func parseHCLDir(t *testing.T, dir, ext string) *hclConfig {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil || len(names) == 0 {
		t.Fatalf("no %s files in %s (%v)", ext, dir, err)
	}
	p := hclparse.NewParser()
	c := &hclConfig{files: map[string]*hclsyntax.Body{}}
	for _, n := range names {
		f, diags := p.ParseHCLFile(n)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", n, diags.Error())
		}
		body := f.Body.(*hclsyntax.Body)
		c.files[filepath.Base(n)] = body
		c.blocks = append(c.blocks, body.Blocks...)
	}
	return c
}

// find returns the top-level blocks of a type whose labels start with labels.
func (c *hclConfig) find(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range c.blocks {
		if b.Type == typ && len(b.Labels) >= len(labels) && slices.Equal(b.Labels[:len(labels)], labels) {
			out = append(out, b)
		}
	}
	return out
}

// one is the single block of a type and labels; it fails the test otherwise.
func (c *hclConfig) one(t *testing.T, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := c.find(typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("want one %s %q block, found %d", typ, labels, len(bs))
	}
	return bs[0]
}

// nested is the single nested block of a type within b.
func nested(t *testing.T, b *hclsyntax.Block, typ string) *hclsyntax.Block {
	t.Helper()
	var out []*hclsyntax.Block
	for _, n := range b.Body.Blocks {
		if n.Type == typ {
			out = append(out, n)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%s %q: want one %s block, found %d", b.Type, b.Labels, typ, len(out))
	}
	return out[0]
}

// literal evaluates an attribute that must be a constant.
func literal(t *testing.T, b *hclsyntax.Block, name string) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %q has no %s", b.Type, b.Labels, name)
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s %q: %s is not a constant: %s", b.Type, b.Labels, name, diags.Error())
	}
	return v
}

// refs are the references (var.x, aws_x.y, ...) in an attribute, as
// dotted strings of their first two or three names.
func refs(b *hclsyntax.Block, name string) []string {
	a, ok := b.Body.Attributes[name]
	if !ok {
		return nil
	}
	var out []string
	for _, tr := range a.Expr.Variables() {
		out = append(out, traversalName(tr))
	}
	return out
}

// traversalName renders a traversal's root and attribute steps (not indexes).
func traversalName(tr hcl.Traversal) string {
	parts := []string{tr.RootName()}
	for _, s := range tr[1:] {
		if a, ok := s.(hcl.TraverseAttr); ok {
			parts = append(parts, a.Name)
		} else {
			break
		}
	}
	return strings.Join(parts, ".")
}

// allTraversals walks every expression of every block.
func (c *hclConfig) allTraversals() []hcl.Traversal {
	var out []hcl.Traversal
	var walkBody func(*hclsyntax.Body)
	walkBody = func(b *hclsyntax.Body) {
		for name, a := range b.Attributes {
			if name == "ignore_changes" {
				continue // a lifecycle's attribute names, not references
			}
			out = append(out, a.Expr.Variables()...)
		}
		for _, n := range b.Blocks {
			walkBody(n.Body)
		}
	}
	for _, b := range c.blocks {
		if b.Type == "variable" {
			// A variable's type (string, list(...)) is no reference.
			for name, a := range b.Body.Attributes {
				if name != "type" {
					out = append(out, a.Expr.Variables()...)
				}
			}
			continue
		}
		walkBody(b.Body)
	}
	return out
}

// checkVariables: every variable has a type and a description, is used,
// and every var.X used is declared.
func checkVariables(t *testing.T, c *hclConfig) map[string]*hclsyntax.Block {
	t.Helper()
	vars := map[string]*hclsyntax.Block{}
	for _, b := range c.find("variable") {
		vars[b.Labels[0]] = b
		for _, attr := range []string{"type", "description"} {
			if _, ok := b.Body.Attributes[attr]; !ok {
				t.Errorf("variable %q has no %s", b.Labels[0], attr)
			}
		}
	}
	used := map[string]bool{}
	for _, tr := range c.allTraversals() {
		if tr.RootName() != "var" || len(tr) < 2 {
			continue
		}
		name := tr[1].(hcl.TraverseAttr).Name
		used[name] = true
		if vars[name] == nil {
			t.Errorf("var.%s is used but not declared", name)
		}
	}
	for name := range vars {
		if !used[name] {
			t.Errorf("variable %q is declared but never used", name)
		}
	}
	return vars
}

func TestTerraformExample(t *testing.T) {
	dir := repoPath("deploy/terraform")
	c := parseHCLDir(t, dir, ".tf")
	vars := checkVariables(t, c)
	for _, v := range []string{"vpc_id", "zones", "instance_type", "ami_id", "policy_file", "policy_parameter_name"} {
		if vars[v] == nil {
			t.Errorf("no variable %q", v)
		}
	}

	// Every reference names something declared.
	declared := map[string]bool{}
	for _, b := range c.blocks {
		switch b.Type {
		case "resource":
			declared[b.Labels[0]+"."+b.Labels[1]] = true
		case "data":
			declared["data."+b.Labels[0]+"."+b.Labels[1]] = true
		case "locals":
			for name := range b.Body.Attributes {
				declared["local."+name] = true
			}
		}
	}
	for _, tr := range c.allTraversals() {
		name := traversalName(tr)
		root := tr.RootName()
		switch {
		case root == "var" || root == "each" || root == "count" || root == "path" || root == "self":
		case root == "local":
			if !declared[strings.Join(strings.Split(name, ".")[:2], ".")] {
				t.Errorf("%s is used but no local declares it", name)
			}
		case root == "data":
			if p := strings.Split(name, "."); len(p) < 3 || !declared[strings.Join(p[:3], ".")] {
				t.Errorf("%s is used but not declared", name)
			}
		default:
			if p := strings.Split(name, "."); len(p) < 2 || !declared[strings.Join(p[:2], ".")] {
				t.Errorf("%s is used but no resource declares it", name)
			}
		}
	}

	// The NAT wiring.
	eni := c.one(t, "resource", "aws_network_interface", "nat")
	if v := literal(t, eni, "source_dest_check"); !v.RawEquals(cty.False) {
		t.Errorf("aws_network_interface.nat: source_dest_check = %#v, want false", v)
	}
	route := c.one(t, "resource", "aws_route", "default_via_nat")
	if v := literal(t, route, "destination_cidr_block"); !v.RawEquals(cty.StringVal("0.0.0.0/0")) {
		t.Errorf("aws_route: destination %#v, want 0.0.0.0/0", v)
	}
	if r := refs(route, "network_interface_id"); !slices.Contains(r, "aws_network_interface.nat") {
		t.Errorf("aws_route: network_interface_id refers to %v, want aws_network_interface.nat", r)
	}
	if r := refs(c.one(t, "resource", "aws_eip", "nat"), "network_interface"); !slices.Contains(r, "aws_network_interface.nat") {
		t.Errorf("aws_eip: network_interface refers to %v, want aws_network_interface.nat", r)
	}

	lt := c.one(t, "resource", "aws_launch_template", "nat")
	md := nested(t, lt, "metadata_options")
	for attr, want := range map[string]string{"http_tokens": "required", "http_endpoint": "enabled", "instance_metadata_tags": "enabled"} {
		if v := literal(t, md, attr); !v.RawEquals(cty.StringVal(want)) {
			t.Errorf("launch template metadata_options.%s = %#v, want %q", attr, v, want)
		}
	}
	if r := refs(nested(t, lt, "iam_instance_profile"), "arn"); !slices.Contains(r, "aws_iam_instance_profile.nat.arn") {
		t.Errorf("launch template instance profile refers to %v", r)
	}

	asg := c.one(t, "resource", "aws_autoscaling_group", "nat")
	for _, attr := range []string{"min_size", "max_size", "desired_capacity"} {
		if v := literal(t, asg, attr); !v.RawEquals(cty.NumberIntVal(1)) {
			t.Errorf("aws_autoscaling_group.nat: %s = %#v, want 1 (a group of one per AZ)", attr, v)
		}
	}
	if _, ok := asg.Body.Attributes["for_each"]; !ok {
		t.Error("aws_autoscaling_group.nat has no for_each: want one group per AZ")
	}
	var eniTag bool
	for _, tag := range asg.Body.Blocks {
		if tag.Type == "tag" && literal(t, tag, "key").RawEquals(cty.StringVal("egressd-eni")) {
			eniTag = slices.Contains(refs(tag, "value"), "aws_network_interface.nat") &&
				literal(t, tag, "propagate_at_launch").RawEquals(cty.True)
		}
	}
	if !eniTag {
		t.Error("the auto-scaling group does not tag its instances egressd-eni = the AZ's ENI (egressd-eni.service reads it)")
	}

	// The role: SSM, CloudWatch logs, attaching the ENI, reading the policy.
	c.one(t, "resource", "aws_iam_role", "nat")
	c.one(t, "resource", "aws_iam_instance_profile", "nat")
	c.one(t, "resource", "aws_security_group", "nat")
	if a := c.one(t, "resource", "aws_iam_role_policy_attachment", "ssm_core"); !strings.Contains(exprText(t, dir, a, "policy_arn"), "AmazonSSMManagedInstanceCore") {
		t.Error("the role lacks AmazonSSMManagedInstanceCore")
	}
	var actions []string
	for _, st := range c.one(t, "data", "aws_iam_policy_document", "nat").Body.Blocks {
		if st.Type == "statement" {
			for _, v := range literal(t, st, "actions").AsValueSlice() {
				actions = append(actions, v.AsString())
			}
		}
	}
	for _, a := range []string{"ec2:AttachNetworkInterface", "ec2:DescribeNetworkInterfaces", "ssm:GetParameter", "logs:PutLogEvents", "logs:CreateLogStream"} {
		if !slices.Contains(actions, a) {
			t.Errorf("the instance policy lacks %s (has %v)", a, actions)
		}
	}

	// The push: the association runs the document with parameters it has.
	doc := loadSSMDoc(t)
	assoc := c.one(t, "resource", "aws_ssm_association", "push_policy")
	if r := refs(assoc, "name"); !slices.Contains(r, "aws_ssm_document.push_policy.name") {
		t.Errorf("the association runs %v, want aws_ssm_document.push_policy", r)
	}
	params, ok := assoc.Body.Attributes["parameters"].Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatal("the association's parameters are not an object")
	}
	var names []string
	for _, item := range params.Items {
		k, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("parameter name: %s", diags.Error())
		}
		names = append(names, k.AsString())
		if _, ok := doc.Parameters[k.AsString()]; !ok {
			t.Errorf("the association passes %s, which the SSM document does not have", k.AsString())
		}
		if k.AsString() == "PolicySource" {
			var r []string
			for _, tr := range item.ValueExpr.Variables() {
				r = append(r, traversalName(tr))
			}
			if !slices.Contains(r, "aws_ssm_parameter.policy.name") || !slices.Contains(r, "aws_ssm_parameter.policy.version") {
				t.Errorf("PolicySource refers to %v, want the parameter's name and version", r)
			}
		}
	}
	if !slices.Contains(names, "PolicySource") {
		t.Error("the association does not pass PolicySource")
	}
	if got := exprText(t, dir, c.one(t, "resource", "aws_ssm_document", "push_policy"), "content"); !strings.Contains(got, "local.ssm_document_file") {
		t.Errorf("the SSM document's content is %s, want file(local.ssm_document_file)", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "../ssm/egressd-push-policy.json")); err != nil {
		t.Errorf("the default SSM document path: %v", err)
	}

	// The user data template uses only what templatefile passes it.
	tpl := readFile(t, filepath.Join(dir, "user-data.sh.tftpl"))
	te, diags := hclsyntax.ParseTemplate([]byte(tpl), "user-data.sh.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("user-data.sh.tftpl: %s", diags.Error())
	}
	for _, tr := range te.Variables() {
		if tr.RootName() != "log_group" {
			t.Errorf("user-data.sh.tftpl uses ${%s}, which templatefile does not pass", tr.RootName())
		}
	}
	if got := exprText(t, dir, lt, "user_data"); !strings.Contains(got, `/user-data.sh.tftpl"`) || !strings.Contains(got, "log_group") {
		t.Errorf("the launch template's user data is %s", got)
	}

	for _, o := range c.find("output") {
		if _, ok := o.Body.Attributes["description"]; !ok {
			t.Errorf("output %q has no description", o.Labels[0])
		}
	}
	for _, o := range []string{"egress_public_ips", "nat_eni_ids", "ssm_document_name", "policy_parameter_name"} {
		c.one(t, "output", o)
	}

	// The example tfvars sets declared variables, and every variable
	// without a default.
	f, d := hclparse.NewParser().ParseHCLFile(filepath.Join(dir, "terraform.tfvars.example"))
	if d.HasErrors() {
		t.Fatalf("terraform.tfvars.example: %s", d.Error())
	}
	set := map[string]bool{}
	for name := range f.Body.(*hclsyntax.Body).Attributes {
		set[name] = true
		if vars[name] == nil {
			t.Errorf("terraform.tfvars.example sets %s, which is no variable", name)
		}
	}
	for name, b := range vars {
		if _, ok := b.Body.Attributes["default"]; !ok && !set[name] {
			t.Errorf("terraform.tfvars.example does not set the required variable %s", name)
		}
	}
}

// exprText is an attribute's source text.
func exprText(t *testing.T, dir string, b *hclsyntax.Block, name string) string {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %q has no %s", b.Type, b.Labels, name)
	}
	r := a.Expr.Range()
	src := readFile(t, filepath.Join(dir, filepath.Base(r.Filename)))
	return src[r.Start.Byte:r.End.Byte]
}

func TestPackerTemplate(t *testing.T) {
	dir := repoPath("packer")
	c := parseHCLDir(t, dir, ".pkr.hcl")
	vars := checkVariables(t, c)
	for _, v := range []string{"region", "version", "instance_type_arm64", "instance_type_x86_64", "subnet_id"} {
		if vars[v] == nil {
			t.Errorf("no variable %q", v)
		}
	}
	base := c.one(t, "source", "amazon-ebs", "al2023")
	if v := literal(t, nested(t, base, "metadata_options"), "http_tokens"); !v.RawEquals(cty.StringVal("required")) {
		t.Errorf("metadata_options.http_tokens = %#v, want \"required\" (IMDSv2 only)", v)
	}
	build := c.one(t, "build")
	named := map[string]*hclsyntax.Block{}
	for _, b := range build.Body.Blocks {
		if b.Type == "source" {
			if b.Labels[0] != "source.amazon-ebs.al2023" {
				t.Errorf("build source %q, want source.amazon-ebs.al2023", b.Labels[0])
			}
			named[literal(t, b, "name").AsString()] = b
		}
	}
	if len(named) != 2 {
		t.Errorf("build sources %v, want arm64 and x86_64", named)
	}
	for _, arch := range []string{"arm64", "x86_64"} {
		src, ok := named[arch]
		if !ok {
			t.Errorf("no build source named %s", arch)
			continue
		}
		f := nested(t, src, "source_ami_filter")
		if v := literal(t, f, "owners"); !v.Equals(cty.TupleVal([]cty.Value{cty.StringVal("amazon")})).True() {
			t.Errorf("%s: owners = %#v, want [\"amazon\"]", arch, v)
		}
		if v := literal(t, f, "most_recent"); !v.RawEquals(cty.True) {
			t.Errorf("%s: most_recent = %#v, want true", arch, v)
		}
		filters := literal(t, f, "filters")
		if name := filters.GetAttr("name").AsString(); !strings.HasPrefix(name, "al2023-ami-minimal-") || !strings.HasSuffix(name, arch) {
			t.Errorf("%s: AMI name filter %q, want the AL2023 minimal images for %s", arch, name, arch)
		}
		if a := filters.GetAttr("architecture").AsString(); a != arch {
			t.Errorf("%s: architecture filter %q", arch, a)
		}
		if r := refs(src, "instance_type"); !slices.Contains(r, "var.instance_type_"+arch) {
			t.Errorf("%s: instance_type refers to %v", arch, r)
		}
	}
	var scripts []string
	for _, p := range build.Body.Blocks {
		if p.Type == "provisioner" && p.Labels[0] == "shell" {
			if _, ok := p.Body.Attributes["script"]; ok {
				scripts = append(scripts, exprText(t, dir, p, "script"))
			}
		}
	}
	if diff := cmp.Diff([]string{`"${path.root}/provision.sh"`}, scripts); diff != "" {
		t.Errorf("provisioning scripts (-want +got):\n%s", diff)
	}
	// The plugin requirement, in its own file that the offline check leaves out.
	plug := c.files["plugins.pkr.hcl"]
	if plug == nil || len(plug.Blocks) != 1 || plug.Blocks[0].Type != "packer" {
		t.Fatal("plugins.pkr.hcl must hold the packer block alone")
	}
	req := nested(t, plug.Blocks[0], "required_plugins")
	if v := literal(t, req, "amazon"); v.GetAttr("source").AsString() != "github.com/hashicorp/amazon" {
		t.Errorf("required amazon plugin source %#v", v)
	}
	for name, body := range c.files {
		if name != "plugins.pkr.hcl" {
			for _, b := range body.Blocks {
				if b.Type == "packer" {
					t.Errorf("%s has a packer block: Debian's packer 1.6.6 rejects required_plugins; keep it in plugins.pkr.hcl", name)
				}
			}
		}
	}
}

// metadataOptions matches a metadata_options block of the Packer template.
var metadataOptions = regexp.MustCompile(`(?s)\n  metadata_options \{\n.*?\n  \}\n`)

// TestPackerValidate runs the real packer (Debian's 1.6.6) on the template,
// offline, in a network namespace with no route anywhere: fmt -check,
// validate -syntax-only, and a full validate of everything but the
// metadata_options block, which 1.6.6's amazon-ebs predates (the plugin
// that plugins.pkr.hcl requires has them; TestPackerTemplate checks them).
func TestPackerValidate(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "packer", "ip")
	ns := netnstest.New(t, "packer")
	dir := t.TempDir()
	env := []string{"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIEXAMPLEKEY",
		"CHECKPOINT_DISABLE=1", "HOME=" + dir, "PACKER_CACHE_DIR=" + filepath.Join(dir, "cache")}

	for _, f := range []string{"egressd.pkr.hcl", "plugins.pkr.hcl"} {
		if r := inNS(t, ns.Name, env, "packer", "fmt", "-check", "-diff", repoPath("packer/"+f)); r.code != 0 {
			t.Errorf("packer fmt -check %s: %v", f, r)
		}
	}

	tmpl := readFile(t, repoPath("packer/egressd.pkr.hcl"))
	syntax := filepath.Join(dir, "syntax")
	writeFile(t, filepath.Join(syntax, "egressd.pkr.hcl"), tmpl, 0o644)
	if r := inNS(t, ns.Name, env, "packer", "validate", "-syntax-only", syntax); r.code != 0 || !strings.Contains(r.stdout, "Syntax-only check passed") {
		t.Errorf("packer validate -syntax-only: %v", r)
	}

	stripped := metadataOptions.ReplaceAllString(tmpl, "\n")
	if n := len(metadataOptions.FindAllString(tmpl, -1)); n != 1 {
		t.Fatalf("found %d metadata_options blocks to leave out, want 1", n)
	}
	full := filepath.Join(dir, "full")
	writeFile(t, filepath.Join(full, "egressd.pkr.hcl"), stripped, 0o644)
	writeFile(t, filepath.Join(full, "provision.sh"), readFile(t, repoPath("packer/provision.sh")), 0o755)
	dist := filepath.Join(dir, "dist")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	validate := func(dir string) result {
		return inNS(t, ns.Name, env, "bash", "-c", `cd "$0" && exec packer validate -var version=v0.0.0 -var dist_dir="$1" -var starter_policy="$2" .`,
			dir, dist, repoPath("deploy/etc/policy.yaml"))
	}
	// 1.6.6 says nothing when the configuration is valid.
	if r := validate(full); r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Errorf("packer validate (all but metadata_options): %v", r)
	}
	// A control: the same validate refuses an attribute amazon-ebs does not have.
	bad := filepath.Join(dir, "bad")
	writeFile(t, filepath.Join(bad, "egressd.pkr.hcl"), strings.Replace(stripped, "    instance_type = var.instance_type_x86_64", "    instance_typ = var.instance_type_x86_64", 1), 0o644)
	writeFile(t, filepath.Join(bad, "provision.sh"), readFile(t, repoPath("packer/provision.sh")), 0o755)
	if r := validate(bad); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "instance_typ") {
		t.Errorf("packer validate accepted a misspelt attribute: %v", r)
	}
}
