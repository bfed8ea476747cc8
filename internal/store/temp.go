package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// staleTempAge is how old a temp file must be before the cleaner removes it
// on platforms where temp files are not locked (Windows).
const staleTempAge = time.Hour

// tempFile is a file in <layout>/.ferry/tmp that its writer holds locked
// (where the platform allows) until it is renamed into place or removed.
type tempFile struct {
	f    *os.File
	path string
}

// createTemp creates and locks a new temp file. The lock is taken after the
// file is created, so the file is checked to still be the one at its path
// afterwards: a cleaner may have removed it in between, and then a new one
// is made.
func (s *Store) createTemp(kind string) (*tempFile, error) {
	dir := filepath.Join(s.dir, tmpDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating temp directory in OCI layout %s: %w", s.dir, err)
	}
	for attempt := 0; ; attempt++ {
		var rnd [12]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		p := filepath.Join(dir, kind+"-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) && attempt < 10 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating temp file in OCI layout %s: %w", s.dir, err)
		}
		if !tempLocks {
			return &tempFile{f: f, path: p}, nil
		}
		ok, err := tryLock(f)
		if err != nil {
			// The file system cannot lock (some network mounts): write
			// unlocked; the cleaner then goes by age for this file.
			return &tempFile{f: f, path: p}, nil
		}
		if ok {
			fi, err1 := f.Stat()
			pi, err2 := os.Stat(p)
			if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
				return &tempFile{f: f, path: p}, nil
			}
		}
		// A cleaner took the new file between create and lock; it removes
		// it. Make another.
		f.Close()
		if attempt >= 10 {
			return nil, fmt.Errorf("creating temp file in OCI layout %s: a cleaner kept removing it; retry", s.dir)
		}
	}
}

// commit makes the temp file durable and renames it to final, then makes the
// rename durable. The temp file is gone afterwards whatever happens.
func (t *tempFile) commit(final string) error {
	if err := t.f.Sync(); err != nil {
		t.abort()
		return fmt.Errorf("writing %s: fsync: %w", final, err)
	}
	if !renameOpen {
		if err := t.f.Close(); err != nil {
			os.Remove(t.path)
			return fmt.Errorf("writing %s: %w", final, err)
		}
	}
	err := rename(t.path, final)
	if renameOpen {
		t.f.Close()
	}
	if err != nil {
		os.Remove(t.path)
		return fmt.Errorf("writing %s: %w", final, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("writing %s: %w", final, err)
	}
	return nil
}

// abort closes and removes the temp file.
func (t *tempFile) abort() {
	t.f.Close()
	os.Remove(t.path)
}

// writeFileAtomic replaces path with data: temp file, fsync, rename, fsync
// of the directory. Readers see the old or the new content, never a mix.
func (s *Store) writeFileAtomic(path string, data []byte) error {
	t, err := s.createTemp("file")
	if err != nil {
		return err
	}
	if _, err := t.f.Write(data); err != nil {
		t.abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return t.commit(path)
}

// cleanTemp removes temp files that no live writer owns: those it can lock
// (or, where temp files are not locked, those older than staleTempAge). It
// returns how many it removed.
func (s *Store) cleanTemp() (int, error) {
	dir := filepath.Join(s.dir, tmpDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cleaning temp files of OCI layout %s: %w", s.dir, err)
	}
	removed := 0
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() {
			continue
		}
		if !tempLocks {
			if removeIfOld(e, p) {
				removed++
			}
			continue
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			continue // gone already, or not ours to open
		}
		ok, err := tryLock(f)
		switch {
		case err != nil:
			// The file system cannot lock: go by age.
			f.Close()
			if removeIfOld(e, p) {
				removed++
			}
		case ok:
			err := os.Remove(p)
			f.Close()
			switch {
			case err == nil:
				removed++
			case !errors.Is(err, fs.ErrNotExist): // renamed into place meanwhile
				return removed, fmt.Errorf("removing stale temp file %s: %w", p, err)
			}
		default:
			f.Close() // a live writer holds it
		}
	}
	return removed, nil
}

// removeIfOld removes the temp file e at p if it is older than
// staleTempAge, and reports whether it did.
func removeIfOld(e fs.DirEntry, p string) bool {
	fi, err := e.Info()
	if err != nil || time.Since(fi.ModTime()) < staleTempAge {
		return false
	}
	return os.Remove(p) == nil
}

// lock takes the index lock: the in-process semaphore, then the lock file
// shared with other processes. Waiting honors ctx. The returned function
// releases both.
func (s *Store) lock(ctx context.Context) (func(), error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the lock of OCI layout %s: %w", s.dir, ctx.Err())
	}
	release := func() { <-s.sem }

	if err := os.MkdirAll(filepath.Join(s.dir, dotDir), 0o755); err != nil {
		release()
		return nil, fmt.Errorf("locking OCI layout %s: %w (is it on read-only media? reading needs no lock)", s.dir, err)
	}
	p := filepath.Join(s.dir, lockFileName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		release()
		return nil, fmt.Errorf("locking OCI layout %s: %w", s.dir, err)
	}
	wait := time.Millisecond
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			release()
			return nil, fmt.Errorf("locking OCI layout %s: %w (the file system must support file locks; use a local directory)", s.dir, err)
		}
		if ok {
			return func() {
				unlock(f)
				f.Close()
				release()
			}, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			release()
			return nil, fmt.Errorf("waiting for the lock of OCI layout %s (%s is held by another process): %w", s.dir, p, ctx.Err())
		}
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}
