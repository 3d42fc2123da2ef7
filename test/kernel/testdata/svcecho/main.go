// Command svcecho is TestServiceVM's toy service: a TCP line-echo server
// that answers with the kernel it runs on, so the host can tell the reply
// came from the guest. It lives under testdata so that ./... skips it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", ":7000", "TCP address to listen on")
	flag.Parse()
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("svcecho listening on %s", l.Addr())
	for {
		conn, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer conn.Close()
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				log.Printf("read: %v", err)
				return
			}
			line = strings.TrimSuffix(line, "\n")
			log.Printf("served: %s", line)
			fmt.Fprintf(conn, "kernel %s echoes: %s\n", strings.TrimSpace(string(release)), line)
		}()
	}
}
