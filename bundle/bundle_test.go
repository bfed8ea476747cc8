package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/store"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// A bundle of an image, an index and a signed image verifies, names each
// image by its source reference, carries the signature tag and the
// referrer, and imports with every digest intact.
func TestCreateVerifyImport(t *testing.T) {
	src := newSource(t).withBig(t)
	dir := t.TempDir()
	path, res := create(t, dir, "b.tar", src.refs("team/app:v1", "multi:v1", "signed:v1", "big:v1", "team/app@"+src.app), nil)

	if !slices.Equal(res.Files, []string{path}) || res.Checksums != path+".sha256" {
		t.Fatalf("files %v, checksums %s", res.Files, res.Checksums)
	}
	cat := res.Catalog
	if cat.MediaType != MediaTypeCatalog || cat.FerryVersion != "test" || !cat.Created.Equal(fixedNow()) || cat.Differential != nil {
		t.Fatalf("catalog header: %+v", cat)
	}
	want := []struct{ ref, digest string }{
		{src.host + "/team/app:v1", src.app},
		{src.host + "/multi:v1", src.multi},
		{src.host + "/signed:v1", src.signed},
		{src.host + "/big:v1", src.big},
		{src.host + "/team/app@" + src.app, src.app},
	}
	if len(cat.Images) != len(want) {
		t.Fatalf("%d images, want %d", len(cat.Images), len(want))
	}
	for i, w := range want {
		im := cat.Images[i]
		if im.Reference != w.ref || string(im.Digest) != w.digest {
			t.Errorf("image %d: %s@%s, want %s@%s", i, im.Reference, im.Digest, w.ref, w.digest)
		}
		if im.Size <= 0 {
			t.Errorf("%s: size %d", im.Reference, im.Size)
		}
	}
	if got := cat.Images[1].Platforms; !slices.Equal(got, []string{"linux/amd64", "linux/arm64/v8"}) {
		t.Errorf("multi platforms %v", got)
	}
	if got := cat.Images[0].Platforms; !slices.Equal(got, []string{"linux/amd64"}) {
		t.Errorf("app platforms %v", got)
	}
	refs := cat.Images[2].Referrers
	if len(refs) != 2 || refs[0].Kind != "signature" || !strings.HasSuffix(refs[0].Tag, ".sig") || string(refs[0].Digest) != src.sig ||
		string(refs[1].Digest) != src.sbom || refs[1].Kind != "sbom" || string(refs[1].Subject) != src.signed {
		t.Errorf("referrers of signed:v1: %+v", refs)
	}

	// index.json names every image and the signature tag; the referrer is
	// a root with its repository.
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := b.Archive.Index(context.Background())
	names := map[string]string{}
	for _, d := range idx.Manifests {
		if n := d.Annotations[ocispec.AnnotationRefName]; n != "" {
			names[n] = string(d.Digest)
		} else if d.Annotations[AnnotationRepository] != src.host+"/signed" {
			t.Errorf("unnamed entry %s without its repository: %v", d.Digest, d.Annotations)
		}
	}
	for _, w := range want {
		if names[w.ref] != w.digest {
			t.Errorf("index.json: %s → %s, want %s", w.ref, names[w.ref], w.digest)
		}
	}
	if names[src.host+"/signed:"+refs[0].Tag] != src.sig {
		t.Errorf("index.json lacks the signature tag: %v", names)
	}
	b.Close()

	rep, err := Verify(context.Background(), path)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("Verify: %v %s", err, problems(rep))
	}
	if rep.Images != 5 || rep.Referrers != 2 || !rep.Parts[0].OK {
		t.Errorf("report %+v", rep)
	}

	// Import under a prefix: the source host is dropped.
	dst := regtest.GGCR(t, nil)
	ir, err := importTo(t, path, dst+"/site", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ir.Failed != 0 {
		t.Fatalf("failed: %+v", ir.Images)
	}
	for _, c := range []struct{ ref, digest string }{
		{dst + "/site/team/app:v1", src.app},
		{dst + "/site/multi:v1", src.multi},
		{dst + "/site/signed:v1", src.signed},
		{dst + "/site/big:v1", src.big},
		{dst + "/site/signed:" + refs[0].Tag, src.sig},
		{dst + "/site/signed@" + src.sbom, src.sbom},
	} {
		if got := digestOf(t, c.ref); got != c.digest {
			t.Errorf("%s is %q, want %s", c.ref, got, c.digest)
		}
	}
	if ir.Images[2].Referrers != 2 {
		t.Errorf("signed:v1 imported with %d referrers", ir.Images[2].Referrers)
	}
	// The receipt lists every config and layer, where it is.
	rec, _, err := ReadReceipt(filepath.Join(dir, "b.tar.receipt.json"))
	if err != nil {
		t.Fatal(err)
	}
	inRec := map[string]string{}
	for _, bl := range rec.Blobs {
		inRec[string(bl.Digest)] = bl.Repository
	}
	for _, bl := range cat.Blobs {
		if transfer.IsManifest(bl.MediaType) {
			if _, ok := inRec[string(bl.Digest)]; ok {
				t.Errorf("receipt lists manifest %s", bl.Digest)
			}
			continue
		}
		if !strings.HasPrefix(inRec[string(bl.Digest)], dst+"/site/") {
			t.Errorf("receipt: blob %s (%s) at %q", bl.Digest, bl.MediaType, inRec[string(bl.Digest)])
		}
	}
	if rec.Bundle != b.CatalogDigest || rec.Target != dst+"/site" || len(rec.Images) != 5 {
		t.Errorf("receipt header: %+v", rec)
	}

	// Again: every blob is there, nothing moves.
	ir, err = importTo(t, path, dst+"/site", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range ir.Images {
		if im.BlobsCopied != 0 || im.Err != nil {
			t.Errorf("rerun: %+v", im)
		}
	}
}

// --map sends repositories elsewhere, the longest prefix winning; an OCI
// layout gets REPOSITORY:TAG names.
func TestImportMapAndLayout(t *testing.T) {
	src := newSource(t)
	dir := t.TempDir()
	path, _ := create(t, dir, "b.tar", src.refs("team/app:v1", "signed:v1"), nil)
	dst := regtest.GGCR(t, nil)
	_, err := importTo(t, path, dst, func(o *ImportOptions) {
		o.Map = []Mapping{{From: src.host, To: "all"}, {From: src.host + "/team", To: "teams/a"}}
		o.NoReceipt = true
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := digestOf(t, dst+"/teams/a/app:v1"); got != src.app {
		t.Errorf("teams/a/app:v1 = %q", got)
	}
	if got := digestOf(t, dst+"/all/signed:v1"); got != src.signed {
		t.Errorf("all/signed:v1 = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.tar.receipt.json")); !os.IsNotExist(err) {
		t.Errorf("NoReceipt wrote a receipt: %v", err)
	}

	layout := filepath.Join(dir, "layout")
	if _, err := importTo(t, path, "oci:"+layout, func(o *ImportOptions) { o.Receipt = filepath.Join(dir, "r.json") }); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenExisting(layout)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := s.Names(context.Background())
	for _, n := range []string{"team/app:v1", "signed:v1"} {
		if !slices.Contains(names, n) {
			t.Errorf("layout names %v lack %s", names, n)
		}
	}
	if problems, err := s.Check(context.Background()); err != nil || len(problems) > 0 {
		t.Errorf("layout check: %v %v", err, problems)
	}
}

func TestMapping(t *testing.T) {
	for _, bad := range []string{"", "=x", "a", "a=B"} {
		if _, err := ParseMapping(bad); !errors.Is(err, transfer.ErrInvalidReference) {
			t.Errorf("ParseMapping(%q) = %v", bad, err)
		}
	}
	m, err := ParseMapping("docker.io/library/=base/")
	if err != nil || m != (Mapping{"docker.io/library", "base"}) {
		t.Fatalf("ParseMapping: %+v %v", m, err)
	}
	imp := &importer{prefix: "mirror", opts: ImportOptions{Map: []Mapping{
		{"docker.io", "hub"}, {"docker.io/library", ""}, {"quay.io/org", "q"},
	}}}
	for src, want := range map[string]string{
		"docker.io/library/nginx":       "mirror/nginx",
		"docker.io/bitnami/redis":       "mirror/hub/bitnami/redis",
		"quay.io/org/app":               "mirror/q/app",
		"quay.io/organisation/app":      "mirror/organisation/app", // whole path elements only
		"registry.example.com:5000/a/b": "mirror/a/b",
	} {
		got, err := imp.mapRepository(src)
		if err != nil || got != want {
			t.Errorf("map %s = %q, %v; want %s", src, got, err, want)
		}
	}
	imp.prefix, imp.opts.Map = "", []Mapping{{"quay.io/org", ""}}
	if _, err := imp.mapRepository("quay.io/org"); !errors.Is(err, transfer.ErrInvalidReference) {
		t.Errorf("an empty repository: %v", err)
	}
}

// Two sources that map to one tag are refused before anything is pushed.
func TestImportRefusesCollisions(t *testing.T) {
	a, b := newSource(t), newSource(t)
	dir := t.TempDir()
	path, _ := create(t, dir, "b.tar", append(a.refs("team/app:v1"), b.refs("team/app:v1")...), nil)
	dst := regtest.GGCR(t, nil)
	_, err := importTo(t, path, dst, nil)
	if !errors.Is(err, transfer.ErrInvalidReference) || !strings.Contains(err.Error(), "--map") {
		t.Fatalf("err = %v", err)
	}
	if repos := catalogOf(t, dst); len(repos) != 0 {
		t.Errorf("pushed %v", repos)
	}
}

// Parts have exactly the split size but the last, their concatenation is
// the tar, and SHA256SUMS lists them for sha256sum -c; another bundle's
// lines in SHA256SUMS stay.
func TestCreateSplit(t *testing.T) {
	src := newSource(t).withBig(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ChecksumsFile), []byte(strings.Repeat("a", 64)+"  other.tar.000\n"), 0o644)
	// Leftovers of an earlier, longer bundle of the same name go.
	os.WriteFile(filepath.Join(dir, "b.tar.099"), []byte("old"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.tar"), []byte("old"), 0o644)
	const size = 1 << 20
	path, res := create(t, dir, "b.tar", src.refs("big:v1", "team/app:v1"), func(o *CreateOptions) { o.Split = size })
	if len(res.Files) < 6 || res.Checksums != filepath.Join(dir, ChecksumsFile) {
		t.Fatalf("files %v", res.Files)
	}
	var all []byte
	for i, f := range res.Files {
		if f != filepath.Join(dir, partName("b.tar", i)) {
			t.Errorf("part %d is %s", i, f)
		}
		data, _ := os.ReadFile(f)
		if i < len(res.Files)-1 && len(data) != size {
			t.Errorf("%s: %d bytes", f, len(data))
		}
		all = append(all, data...)
	}
	if int64(len(all)) != res.Size {
		t.Errorf("parts hold %d bytes, the tar is %d", len(all), res.Size)
	}
	sums, _ := os.ReadFile(res.Checksums)
	if !strings.HasPrefix(string(sums), strings.Repeat("a", 64)+"  other.tar.000\n") || strings.Count(string(sums), "b.tar.") != len(res.Files) {
		t.Errorf("SHA256SUMS:\n%s", sums)
	}
	for _, stale := range []string{"b.tar.099", "b.tar", "b.tar.sha256"} {
		if _, err := os.Stat(filepath.Join(dir, stale)); !os.IsNotExist(err) {
			t.Errorf("%s is still there", stale)
		}
	}
	if res.Catalog.PartSize != size {
		t.Errorf("catalog partSize %d", res.Catalog.PartSize)
	}
	for _, p := range []string{path, path + ".000"} {
		rep, err := Verify(context.Background(), p)
		if err != nil || len(rep.Problems) > 0 {
			t.Fatalf("Verify(%s): %v %s", p, err, problems(rep))
		}
		if len(rep.Parts) != len(res.Files) {
			t.Errorf("verified %d parts", len(rep.Parts))
		}
	}
	// A split bundle imports as one stream.
	dst := regtest.GGCR(t, nil)
	if _, err := importTo(t, path+".000", dst, nil); err != nil {
		t.Fatal(err)
	}
	if got := digestOf(t, dst+"/big:v1"); got != src.big {
		t.Errorf("big:v1 = %q", got)
	}
}

// With a window of a few KiB, almost every blob waits for the blobs
// before it to be done and hashed before it may start: the bundle is
// still whole, its parts' checksums right, and nothing is stuck.
func TestCreateWaitsForTheWindow(t *testing.T) {
	src := newSource(t).withBig(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "b.tar")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Create(ctx, src.refs("big:v1", "team/app:v1", "multi:v1", "signed:v1"), CreateOptions{
		Output: path, Split: 1 << 20, Remote: testRemote(), Jobs: 4, FerryVersion: "test", Now: fixedNow, window: 4 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) < 6 {
		t.Fatalf("files %v", res.Files)
	}
	rep, err := Verify(ctx, path)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("Verify: %v %s", err, problems(rep))
	}
	dst := regtest.GGCR(t, nil)
	if _, err := importTo(t, path, dst, nil); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{"big:v1": src.big, "team/app:v1": src.app, "multi:v1": src.multi, "signed:v1": src.signed} {
		if got := digestOf(t, dst+"/"+ref); got != want {
			t.Errorf("%s = %q, want %s", ref, got, want)
		}
	}
}

// A reference that does not exist fails before any file is written.
func TestCreateUnknownReference(t *testing.T) {
	src := newSource(t)
	dir := t.TempDir()
	_, err := Create(context.Background(), src.refs("team/app:v1", "team/app:nope"), CreateOptions{Output: filepath.Join(dir, "b.tar"), Remote: testRemote()})
	if !errors.Is(err, transfer.ErrNotFound) || !strings.Contains(err.Error(), "team/app:nope") {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
	_, err = Create(context.Background(), []Request{{Reference: "oci:./x:y"}}, CreateOptions{Output: filepath.Join(dir, "b.tar"), Remote: testRemote()})
	if !errors.Is(err, transfer.ErrInvalidReference) {
		t.Errorf("oci: source: %v", err)
	}
}

// A blob stream that breaks for good midway leaves no file behind: a
// bundle is complete or absent.
func TestCreateFailureRemovesFiles(t *testing.T) {
	f := newFaulty(t)
	regtest.PushRandom(t, f.host+"/big:v1", 1, 3<<20, "", "")
	f.breakAfter.Store(1 << 20)
	dir := t.TempDir()
	_, err := Create(context.Background(), []Request{{Reference: f.host + "/big:v1"}}, CreateOptions{Output: filepath.Join(dir, "b.tar"), Split: 1 << 20, Remote: testRemote()})
	if err == nil {
		t.Fatal("Create succeeded with a broken source")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("left %v after: %v", names, err)
	}
}

// Cancelling (Ctrl-C) stops promptly and leaves nothing behind; an
// output that is a directory is refused before anything is read.
func TestCreateCancelled(t *testing.T) {
	f := newFaulty(t)
	regtest.PushRandom(t, f.host+"/slow:v1", 3, 1<<10, "", "")
	f.blobDelay.Store(int64(time.Minute))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Create(ctx, []Request{{Reference: f.host + "/slow:v1"}}, CreateOptions{Output: filepath.Join(dir, "b.tar"), Remote: testRemote()})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopped after %s", d)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
	_, err = Create(context.Background(), []Request{{Reference: f.host + "/slow:v1"}}, CreateOptions{Output: dir, Remote: testRemote()})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory as output: %v", err)
	}
}

// A differential bundle leaves out what the receipt lists, verifies,
// imports where the receipt came from, and is refused, before anything is
// pushed, where the left-out blobs are missing.
func TestDifferential(t *testing.T) {
	src := newSource(t).withBig(t)
	dir := t.TempDir()
	full, _ := create(t, dir, "full.tar", src.refs("big:v1"), nil)
	dst := regtest.GGCR(t, nil)
	if _, err := importTo(t, full, dst+"/site", nil); err != nil {
		t.Fatal(err)
	}
	receipt := filepath.Join(dir, "full.tar.receipt.json")
	// The next bundle has the same image and a new one.
	diff, res := create(t, dir, "diff.tar", src.refs("big:v1", "team/app:v1"), func(o *CreateOptions) { o.Since = []string{receipt} })
	d := res.Catalog.Differential
	if d == nil || len(d.Omitted) != 3 || len(d.Receipts) != 1 {
		t.Fatalf("differential: %+v", d)
	}
	for _, o := range d.Omitted {
		if o.Repository != dst+"/site/big" {
			t.Errorf("omitted %s at %q", o.Digest, o.Repository)
		}
	}
	fullSize, diffSize := fileSize(t, full), fileSize(t, diff)
	if diffSize > fullSize/2 {
		t.Errorf("differential bundle of %d bytes, the full one %d", diffSize, fullSize)
	}
	// Manifests always go in.
	b, err := Open(diff)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Archive.Stat(context.Background(), res.Catalog.Images[0].Digest); err != nil {
		t.Errorf("the manifest of big:v1 is not in: %v", err)
	}
	b.Close()
	rep, err := Verify(context.Background(), diff)
	if err != nil || len(rep.Problems) > 0 || !rep.Differential {
		t.Fatalf("Verify: %v %s", err, problems(rep))
	}

	// Where nothing is, it is refused whole.
	empty := regtest.GGCR(t, nil)
	_, err = importTo(t, diff, empty+"/site", nil)
	if err == nil || !strings.Contains(err.Error(), "differential") || !strings.Contains(err.Error(), string(d.Receipts[0])) {
		t.Fatalf("import into an empty registry: %v", err)
	}
	if repos := catalogOf(t, empty); len(repos) != 0 {
		t.Errorf("pushed %v", repos)
	}
	// Into another repository of the registry the receipt came from,
	// left-out blobs are mounted from where the receipt says they are.
	ir, err := importTo(t, diff, dst+"/other", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ir.Failed != 0 || digestOf(t, dst+"/other/big:v1") != src.big || digestOf(t, dst+"/other/team/app:v1") != src.app {
		t.Fatalf("import: %+v", ir.Images)
	}
	// A receipt from the registry itself lists the same blobs.
	rr, err := ReceiptFromRegistry(context.Background(), []string{dst + "/site/big"}, ReceiptOptions{Remote: testRemote(), Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Blobs) != 3 || rr.Blobs[0].Repository != dst+"/site/big" {
		t.Errorf("registry receipt: %+v", rr.Blobs)
	}
	rpath := filepath.Join(dir, "reg.json")
	if err := WriteReceipt(rpath, rr); err != nil {
		t.Fatal(err)
	}
	_, res2 := create(t, dir, "diff2.tar", src.refs("big:v1"), func(o *CreateOptions) { o.Since = []string{rpath} })
	if n := len(res2.Catalog.Differential.Omitted); n != 3 {
		t.Errorf("against the registry receipt %d omitted", n)
	}
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestReadReceiptRejects(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"notjson":  "{",
		"type":     `{"mediaType":"application/json","blobs":[]}`,
		"digest":   `{"mediaType":"` + MediaTypeReceipt + `","blobs":[{"digest":"sha256:../../etc/passwd","size":1}]}`,
		"negative": `{"mediaType":"` + MediaTypeReceipt + `","blobs":[{"digest":"sha256:` + strings.Repeat("a", 64) + `","size":-1}]}`,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		if _, _, err := ReadReceipt(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var r Receipt
	p := filepath.Join(dir, "ok.json")
	if err := WriteReceipt(p, &r); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	var back map[string]any
	json.Unmarshal(data, &back)
	if back["mediaType"] != MediaTypeReceipt || back["blobs"] == nil {
		t.Errorf("written: %s", data)
	}
}
