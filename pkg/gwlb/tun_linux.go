package gwlb

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTun attaches one queue of the multi-queue tun device name (creating
// the device if it does not exist; scripts/gwlb/egressd-gwlb-net.sh makes
// it persistent, with its routes), packets without the 4-byte tun header.
// The file is non-blocking, so its reads wait in Go's poller.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach tun %s (TUNSETIFF; a device made without multi_queue cannot be attached): %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

// linkUp sets the device's MTU and brings it up, with IPv6 off on it (no
// link-local address, no router solicitations: nothing but IPv4 is ever
// routed to it). The IPv6 setting is best effort: the systemd unit's
// sandbox makes /proc/sys read-only, and egressd-gwlb-net.sh sets it too.
func linkUp(name string, mtu int) error {
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}
