package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): datagrams of
// KEY=VALUE lines on the socket named by $NOTIFY_SOCKET. Without it (not
// under systemd, or Type is not notify) every call does nothing.
type notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration // how often to send WATCHDOG=1; 0: no watchdog
}

func newNotifier() *notifier {
	n := &notifier{}
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return n
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return n
	}
	n.conn = conn
	// systemd sets WATCHDOG_USEC (and WATCHDOG_PID) for WatchdogSec=;
	// pinging at half the interval leaves room for a slow tick.
	if usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond / 2
		}
	}
	return n
}

func (n *notifier) send(state string) {
	if n.conn != nil {
		n.conn.Write([]byte(state))
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, for RELOADING=1.
func monotonicUsec() string {
	return strconv.FormatInt(time.Since(processStart).Microseconds()+bootOffsetUsec, 10)
}

var processStart = time.Now()

// bootOffsetUsec is CLOCK_MONOTONIC at processStart, read once.
var bootOffsetUsec = readMonotonicUsec()

func (n *notifier) ready(status string) { n.send("READY=1\nSTATUS=" + status) }
func (n *notifier) reloading() {
	n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%s", monotonicUsec()))
}
func (n *notifier) stopping() { n.send("STOPPING=1") }
func (n *notifier) ping()     { n.send("WATCHDOG=1") }
