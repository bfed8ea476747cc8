package bundle

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ChecksumsFile is the checksum file of a split bundle, in the directory
// of its parts, in the format of sha256sum(1) so that
// `sha256sum -c SHA256SUMS` checks the parts too.
const ChecksumsFile = "SHA256SUMS"

// checksumSuffix names the checksum file of a bundle that is one file:
// FILE.sha256.
const checksumSuffix = ".sha256"

// partDigits is the width of a part's number: FILE.000, FILE.001, …
const partDigits = 3

// partName is the name of part i of base.
func partName(base string, i int) string {
	return fmt.Sprintf("%s.%0*d", base, partDigits, i)
}

// partSuffix matches the number a part name ends with.
var partSuffix = regexp.MustCompile(`\.([0-9]{3,})$`)

// writeChecksums writes FILE.sha256, or adds the parts to SHA256SUMS in
// place of the lines of any earlier bundle named like this one (other
// bundles' lines are kept), and removes stale parts and files.
func (w *partWriter) writeChecksums(paths, partSums []string) (string, error) {
	var lines []string
	sums := filepath.Join(w.dir, ChecksumsFile)
	if w.split == 0 {
		sums = filepath.Join(w.dir, w.base+checksumSuffix)
		// A split bundle of the same name is replaced by this one.
		w.removeStaleParts(0)
		if err := dropChecksumLines(filepath.Join(w.dir, ChecksumsFile), w.ownsName); err != nil {
			return "", err
		}
	} else {
		w.removeStaleParts(len(paths))
		os.Remove(filepath.Join(w.dir, w.base))
		os.Remove(filepath.Join(w.dir, w.base+checksumSuffix))
		old, err := os.ReadFile(sums)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("reading %s: %w", sums, err)
		}
		for _, l := range strings.SplitAfter(string(old), "\n") {
			if l == "" {
				continue
			}
			if _, name, ok := parseChecksumLine(l); ok && w.ownsName(name) {
				continue
			}
			lines = append(lines, strings.TrimSuffix(l, "\n")+"\n")
		}
	}
	for i, p := range paths {
		lines = append(lines, fmt.Sprintf("%s  %s\n", partSums[i], filepath.Base(p)))
	}
	return sums, writeFileAtomic(sums, []byte(strings.Join(lines, "")))
}

// ownsName reports whether name is this bundle's file or one of its parts.
func (w *partWriter) ownsName(name string) bool {
	if name == w.base {
		return true
	}
	rest, ok := strings.CutPrefix(name, w.base)
	return ok && partSuffix.MatchString(rest) && strings.Count(rest, ".") == 1
}

// removeStaleParts removes FILE.NNN for NNN from n on, left by an earlier
// bundle of the same name with more parts.
func (w *partWriter) removeStaleParts(n int) {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if i, ok := partNumber(w.base, e.Name()); ok && i >= n && e.Type().IsRegular() {
			os.Remove(filepath.Join(w.dir, e.Name()))
		}
	}
}

// dropChecksumLines removes from a checksum file the lines whose name
// drop accepts (every line when drop is nil), and the file when no line is
// left.
func dropChecksumLines(path string, drop func(string) bool) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept []string
	for _, l := range strings.SplitAfter(string(old), "\n") {
		if l == "" {
			continue
		}
		if _, name, ok := parseChecksumLine(l); ok && (drop == nil || drop(name)) {
			continue
		}
		kept = append(kept, strings.TrimSuffix(l, "\n")+"\n")
	}
	if len(kept) == 0 {
		return os.Remove(path)
	}
	if len(kept) == len(strings.Split(strings.TrimSuffix(string(old), "\n"), "\n")) {
		return nil
	}
	return writeFileAtomic(path, []byte(strings.Join(kept, "")))
}

// writeFileAtomic writes data to a temporary file beside path, syncs it
// and renames it over path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir makes renames in dir durable, where the system allows it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// parseChecksumLine parses a line of sha256sum's output: 64 hex digits,
// a space, a space or '*', and the file name.
func parseChecksumLine(l string) (sum, name string, ok bool) {
	l = strings.TrimRight(l, "\r\n")
	if len(l) < 67 || (l[64] != ' ') || (l[65] != ' ' && l[65] != '*') {
		return "", "", false
	}
	sum = strings.ToLower(l[:64])
	if _, err := hex.DecodeString(sum); err != nil {
		return "", "", false
	}
	return sum, l[66:], true
}

// Part is one file of a bundle on disk.
type Part struct {
	// Name is the file name, relative to the bundle's directory.
	Name string `json:"name"`
	// Path is the file's path.
	Path string `json:"-"`
	// Size is its size on disk; -1 when it is missing.
	Size int64 `json:"size"`
	// Offset is where the part starts in the bundle's tar stream, when
	// every part before it is there.
	Offset int64 `json:"offset"`
	// Want is the SHA-256 the checksum file lists for it, in hex; empty
	// when there is no checksum file.
	Want string `json:"sha256,omitempty"`
}

// location is where a bundle's files are.
type location struct {
	given     string // the path the user gave
	dir, base string
	split     bool
	parts     []Part
	// sums is the checksum file; sumsErr says why it could not be read.
	sums    string
	sumsErr error
}

// display names the bundle in messages: FILE (for a split bundle too,
// whose parts are FILE.000, …).
func (l *location) display() string {
	return filepath.Join(l.dir, l.base)
}

// locate finds the files of the bundle at path: a file FILE (with
// FILE.sha256 beside it), or parts FILE.000, FILE.001, … listed in
// SHA256SUMS; path may name FILE or its first part. Parts the checksum
// file lists but the disk lacks have Size -1.
func locate(path string) (*location, error) {
	l := &location{given: path}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	l.dir = filepath.Clean(dir)
	fi, statErr := os.Stat(path)
	if m := partSuffix.FindStringSubmatch(base); m != nil && statErr == nil && m[1] == strings.Repeat("0", len(m[1])) {
		// FILE.000 names a split bundle.
		base = strings.TrimSuffix(base, "."+m[1])
		l.split = true
	} else if statErr == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("bundle %s is not a regular file", path)
		}
	} else if _, err := os.Stat(filepath.Join(l.dir, partName(base, 0))); err == nil {
		l.split = true
	} else if !errors.Is(statErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening bundle %s: %w", path, statErr)
	} else if !listedInChecksums(filepath.Join(l.dir, ChecksumsFile), base) {
		return nil, fmt.Errorf("%w: bundle %s: no such file, and no parts %s, %s, … beside it", fs.ErrNotExist, path, partName(base, 0), partName(base, 1))
	} else {
		l.split = true // every part is missing; checks name them
	}
	l.base = base

	if !l.split {
		l.sums = filepath.Join(l.dir, base+checksumSuffix)
		want := ""
		lines, err := readChecksums(l.sums)
		if err != nil {
			l.sumsErr = err
		} else {
			for _, c := range lines {
				if c.name == base {
					want = c.sum
				}
			}
			if want == "" {
				l.sumsErr = fmt.Errorf("%s has no line for %s", l.sums, base)
			}
		}
		l.parts = []Part{{Name: base, Path: filepath.Join(l.dir, base), Size: fi.Size(), Want: want}}
		return l, nil
	}

	l.sums = filepath.Join(l.dir, ChecksumsFile)
	listed := map[int]string{}
	lines, err := readChecksums(l.sums)
	if err != nil {
		l.sumsErr = err
	}
	for _, c := range lines {
		if n, ok := partNumber(base, c.name); ok {
			listed[n] = c.sum
		}
	}
	if err == nil && len(listed) == 0 {
		l.sumsErr = fmt.Errorf("%s lists no part of %s", l.sums, base)
	}
	// The parts are those listed, and those on disk numbered on from 000
	// without a gap.
	count := 0
	for n := range listed {
		count = max(count, n+1)
	}
	for n := count; ; n++ {
		if _, err := os.Stat(filepath.Join(l.dir, partName(base, n))); err != nil {
			break
		}
		count = n + 1
	}
	var off int64
	for i := range count {
		p := Part{Name: partName(base, i), Path: filepath.Join(l.dir, partName(base, i)), Size: -1, Offset: off, Want: listed[i]}
		if fi, err := os.Stat(p.Path); err == nil && fi.Mode().IsRegular() {
			p.Size = fi.Size()
		}
		if off >= 0 && p.Size >= 0 {
			off += p.Size
		} else {
			off = -1
		}
		l.parts = append(l.parts, p)
	}
	return l, nil
}

// partNumber returns n when name is base.NNN.
func partNumber(base, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, base+".")
	if !ok || len(rest) < partDigits || strings.Trim(rest, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n > 1_000_000 {
		return 0, false
	}
	return n, true
}

func listedInChecksums(path, base string) bool {
	lines, _ := readChecksums(path)
	for _, c := range lines {
		if _, ok := partNumber(base, c.name); ok {
			return true
		}
	}
	return false
}

type checksumLine struct{ sum, name string }

// maxChecksumFile caps what is read of a checksum file.
const maxChecksumFile = 16 << 20

func readChecksums(path string) ([]checksumLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxChecksumFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxChecksumFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxChecksumFile)
	}
	var out []checksumLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxChecksumFile)
	for sc.Scan() {
		if sum, name, ok := parseChecksumLine(sc.Text()); ok {
			out = append(out, checksumLine{sum, name})
		}
	}
	return out, nil
}

// multiReaderAt reads files one after another as one stream.
type multiReaderAt struct {
	files []*os.File
	offs  []int64 // where each file starts
	sizes []int64
	size  int64
}

func openParts(parts []Part) (*multiReaderAt, error) {
	m := &multiReaderAt{}
	for _, p := range parts {
		f, err := os.Open(p.Path)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("opening bundle part %s: %w", p.Path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			m.Close()
			return nil, fmt.Errorf("opening bundle part %s: %w", p.Path, err)
		}
		m.files = append(m.files, f)
		m.offs = append(m.offs, m.size)
		m.sizes = append(m.sizes, fi.Size())
		m.size += fi.Size()
	}
	return m, nil
}

func (m *multiReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for len(p) > 0 {
		if off >= m.size {
			return n, io.EOF
		}
		i := sort.Search(len(m.offs), func(i int) bool { return m.offs[i] > off }) - 1
		k := min(int64(len(p)), m.offs[i]+m.sizes[i]-off)
		r, err := m.files[i].ReadAt(p[:k], off-m.offs[i])
		n += r
		off += int64(r)
		p = p[r:]
		if err != nil && !(err == io.EOF && int64(r) == k) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank
			}
			return n, err
		}
	}
	return n, nil
}

// FileAt tells which part holds the n bytes at off (store.FileAt), so
// that a server sends them from the part with sendfile.
func (m *multiReaderAt) FileAt(off, n int64) (*os.File, int64, bool) {
	if off < 0 || n < 0 || off >= m.size {
		return nil, 0, false
	}
	i := sort.Search(len(m.offs), func(i int) bool { return m.offs[i] > off }) - 1
	if i < 0 || i >= len(m.files) || off+n > m.offs[i]+m.sizes[i] {
		return nil, 0, false
	}
	return m.files[i], off - m.offs[i], true
}

func (m *multiReaderAt) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.files = nil
	return errors.Join(errs...)
}
