// Package prereqs holds no code: its directory has the list of the Debian
// packages egressd needs (packages.txt, per purpose) and the script that
// checks for their tools and, as root with apt-get, installs the missing
// ones (prereqs.sh), which `make demo`, `make test` and .ci/run run first.
//
// Its tests run prereqs.sh on a PATH made for each case (links to the real
// programs minus the hidden ones, stubs of id and apt-get), never the real
// apt-get, and check that every program the Go code runs is in the list.
// They need no privilege.
package prereqs
