package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/store"
)

// maxFuzzInput caps the inputs the fuzz targets try: the fuzzer minimizes
// every input that finds new coverage with a number of runs that grows
// with the square of its size, and larger inputs kept it minimizing
// instead of fuzzing.
const maxFuzzInput = 2048

// FuzzDamagedSplitBundle (ROBUSTNESS row 21): a split bundle whose parts
// or SHA256SUMS were damaged on the way (a byte changed, a part cut short,
// lost, or grown) never verifies, the problems name the damaged part, and
// importing it writes nothing into the target layout.
//
// The input says what to damage: op picks the damage, part the file (the
// parts, then SHA256SUMS), off where, val the new byte or how many bytes
// to add.
func FuzzDamagedSplitBundle(f *testing.F) {
	files := splitBundleFiles(f)
	for _, s := range []struct {
		op, part, val byte
		off           uint32
	}{
		{damageFlip, 0, 1, 0}, {damageFlip, 1, 0x80, 700}, {damageFlip, 2, 0xff, 9999},
		{damageCut, 0, 0, 0}, {damageCut, 1, 0, 1000}, {damageCut, 2, 0, 1},
		{damageRemove, 0, 0, 0}, {damageRemove, 2, 0, 0},
		{damageGrow, 1, 3, 0}, {damageGrow, 2, 200, 0},
		{damageFlip, 255, 'x', 3}, {damageFlip, 255, '\n', 66}, {damageCut, 255, 0, 70},
	} {
		f.Add(s.op, s.part, s.off, s.val)
	}
	work := f.TempDir()
	bundlePath := filepath.Join(work, "b.tar")
	target := filepath.Join(work, "layout")
	f.Fuzz(func(t *testing.T, op, part byte, off uint32, val byte) {
		damaged := files.damage(op, part, off, val)
		if err := damaged.write(work); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(context.Background(), bundlePath)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if rep.Err() == nil && damaged.damagedName == ChecksumsFile && files.vouchedFor(damaged.contents[len(damaged.contents)-1]) {
			return // the damage left every line that matters intact
		}
		if !errors.Is(rep.Err(), ErrCorrupt) {
			t.Fatalf("%s of %s verifies: %+v", damageName(op), damaged.damagedName, rep)
		}
		if damaged.damagedName != ChecksumsFile && !namesPart(rep, damaged.damagedName) {
			t.Fatalf("%s of %s: no problem names the part: %v", damageName(op), damaged.damagedName, rep.Err())
		}
		if err := os.RemoveAll(target); err != nil {
			t.Fatal(err)
		}
		_, err = Import(context.Background(), bundlePath, ImportOptions{To: "oci:" + target, NoReceipt: true})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("importing after %s of %s: %v, want ErrCorrupt", damageName(op), damaged.damagedName, err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			if names := layoutNames(t, target); len(names) > 0 {
				t.Fatalf("a failed import wrote %v", names)
			}
		}
	})
}

// Kinds of damage FuzzDamagedSplitBundle does, by op modulo 4.
const (
	damageFlip   = iota // change the byte at off
	damageCut           // cut the file at off
	damageRemove        // remove the file
	damageGrow          // append val+1 bytes
)

func damageName(op byte) string {
	return [...]string{"a changed byte", "a cut", "the loss", "growth"}[op%4]
}

// bundleFiles are the files of a split bundle, in memory.
type bundleFiles struct {
	names    []string // the parts, in order, then SHA256SUMS
	contents [][]byte // nil for a removed file
	// damagedName is the file damage changed.
	damagedName string
}

// splitBundleFiles creates a bundle of one image split into parts of
// 2 KiB, and returns its files.
func splitBundleFiles(f *testing.F) bundleFiles {
	host := regtest.GGCR(f, nil)
	regtest.PushImage(f, host+"/team/app:v1", regtest.Image{Layers: 2}, "", "")
	dir := f.TempDir()
	_, err := Create(context.Background(), []Request{{Reference: host + "/team/app:v1"}},
		CreateOptions{Output: filepath.Join(dir, "b.tar"), Remote: testRemote(), FerryVersion: "test", Now: fixedNow, Split: 2048})
	if err != nil {
		f.Fatal(err)
	}
	var files bundleFiles
	for i := 0; ; i++ {
		data, err := os.ReadFile(filepath.Join(dir, partName("b.tar", i)))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			f.Fatal(err)
		}
		files.names = append(files.names, partName("b.tar", i))
		files.contents = append(files.contents, data)
	}
	sums, err := os.ReadFile(filepath.Join(dir, ChecksumsFile))
	if err != nil {
		f.Fatal(err)
	}
	files.names = append(files.names, ChecksumsFile)
	files.contents = append(files.contents, sums)
	if len(files.names) < 4 {
		f.Fatalf("the bundle has %d parts, want at least 3", len(files.names)-1)
	}
	return files
}

// damage returns a copy of b with one file damaged; the damage always
// changes the file.
func (b bundleFiles) damage(op, part byte, off uint32, val byte) bundleFiles {
	i := int(part) % len(b.names)
	if part == 255 {
		i = len(b.names) - 1 // the checksum file
	}
	out := bundleFiles{names: b.names, contents: append([][]byte{}, b.contents...), damagedName: b.names[i]}
	data := bytes.Clone(b.contents[i])
	switch op % 4 {
	case damageFlip:
		data[int(off)%len(data)] ^= val | 1
	case damageCut:
		data = data[:int(off)%len(data)]
	case damageRemove:
		data = nil
	case damageGrow:
		data = append(data, bytes.Repeat([]byte{val}, int(val)+1)...)
	}
	out.contents[i] = data
	return out
}

// write replaces the bundle's files in dir.
func (b bundleFiles) write(dir string) error {
	for i, name := range b.names {
		p := filepath.Join(dir, name)
		if b.contents[i] == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		if err := os.WriteFile(p, b.contents[i], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// vouchedFor reports whether the checksum file sums still lists every
// part of b with its checksum.
func (b bundleFiles) vouchedFor(sums []byte) bool {
	listed := map[string]string{}
	for line := range strings.SplitSeq(string(sums), "\n") {
		if sum, name, ok := parseChecksumLine(line); ok {
			listed[name] = sum
		}
	}
	for i, name := range b.names[:len(b.names)-1] {
		sum := sha256.Sum256(b.contents[i])
		if listed[name] != hex.EncodeToString(sum[:]) {
			return false
		}
	}
	return true
}

// namesPart reports whether a problem of rep names the part.
func namesPart(rep *Report, name string) bool {
	for _, p := range rep.Problems {
		if p.Part == name && strings.Contains(p.Message, name) {
			return true
		}
	}
	return false
}

// layoutNames lists the names in the index.json of the layout at dir.
func layoutNames(t *testing.T, dir string) []string {
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, err := s.Names(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// FuzzParseCatalog: ferry-bundle.json is accepted only with the catalog's
// media type, valid digests and no negative size, and an accepted catalog
// encodes to a document that parses back to the same encoding.
func FuzzParseCatalog(f *testing.F) {
	d := digest.FromString("x")
	for _, s := range []string{
		`{"mediaType":"` + MediaTypeCatalog + `","created":"2025-01-02T03:04:05Z","images":[{"reference":"r.example/a:v1","repository":"r.example/a","tag":"v1","digest":"` + d.String() + `","mediaType":"application/vnd.oci.image.manifest.v1+json","size":3,"referrers":[{"digest":"` + d.String() + `","kind":"signature","size":1}]}],"blobs":[{"digest":"` + d.String() + `","size":1}]}`,
		`{"mediaType":"` + MediaTypeCatalog + `","differential":{"receipts":[],"omitted":[{"digest":"sha256:../x","size":1}]},"images":[],"blobs":[]}`,
		`{"mediaType":"` + MediaTypeCatalog + `","images":[],"blobs":[{"digest":"` + d.String() + `","size":-1}]}`,
		`{"mediaType":"application/json"}`, `{"mediaType":"` + MediaTypeCatalog + `"} trailing`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		c, err := parseCatalog(data)
		if err != nil {
			if !errors.Is(err, ErrNotBundle) {
				t.Fatalf("error %v does not wrap ErrNotBundle", err)
			}
			return
		}
		if c.MediaType != MediaTypeCatalog {
			t.Fatalf("accepted mediaType %q", c.MediaType)
		}
		blobs := c.Blobs
		if c.Differential != nil {
			blobs = append(blobs, c.Differential.Omitted...)
		}
		for _, b := range blobs {
			if store.ValidateDigest(b.Digest) != nil || b.Size < 0 {
				t.Fatalf("accepted blob %s of %d bytes", b.Digest, b.Size)
			}
		}
		for _, im := range c.Images {
			if store.ValidateDigest(im.Digest) != nil || im.Reference == "" {
				t.Fatalf("accepted image %+v", im)
			}
		}
		enc, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseCatalog(enc)
		if err != nil {
			t.Fatalf("the catalog's own encoding does not parse: %v\n%s", err, enc)
		}
		if again, _ := json.Marshal(back); !bytes.Equal(again, enc) {
			t.Fatalf("encoding changed from\n%s\nto\n%s", enc, again)
		}
	})
}
