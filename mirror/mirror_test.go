package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

func retag(t *testing.T, src, tag string) {
	t.Helper()
	ref, err := name.NewDigest(src)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(ref.Context().Tag(tag), desc); err != nil {
		t.Fatal(err)
	}
}

// headDigest asks a registry for a tag's digest, outside the counters'
// interest (callers reset them afterwards).
func headDigest(t *testing.T, ref string) digest.Digest {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return digest.Digest(desc.Digest.String())
}

func getManifest(t *testing.T, ref string) map[string]any {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatalf("GET %s: %v", ref, err)
	}
	var m map[string]any
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func tagsOf(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r)
	if err != nil {
		t.Fatalf("listing %s: %v", repo, err)
	}
	return tags
}

func sigTag(d string) string { return strings.Replace(d, ":", "-", 1) + ".sig" }

// seedApp pushes app with versions 1.0.0, 1.1.0, 2.0.0 and 2.1.0-rc1 (1.0.0
// and 1.0.1 the same image), and a cosign signature for 1.1.0.
func seedApp(t *testing.T, src *counted) map[string]string {
	t.Helper()
	d := map[string]string{}
	for _, tag := range []string{"1.0.0", "1.1.0", "2.0.0", "2.1.0-rc1"} {
		d[tag] = regtest.PushImage(t, src.Host+"/app:"+tag, regtest.Image{Layers: 2}, "", "")
	}
	retag(t, src.Host+"/app@"+d["1.0.0"], "1.0.1")
	d["1.0.1"] = d["1.0.0"]
	d["sig"] = regtest.PushSignature(t, src.Host+"/app", d["1.1.0"], "", "")
	return d
}

// TestNoChangeRerun is the incremental contract: a rerun where nothing
// changed makes only tag-list, HEAD (and, with referrers, referrers-API)
// requests at the source, copies nothing, and reads no manifest and no
// blob there.
func TestNoChangeRerun(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			src, dst := newCounted(t), newCounted(t)
			seedApp(t, src)
			cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
[defaults]
referrers = %v

[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.exclude = ['-rc']
`, referrers, src.Host, dst.Host))

			src.reset()
			first := mirrorRun(t, cfg, Options{})
			if got, want := actions(first), "copy 1.0.0 (new)\ncopy 1.0.1 (new)\ncopy 1.1.0 (new)\ncopy 2.0.0 (new)"; got != want {
				t.Fatalf("first run:\n%s\nwant:\n%s", got, want)
			}
			if s := first.Summary; s.Copied != 4 || s.Failed != 0 || s.Bytes == 0 {
				t.Fatalf("first run summary %+v", s)
			}
			if referrers && !contains(tagsOf(t, dst.Host+"/mirror/app"), sigTag(item(t, first, "1.1.0").Digest.String())) {
				t.Errorf("the signature of 1.1.0 was not carried along: %v", tagsOf(t, dst.Host+"/mirror/app"))
			}
			// 1.0.0 and 1.0.1 are one image: its blobs moved once.
			uploads := 0
			for _, r := range dst.take() {
				if r.Method == http.MethodPost && r.Kind == "uploads" {
					uploads++
				}
			}
			wantUploads := 3 * 3 // 3 images (1.0.1 is 1.0.0) of a config and 2 layers
			if referrers {
				wantUploads += 2 // the signature's config and layer
			}
			if uploads != wantUploads {
				t.Errorf("%d blob uploads, want %d: a blob shared by two tags must move once", uploads, wantUploads)
			}

			src.reset()
			dst.reset()
			second := mirrorRun(t, cfg, Options{})
			if got, want := actions(second), "skip 1.0.0 (unchanged)\nskip 1.0.1 (unchanged)\nskip 1.1.0 (unchanged)\nskip 2.0.0 (unchanged)"; got != want {
				t.Fatalf("rerun:\n%s\nwant:\n%s", got, want)
			}
			if s := second.Summary; s.Copied != 0 || s.Bytes != 0 {
				t.Errorf("rerun summary %+v: nothing should move", s)
			}
			reqs := src.take()
			for _, r := range reqs {
				switch {
				case r.Kind == "ping", r.Kind == "tags" && r.Method == http.MethodGet:
				case r.Kind == "manifests" && r.Method == http.MethodHead:
				case referrers && r.Kind == "referrers" && r.Method == http.MethodGet:
				default:
					t.Errorf("source request %s: a no-change rerun makes only tag-list and HEAD requests", r)
				}
			}
			got := summary(reqs)
			// One HEAD per tag, plus, with referrers, the signature tag of
			// 1.1.0 (HEAD on both sides) and one referrers query per image.
			wantHeads, wantReferrers := 4, 0
			if referrers {
				wantHeads, wantReferrers = 5, 4
			}
			if got["GET tags"] != 1 || got["HEAD manifests"] != wantHeads || got["GET referrers"] != wantReferrers || got["GET manifests"] != 0 || got["GET blobs"]+got["HEAD blobs"] != 0 {
				t.Errorf("source requests %v, want 1 tag list, %d HEADs, %d referrers queries, no manifest or blob GET:\n%s", got, wantHeads, wantReferrers, dump(reqs))
			}
			t.Logf("no-change rerun, source: %v", got)
			t.Logf("no-change rerun, target: %v", summary(dst.take()))
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestImmutableMakesNoRequest: an immutable tag the target has costs no
// request for it on either side; one the target lacks is copied.
func TestImmutableMakesNoRequest(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	d := seedApp(t, src)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.include = ['^1\.']
immutable = ['^1\.0\.']
`, src.Host, dst.Host))
	mirrorRun(t, cfg, Options{})
	// 1.0.0 moves at the source; being immutable, the mirror keeps the old.
	regtest.PushImage(t, src.Host+"/app:1.0.0", regtest.Image{Layers: 1}, "", "")
	src.reset()
	dst.reset()
	rep := mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 1.0.0 (immutable)\nskip 1.0.1 (immutable)\nskip 1.1.0 (unchanged)"; got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	for _, c := range []*counted{src, dst} {
		for _, r := range c.take() {
			if r.Ref == "1.0.0" || r.Ref == "1.0.1" || r.Ref == d["1.0.0"] || r.Ref == sigTag(d["1.0.0"]) {
				t.Errorf("request %s for an immutable tag the target has", r)
			}
		}
	}
	if got := headDigest(t, dst.Host+"/mirror/app:1.0.0"); got.String() != d["1.0.0"] {
		t.Errorf("immutable 1.0.0 at the target is %s, want the original %s", got, d["1.0.0"])
	}
}

// TestChangedTagIsCopied: a tag that moved is copied again, the others
// are not; a new signature on an unchanged image is picked up, and so is
// a referrer attached through the referrers API.
func TestChangedTagIsCopied(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	d := seedApp(t, src)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.semver = ">=1.1"
`, src.Host, dst.Host))
	mirrorRun(t, cfg, Options{})

	moved := regtest.PushImage(t, src.Host+"/app:2.0.0", regtest.Image{Layers: 1}, "", "")
	rep := mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 1.1.0 (unchanged)\ncopy 2.0.0 (changed)"; got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if it := item(t, rep, "2.0.0"); it.Digest.String() != moved || it.Bytes == 0 {
		t.Errorf("2.0.0 copied as %s (%d bytes), want %s", it.Digest, it.Bytes, moved)
	}
	if got := headDigest(t, dst.Host+"/mirror/app:2.0.0"); got.String() != moved {
		t.Errorf("target 2.0.0 is %s, want %s", got, moved)
	}

	// A signature for 2.0.0 appears after it was mirrored.
	sig := regtest.PushSignature(t, src.Host+"/app", moved, "", "")
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 1.1.0 (unchanged)\ncopy 2.0.0 (signatures changed)"; got != want {
		t.Fatalf("after signing:\n%s\nwant:\n%s", got, want)
	}
	if got := headDigest(t, dst.Host+"/mirror/app:"+sigTag(moved)); got.String() != sig {
		t.Errorf("target signature %s, want %s", got, sig)
	}
	// An SBOM through the referrers API.
	sbom := regtest.PushReferrer(t, src.Host+"/app", d["1.1.0"], "application/vnd.example.sbom", "", "")
	src.reset()
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "copy 1.1.0 (new referrers)\nskip 2.0.0 (unchanged)"; got != want {
		t.Fatalf("after an SBOM:\n%s\nwant:\n%s", got, want)
	}
	if headDigest(t, dst.Host+"/mirror/app@"+sbom).String() != sbom {
		t.Errorf("the SBOM did not reach the target")
	}
	// And then it is quiet again.
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 1.1.0 (unchanged)\nskip 2.0.0 (unchanged)"; got != want {
		t.Fatalf("settled:\n%s\nwant:\n%s", got, want)
	}
}

// TestPlatformSubset: a platform subset is an index annotated with its
// source, so a rerun tells "unchanged" from a HEAD at the source and a
// GET of the target's own index, never a GET at the source.
func TestPlatformSubset(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	idx := regtest.PushRandomIndex(t, src.Host+"/multi:1.0", []string{"linux/amd64", "linux/arm64/v8", "linux/arm/v7"}, "", "")
	plain := regtest.PushImage(t, src.Host+"/multi:plain", regtest.Image{Layers: 1}, "", "")
	dir := t.TempDir()
	config := func(platforms string) *Config {
		return writeConfig(t, dir, fmt.Sprintf(`
[defaults]
platforms = [%s]

[[sync]]
from = "%s/multi"
to   = "%s/mirror/multi"
`, platforms, src.Host, dst.Host))
	}
	cfg := config(`"linux/amd64", "linux/arm64"`)
	rep := mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "copy plain (new)\ncopy 1.0 (new)"; got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	m := getManifest(t, dst.Host+"/mirror/multi:1.0")
	ann, _ := m["annotations"].(map[string]any)
	if ann[transfer.AnnotationSourceDigest] != idx || ann[transfer.AnnotationSourcePlatforms] != "linux/amd64,linux/arm64" {
		t.Errorf("target index annotations %v, want the source digest %s and the platforms", ann, idx)
	}
	if n := len(m["manifests"].([]any)); n != 2 {
		t.Errorf("target index has %d manifests, want 2", n)
	}
	if it := item(t, rep, "1.0"); it.SourceDigest.String() != idx || it.Digest.String() == idx {
		t.Errorf("1.0: source %s target %s; want source %s and a new index", it.SourceDigest, it.Digest, idx)
	}

	src.reset()
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip plain (unchanged)\nskip 1.0 (unchanged)"; got != want {
		t.Fatalf("rerun:\n%s\nwant:\n%s", got, want)
	}
	for _, r := range src.take() {
		if r.Method == http.MethodGet && (r.Kind == "manifests" || r.Kind == "blobs") {
			t.Errorf("source request %s on a no-change rerun", r)
		}
	}
	if it := item(t, rep, "plain"); it.Digest.String() != plain {
		t.Errorf("plain at the target is %s, want %s (an image is copied as it is)", it.Digest, plain)
	}

	// Fewer platforms: copied again, as an index of one that still says
	// where it came from.
	cfg = config(`"linux/arm64"`)
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip plain (unchanged)\ncopy 1.0 (platforms changed)"; got != want {
		t.Fatalf("new platforms:\n%s\nwant:\n%s", got, want)
	}
	m = getManifest(t, dst.Host+"/mirror/multi:1.0")
	if n := len(m["manifests"].([]any)); n != 1 {
		t.Errorf("target index has %d manifests, want 1", n)
	}
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip plain (unchanged)\nskip 1.0 (unchanged)"; got != want {
		t.Fatalf("rerun of one platform:\n%s\nwant:\n%s", got, want)
	}

	// The source index moves.
	regtest.PushRandomIndex(t, src.Host+"/multi:1.0", []string{"linux/amd64", "linux/arm64/v8"}, "", "")
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip plain (unchanged)\ncopy 1.0 (changed)"; got != want {
		t.Fatalf("after the source moved:\n%s\nwant:\n%s", got, want)
	}

	// All platforms again: the whole index, byte for byte.
	cfg = config(``)
	rep = mirrorRun(t, cfg, Options{})
	if it := item(t, rep, "1.0"); it.Action != ActionCopy || it.Digest != it.SourceDigest {
		t.Errorf("all platforms: %s %s → %s, want a copy of the source index", it.Action, it.SourceDigest, it.Digest)
	}
}

// TestPrune deletes target tags that are no longer selected and the
// signatures of the images it deletes, never those of an image it keeps;
// a dry run shows the same and deletes nothing.
func TestPrune(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	d := seedApp(t, src)
	dir := t.TempDir()
	all := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
`, src.Host, dst.Host))
	mirrorRun(t, all, Options{})
	sig100 := regtest.PushSignature(t, dst.Host+"/mirror/app", d["1.0.0"], "", "") // on the target only
	_ = sig100

	some := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.include = ['^1\.0\.1$', '^2\.']
tags.exclude = ['-rc']
prune = true
`, src.Host, dst.Host))
	dst.reset()
	dry := mirrorRun(t, some, Options{DryRun: true})
	want := "skip 1.0.1 (unchanged)\nskip 2.0.0 (unchanged)\nprune 1.0.0 (not selected)\nprune 1.1.0 (not selected)\nprune 2.1.0-rc1 (not selected)\nprune " + sigTag(d["1.1.0"]) + " (signature of a pruned image)"
	if got := actions(dry); got != want {
		t.Fatalf("dry run:\n%s\nwant:\n%s", got, want)
	}
	for _, r := range dst.take() {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			t.Errorf("dry run made %s", r)
		}
	}

	rep := mirrorRun(t, some, Options{})
	if got := actions(rep); got != want {
		t.Fatalf("prune:\n%s\nwant:\n%s", got, want)
	}
	tags := tagsOf(t, dst.Host+"/mirror/app")
	for _, gone := range []string{"1.0.0", "1.1.0", "2.1.0-rc1", sigTag(d["1.1.0"])} {
		if contains(tags, gone) {
			t.Errorf("%s is still at the target: %v", gone, tags)
		}
	}
	// 1.0.0 is gone but 1.0.1 is the same image: its signature stays.
	for _, kept := range []string{"1.0.1", "2.0.0", sigTag(d["1.0.0"])} {
		if !contains(tags, kept) {
			t.Errorf("%s was pruned: %v", kept, tags)
		}
	}
	if rep.Summary.Pruned != 4 {
		t.Errorf("summary %+v, want 4 pruned", rep.Summary)
	}

	// Selecting nothing prunes nothing.
	none := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.include = ['^nothing$']
prune = true
`, src.Host, dst.Host))
	rep = mirrorRun(t, none, Options{})
	if len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0].Error, "refusing to prune") {
		t.Errorf("pruning everything: failures %v", rep.Failures)
	}
	if tags := tagsOf(t, dst.Host+"/mirror/app"); !contains(tags, "2.0.0") {
		t.Errorf("tags were pruned although nothing was selected: %v", tags)
	}
}

// TestPartialFailure: a failing image and an entry whose source does not
// exist do not stop the rest.
func TestPartialFailure(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	seedApp(t, src)
	bad := regtest.PushImage(t, src.Host+"/app:bad", regtest.Image{Layers: 1}, "", "")
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
[[sync]]
from = "%s/nothing-here"
to   = "%s/mirror/nothing"

[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
tags.include = ['^1\.1\.0$', '^2\.0\.0$', '^bad$']
`, src.Host, dst.Host, src.Host, dst.Host))
	// The target refuses one manifest.
	dst.setFail(func(r request) int {
		if r.Method == http.MethodPut && r.Kind == "manifests" && r.Ref == "bad" {
			return http.StatusInternalServerError
		}
		return 0
	})
	rep := mirrorRun(t, cfg, Options{})
	if it := item(t, rep, "bad"); it.Err == nil || !strings.Contains(it.Error, "bad") {
		t.Errorf("bad: error %v, want one naming it", it.Err)
	}
	for _, tag := range []string{"1.1.0", "2.0.0"} {
		if it := item(t, rep, tag); it.Err != nil || it.Action != ActionCopy {
			t.Errorf("%s: %s, %v; want it copied", tag, it.Action, it.Err)
		}
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Sync != 1 || !strings.Contains(rep.Failures[0].Error, "nothing-here") {
		t.Errorf("failures %+v, want entry 1 naming its source", rep.Failures)
	}
	if rep.Failed() != 2 || rep.Total() != 4 {
		t.Errorf("failed %d of %d, want 2 of 4", rep.Failed(), rep.Total())
	}
	_ = bad
}

// TestShards: the shards of a config split its images without overlap.
func TestShards(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	seedApp(t, src)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"
`, src.Host, dst.Host))
	seen := map[string]int{}
	for i := 1; i <= 3; i++ {
		rep := mirrorRun(t, cfg, Options{DryRun: true, Shard: Shard{Index: i, Count: 3}})
		for _, it := range rep.Items {
			seen[it.Tag]++
		}
	}
	if len(seen) != 5 {
		t.Errorf("shards covered %v, want all 5 tags", seen)
	}
	for tag, n := range seen {
		if n != 1 {
			t.Errorf("%s is in %d shards", tag, n)
		}
	}
	for _, bad := range []string{"0/3", "4/3", "1/0", "x", "1/"} {
		if _, err := ParseShard(bad); err == nil {
			t.Errorf("ParseShard(%q) succeeded", bad)
		}
	}
}

// TestDryRunMeasures: a dry run writes nothing and reports the bytes the
// real run then moves.
func TestDryRunMeasures(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	seedApp(t, src)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "%s/mirror/app"

[[sync]]
from = "%s/app"
to   = "oci:layout"
tags.include = ['^2\.0\.0$']
`, src.Host, dst.Host, src.Host))
	dry := mirrorRun(t, cfg, Options{DryRun: true})
	for _, r := range dst.take() {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			t.Errorf("dry run made %s", r)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "layout")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the dry run created the layout: %v", err)
	}
	real := mirrorRun(t, cfg, Options{})
	if dry.Summary.Bytes == 0 || dry.Summary.Bytes != real.Summary.Bytes || dry.Summary.Copied != real.Summary.Copied {
		t.Errorf("dry run: %+v; real run: %+v", dry.Summary, real.Summary)
	}
	for i, it := range real.Items {
		if dry.Items[i].Digest != it.Digest {
			t.Errorf("%s: dry run says %s, the copy wrote %s", it.Target, dry.Items[i].Digest, it.Digest)
		}
	}
}

// TestLayoutTarget: mirroring to oci: reruns without source GETs.
func TestLayoutTarget(t *testing.T) {
	src := newCounted(t)
	seedApp(t, src)
	idx := regtest.PushRandomIndex(t, src.Host+"/multi:1.0", []string{"linux/amd64", "linux/arm64/v8"}, "", "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "oci:app"
tags.newest = 2

[[sync]]
from = "%s/multi"
to   = "oci:multi"
platforms = ["linux/arm64"]
`, src.Host, src.Host))
	rep := mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "copy 2.0.0 (new)\ncopy 2.1.0-rc1 (new)\ncopy 1.0 (new)"; got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if it := item(t, rep, "1.0"); it.SourceDigest.String() != idx {
		t.Errorf("1.0 from %s, want %s", it.SourceDigest, idx)
	}
	src.reset()
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 2.0.0 (unchanged)\nskip 2.1.0-rc1 (unchanged)\nskip 1.0 (unchanged)"; got != want {
		t.Fatalf("rerun:\n%s\nwant:\n%s", got, want)
	}
	for _, r := range src.take() {
		if r.Method == http.MethodGet && (r.Kind == "manifests" || r.Kind == "blobs") {
			t.Errorf("source request %s on a no-change rerun", r)
		}
	}

	// Prune in a layout: the tag leaves index.json.
	cfg = writeConfig(t, dir, fmt.Sprintf(`
[[sync]]
from = "%s/app"
to   = "oci:app"
tags.newest = 1
prune = true
`, src.Host))
	rep = mirrorRun(t, cfg, Options{})
	if got, want := actions(rep), "skip 2.1.0-rc1 (unchanged)\nprune 2.0.0 (not selected)"; got != want {
		t.Fatalf("prune:\n%s\nwant:\n%s", got, want)
	}
	ref, _ := transfer.ParseReference("oci:"+filepath.Join(dir, "app"), false)
	layout, closeFn, err := ferryRemote().OpenSource(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	tags, err := layout.Tags(context.Background(), transfer.TagOptions{})
	if err != nil || strings.Join(tags, " ") != "2.1.0-rc1" {
		t.Errorf("layout tags %v, %v; want only 2.1.0-rc1", tags, err)
	}
}

// TestCancel stops promptly with the context's error.
func TestCancel(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	seedApp(t, src)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[[sync]]\nfrom = %q\nto = %q\n", src.Host+"/app", dst.Host+"/mirror/app"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, cfg, Options{Remote: ferryRemote()}); err == nil {
		t.Errorf("Run with a cancelled context succeeded")
	}
}

// TestReferrersAPIAbsent: a source without the referrers API is asked
// once per entry, not once per image, and a rerun still GETs no manifest.
func TestReferrersAPIAbsent(t *testing.T) {
	src, dst := newCounted(t), newCounted(t)
	seedApp(t, src)
	src.setFail(func(r request) int {
		if r.Kind == "referrers" {
			return http.StatusNotFound
		}
		return 0
	})
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[[sync]]\nfrom = %q\nto = %q\n", src.Host+"/app", dst.Host+"/mirror/app"))
	mirrorRun(t, cfg, Options{})
	src.reset()
	rep := mirrorRun(t, cfg, Options{})
	if rep.Summary.Skipped != 5 || rep.Summary.Copied != 0 {
		t.Fatalf("rerun:\n%s", actions(rep))
	}
	got := summary(src.take())
	if got["GET referrers"] != 1 || got["GET manifests"] != 0 {
		t.Errorf("source requests %v: want one referrers query for the entry and no manifest GET", got)
	}
}

// TestCompareWidth: few tags at once close to the registries, many far
// from them, never more than the limit nor fewer than the minimum it
// allows.
func TestCompareWidth(t *testing.T) {
	for _, c := range []struct {
		rtt   time.Duration
		limit int
		want  int
	}{
		{0, 32, minCompareWidth},
		{300 * time.Microsecond, 32, minCompareWidth},
		{2 * time.Millisecond, 32, 8},
		{5 * time.Millisecond, 32, 20},
		{50 * time.Millisecond, 32, 32},
		{50 * time.Millisecond, 6, 6},
		{0, 2, 2},
	} {
		if got := compareWidth(c.rtt, c.limit); got != c.want {
			t.Errorf("compareWidth(%v, %d) = %d, want %d", c.rtt, c.limit, got, c.want)
		}
	}
}
