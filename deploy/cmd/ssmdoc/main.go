// Command ssmdoc writes the SSM document egressd-push-policy from its shell
// script: ssmdoc SCRIPT.sh DOCUMENT.json (make ssm-doc).
package main

import (
	"fmt"
	"os"

	"github.com/egressd/egressd/deploy"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ssmdoc SCRIPT.sh DOCUMENT.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssmdoc:", err)
		os.Exit(1)
	}
	doc, err := deploy.SSMDocument(script)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ssmdoc: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], doc, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "ssmdoc:", err)
		os.Exit(1)
	}
}
