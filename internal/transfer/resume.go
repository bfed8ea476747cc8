package transfer

import (
	"context"
	"errors"
	"io"
	"time"
)

type readCloser = io.ReadCloser

// maxResumes caps how often one download is resumed after a reset.
const maxResumes = 5

// resumingReader reads a blob and, when the stream breaks, opens it again
// at the offset reached (a Range request) and carries on, so the reader
// above it sees one unbroken stream (ROBUSTNESS row 3).
type resumingReader struct {
	ctx      context.Context
	open     func(offset int64) (readCloser, error)
	onResume func(offset int64, err error)
	rc       readCloser
	off      int64
	resumes  int
	err      error
	pre      chan opened // the first open, started early by prefetch
}

type opened struct {
	rc  readCloser
	err error
}

// prefetch starts opening the stream now, so that the source's round trip
// overlaps with whatever the caller does before its first Read (such as
// opening the upload session at the target).
func (r *resumingReader) prefetch() {
	r.pre = make(chan opened, 1)
	go func() {
		rc, err := r.open(0)
		r.pre <- opened{rc, err}
	}()
}

func newResumingReader(ctx context.Context, open func(int64) (readCloser, error), onResume func(int64, error)) *resumingReader {
	return &resumingReader{ctx: ctx, open: open, onResume: onResume}
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.rc == nil && r.pre != nil {
			o := <-r.pre
			r.pre = nil
			if o.err == nil {
				r.rc = o.rc
				continue
			}
			if r.retry(o.err) {
				continue
			}
			r.err = o.err
			return 0, o.err
		}
		if r.rc == nil {
			rc, err := r.open(r.off)
			if err != nil {
				if r.retry(err) {
					continue
				}
				r.err = err
				return 0, err
			}
			r.rc = rc
		}
		n, err := r.rc.Read(p)
		r.off += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		r.rc.Close()
		r.rc = nil
		if !r.retry(err) {
			r.err = err
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// retry decides whether to resume after err, and waits a little first.
func (r *resumingReader) retry(err error) bool {
	if r.ctx.Err() != nil || r.resumes >= maxResumes || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrInvalidReference) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) && he.StatusCode < 500 && he.StatusCode != 408 && he.StatusCode != 429 {
		return false
	}
	r.resumes++
	if r.onResume != nil {
		r.onResume(r.off, err)
	}
	return sleepCtx(r.ctx, time.Duration(r.resumes)*100*time.Millisecond) == nil
}

func (r *resumingReader) Close() error {
	if r.pre != nil {
		// Never read: close the stream whenever it arrives.
		pre := r.pre
		r.pre = nil
		go func() {
			if o := <-pre; o.rc != nil {
				o.rc.Close()
			}
		}()
	}
	if r.rc != nil {
		err := r.rc.Close()
		r.rc = nil
		return err
	}
	return nil
}

// progressReader counts the bytes read through it and reports them.
type progressReader struct {
	r      *verifier
	n      int64
	report func(total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.report(p.n)
	}
	return n, err
}

// verified reports whether the stream was read to its verified end.
func (p *progressReader) verified() bool { return p.r.finished }
