package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// chunkSize is the most the proxy reads, and so holds back, at once.
const chunkSize = 32 << 10

// delayProxy is a TCP proxy on 127.0.0.1 that behaves like a long link: every
// chunk of bytes, in each direction, is held for delay before it is passed
// on, so a request and its response take 2×delay more than they would
// directly. Chunks are pipelined (a delay line, not a sleep per chunk), so
// latency grows and throughput does not shrink, up to the window.
//
// A new connection waits 2×delay before it is connected upstream, the round
// trip of a TCP handshake; no TLS handshake is modelled (the registries speak
// plain HTTP).
//
// window is the TCP window each connection gets in each direction: at most
// window bytes per round trip, window/(2×delay) bytes a second, as on a real
// link. Here bytes leave the window when they are delivered, one delay after
// they were read, where a real sender frees them when the acknowledgement
// returns, one more delay later; so half the window is in flight here for the
// same throughput.
type delayProxy struct {
	ln       net.Listener
	upstream string
	delay    time.Duration
	window   int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startProxy listens on a free 127.0.0.1 port and forwards to upstream.
func startProxy(upstream string, delay time.Duration, window int64) (*delayProxy, error) {
	if window < 2*chunkSize {
		return nil, fmt.Errorf("window %d: must be at least %d bytes", window, 2*chunkSize)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting a proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &delayProxy{
		ln: ln, upstream: upstream, delay: delay, window: window,
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{},
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Host is the proxy's "127.0.0.1:port".
func (p *delayProxy) Host() string { return p.ln.Addr().String() }

// Close stops accepting, drops every connection and waits for them.
func (p *delayProxy) Close() error {
	p.cancel()
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

// track registers c so that Close can drop it; false once closing.
func (p *delayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *delayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *delayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if !p.sleep(2 * p.delay) {
		return
	}
	var d net.Dialer
	up, err := d.DialContext(p.ctx, "tcp", p.upstream)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(up, client) }()
	go func() { defer wg.Done(); p.pipe(client, up) }()
	wg.Wait()
}

// sleep waits for d, or until the proxy closes (then false).
func (p *delayProxy) sleep(d time.Duration) bool {
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// chunk is bytes read at some time, to be written delay later.
type chunk struct {
	buf *[]byte
	n   int
	due time.Time
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pipe copies src to dst through the delay line until src ends, then
// half-closes dst. If dst fails, both connections are closed.
func (p *delayProxy) pipe(dst, src net.Conn) {
	inFlight := semaphore.NewWeighted(p.window / 2)
	line := make(chan chunk, 1024)
	go func() {
		defer close(line)
		for {
			buf := chunkPool.Get().(*[]byte)
			n, err := src.Read(*buf)
			if n > 0 {
				if inFlight.Acquire(p.ctx, int64(n)) != nil {
					chunkPool.Put(buf)
					return
				}
				select {
				case line <- chunk{buf: buf, n: n, due: time.Now().Add(p.delay)}:
				case <-p.ctx.Done():
					chunkPool.Put(buf)
					return
				}
			} else {
				chunkPool.Put(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range line {
		if !failed {
			if !p.sleep(time.Until(c.due)) {
				failed = true
			} else if _, err := dst.Write((*c.buf)[:c.n]); err != nil {
				failed = true
			}
			if failed {
				// Unblock the reader; drain what it already queued.
				src.Close()
				dst.Close()
			}
		}
		inFlight.Release(int64(c.n))
		chunkPool.Put(c.buf)
	}
	if !failed {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
}
