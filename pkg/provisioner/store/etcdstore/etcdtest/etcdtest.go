// Package etcdtest starts a throwaway etcd server (Debian's etcd-server
// package) for tests: loopback, random free ports, a temporary data
// directory removed on stop.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RequireEnv makes a missing etcd binary a failure instead of a skip.
const RequireEnv = "NVMIRROR_REQUIRE_ETCD"

// ErrNoEtcd explains a skip.
const ErrNoEtcd = "etcd binary not found (apt-get install etcd-server); etcd tests skipped"

// Server is a running etcd.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
	dir      string
	exited   chan struct{}
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Binary returns the etcd binary's path, or "" when it is not installed.
func Binary() string {
	for _, p := range []string{"etcd", "/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs etcd and waits (up to 30 s) until it serves.
func Start(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "nvmirror-etcd-")
	if err != nil {
		return nil, err
	}
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	s := &Server{Endpoint: client, dir: dir, exited: make(chan struct{}), logs: &syncBuffer{}}
	s.cmd = exec.Command(bin,
		"--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer, "--initial-cluster-state", "new",
		"--log-level", "warn", "--logger", "zap")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	// etcd 3.4 refuses to start on architectures other than amd64 without
	// this; harmless on amd64.
	s.cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.exited) }()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		s.Stop()
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := cli.Status(ctx, client)
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("etcd exited: %s", s.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("etcd not serving after 30 s: %v; logs: %s", err, s.logs)
		}
	}
}

// Stop terminates etcd and removes its data.
func (s *Server) Stop() {
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// Version returns `etcd --version`'s first line.
func Version(bin string) string {
	out, _ := exec.Command(bin, "--version").Output()
	line, _, _ := bytes.Cut(out, []byte("\n"))
	return string(line)
}
