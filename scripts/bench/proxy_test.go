package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads, then closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestProxyDeliversEveryByteLate(t *testing.T) {
	const delay = 20 * time.Millisecond
	p, err := startProxy(echoServer(t), delay, 256*kib)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	payload := make([]byte, 3*mib) // many windows' worth
	_, _ = rand.Read(payload)
	start := time.Now()
	c, err := net.Dial("tcp", p.Host())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_, _ = c.Write(payload)
		// The half-close must travel through the proxy, or the echo
		// server never ends and ReadAll below never returns.
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes through the proxy, not the %d sent", len(got), len(payload))
	}
	// Handshake (2 delays) plus one way there and one way back.
	if min := 4 * delay; elapsed < min {
		t.Errorf("a round trip through the proxy took %v, less than the %v it adds", elapsed, min)
	}
}

func TestProxyCloseEndsOpenConnections(t *testing.T) {
	p, err := startProxy(echoServer(t), time.Millisecond, 256*kib)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Host())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a connection was open")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(buf); err == nil {
		t.Errorf("connection still open after Close: read %q", buf[:n])
	}
}

func TestStartProxyRefusesTinyWindow(t *testing.T) {
	if _, err := startProxy("127.0.0.1:1", time.Millisecond, chunkSize); err == nil {
		t.Fatal("startProxy accepted a window smaller than two chunks")
	}
}
