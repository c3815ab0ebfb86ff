// Command delay is a TCP proxy that adds a fixed delay to every byte in
// each direction, for the benchmark to show how uploads fare over a link
// with a round-trip time (this machine's kernel has no netem). It does
// not limit bandwidth: it reads as fast as the sender writes and holds
// what it read until its time has come.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"time"
)

type packet struct {
	due time.Time
	b   []byte
}

// pipe copies src to dst, each read delivered delay after it arrived.
func pipe(dst, src net.Conn, delay time.Duration) {
	q := make(chan packet, 1<<16)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- packet{time.Now().Add(delay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if _, err := dst.Write(p.b); err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, src)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "address to forward to")
	rtt := flag.Duration("rtt", 20*time.Millisecond, "round-trip time to add")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			s, err := net.Dial("tcp", *target)
			if err != nil {
				log.Print(err)
				return
			}
			defer s.Close()
			done := make(chan struct{})
			go func() { pipe(s, c, *rtt/2); close(done) }()
			pipe(c, s, *rtt/2)
			<-done
		}()
	}
}
