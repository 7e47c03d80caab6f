package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SSMParam is one parameter of the SSM document: its name and the pattern
// SSM checks a value against before it substitutes {{ Name }} in the script.
// The patterns are the script's only defence against shell injection, since
// SSM pastes values into the text: none lets a single quote through.
type SSMParam struct {
	Name           string  `json:"-"`
	Type           string  `json:"type"`
	Description    string  `json:"description"`
	Default        *string `json:"default,omitempty"`
	AllowedPattern string  `json:"allowedPattern"`
}

func strp(s string) *string { return &s }

// SSMParams are the document's parameters, in the order of the script's
// arguments.
var SSMParams = []SSMParam{
	{
		Name: "PolicySource",
		Type: "String",
		Description: "Where the policy comes from: s3://BUCKET/KEY (for a policy directory, s3://BUCKET/PREFIX/: its *.yaml objects), " +
			"ssm:PARAMETER_NAME[:VERSION] (Parameter Store, SecureString too; values up to 4 KB, 8 KB advanced), " +
			"inline (then InlinePolicyBase64 is the policy), or remove (with PolicyFile: remove that file from the policy directory).",
		AllowedPattern: `^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9!_.*()/+=,@-]+|ssm:[A-Za-z0-9_./-]+(:[0-9]{1,10})?|inline|remove)$`,
	},
	{
		Name:           "InlinePolicyBase64",
		Type:           "String",
		Description:    "With PolicySource inline: the policy file, base64-encoded (base64 -w0 policy.yaml); for a whole policy directory, a gzipped tar of its files (tar -C policy.d -czf - . | base64 -w0).",
		Default:        strp(""),
		AllowedPattern: `^[A-Za-z0-9+/=]*$`,
	},
	{
		Name:           "TimeoutSeconds",
		Type:           "String",
		Description:    "How long to wait for egressd to report the new policy as loaded before rolling back.",
		Default:        strp("30"),
		AllowedPattern: `^[1-9][0-9]{0,3}$`,
	},
	{
		Name: "PolicyFile",
		Type: "String",
		Description: "With a policy directory on the instance: the one file of it (NAME.yaml) that PolicySource is, or that remove removes; " +
			"the other files stay (break glass: a temporary rule with expires). Empty: PolicySource is the whole policy.",
		Default:        strp(""),
		AllowedPattern: `^([A-Za-z0-9][A-Za-z0-9._-]{0,99}\.yaml)?$`,
	},
}

// ssmDoc is an SSM Command document, schemaVersion 2.2; the fields are in
// the order AWS's examples use.
type ssmDoc struct {
	SchemaVersion string              `json:"schemaVersion"`
	Description   string              `json:"description"`
	Parameters    map[string]SSMParam `json:"parameters"`
	MainSteps     []ssmStep           `json:"mainSteps"`
}

type ssmStep struct {
	Action       string              `json:"action"`
	Name         string              `json:"name"`
	Precondition map[string][]string `json:"precondition"`
	Inputs       ssmInputs           `json:"inputs"`
}

type ssmInputs struct {
	TimeoutSeconds string   `json:"timeoutSeconds"`
	RunCommand     []string `json:"runCommand"`
}

// ssmMainLine is the script's last line; SSMDocument replaces it with a call
// that passes the parameters.
const ssmMainLine = `main "$@"`

// SSMDocument returns the SSM Command document (schemaVersion 2.2, one
// aws:runShellScript step) whose script is script, with its last line,
// `main "$@"`, replaced by a call with the document's parameters.
func SSMDocument(script []byte) ([]byte, error) {
	text := string(script)
	if bytes.Contains(script, []byte("{{")) {
		return nil, errors.New("the script contains \"{{\", which SSM would take for a parameter")
	}
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("the script does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[len(lines)-1] != ssmMainLine {
		return nil, fmt.Errorf("the script's last line is %q, not %q", lines[len(lines)-1], ssmMainLine)
	}
	call := "main"
	for _, p := range SSMParams {
		call += " '{{ " + p.Name + " }}'"
	}
	lines[len(lines)-1] = call

	params := make(map[string]SSMParam, len(SSMParams))
	for _, p := range SSMParams {
		params[p.Name] = p
	}
	doc := ssmDoc{
		SchemaVersion: "2.2",
		Description: "egressd-push-policy: fetch an egressd policy (S3, Parameter Store or inline), check it, " +
			"install it atomically, reload egressd and wait until it reports the policy loaded; " +
			"roll back to the previous policy on any failure. Generated from deploy/ssm/egressd-push-policy.sh by `make ssm-doc`.",
		Parameters: params,
		MainSteps: []ssmStep{{
			Action:       "aws:runShellScript",
			Name:         "pushPolicy",
			Precondition: map[string][]string{"StringEquals": {"platformType", "Linux"}},
			Inputs:       ssmInputs{TimeoutSeconds: "600", RunCommand: lines},
		}},
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
