package gc

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// repoFixture is a repository with releases of known ages, an index, a
// tag that shares a release's manifest, signatures and a referrer.
type repoFixture struct {
	ep                               Endpoint
	v100, v110, v200, v210, idx      digest.Digest
	sig110, sig210, sigGone, sbom110 digest.Digest
	children                         []digest.Digest
	deletesTagsAlone                 bool
}

func newRepoFixture(t *testing.T, host string, deletesTagsAlone bool) *repoFixture {
	t.Helper()
	repo := host + "/team/app"
	now := time.Now()
	day := 24 * time.Hour
	push := func(tag string, age time.Duration) digest.Digest {
		return digest.Digest(regtest.PushImage(t, repo+":"+tag, regtest.Image{Layers: 1, Created: now.Add(-age)}, "", ""))
	}
	f := &repoFixture{deletesTagsAlone: deletesTagsAlone}
	f.v100 = push("1.0.0", 100*day)
	f.v110 = push("1.1.0", 50*day)
	f.v200 = push("2.0.0", 10*day)
	f.v210 = push("2.1.0", day)
	f.idx = digest.Digest(regtest.PushRandomIndex(t, repo+":0.1.0", []string{"linux/amd64", "linux/arm64/v8"}, "", ""))
	retag(t, repo, f.v100, "stable")
	f.sig110 = digest.Digest(regtest.PushSignature(t, repo, string(f.v110), "", ""))
	f.sig210 = digest.Digest(regtest.PushSignature(t, repo, string(f.v210), "", ""))
	f.sbom110 = digest.Digest(regtest.PushReferrer(t, repo, string(f.v110), "application/vnd.example.sbom", "", ""))
	// The signature of an image deleted long ago.
	f.sigGone = digest.Digest(regtest.PushSignature(t, repo, string(digest.FromString("gone")), "", ""))

	ref, err := transfer.ParseReference(repo, false)
	if err != nil {
		t.Fatal(err)
	}
	remote := &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	r, err := remote.Open(context.Background(), ref.Repo, true)
	if err != nil {
		t.Fatal(err)
	}
	f.ep = r
	m, err := r.Manifest(context.Background(), string(f.idx))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Manifests {
		f.children = append(f.children, c.Digest)
	}
	return f
}

func retag(t *testing.T, repo string, d digest.Digest, tag string) {
	t.Helper()
	remote := &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	ref, _ := transfer.ParseReference(repo, false)
	r, err := remote.Open(context.Background(), ref.Repo, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Manifest(context.Background(), string(d))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutManifest(context.Background(), m, tag); err != nil {
		t.Fatal(err)
	}
}

func (f *repoFixture) exists(t *testing.T, id string) bool {
	t.Helper()
	_, err := f.ep.ManifestDigest(context.Background(), id)
	if err != nil && !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("resolving %s: %v", id, err)
	}
	return err == nil
}

func (f *repoFixture) tags(t *testing.T) []string {
	t.Helper()
	tags, err := f.ep.Tags(context.Background(), transfer.TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tags)
	return tags
}

func find(items []*Item, d digest.Digest) *Item {
	for _, it := range items {
		if it.Digest == d {
			return it
		}
	}
	return nil
}

// The rules and protections of a registry collection, on the three
// registries the tests start: go-containerregistry's, ferry's, and
// distribution's (with deletes enabled; it cannot delete a tag alone).
func TestCollectRegistry(t *testing.T) {
	for _, reg := range []struct {
		name      string
		start     func(t *testing.T) string
		tagsAlone bool
	}{
		{"ggcr", func(t *testing.T) string { return regtest.GGCR(t, nil) }, true},
		{"ferry", func(t *testing.T) string { return regtest.Ferry(t, nil) }, true},
		{"distribution", func(t *testing.T) string { return regtest.Distribution(t, regtest.DistributionOptions{}) }, false},
	} {
		t.Run(reg.name, func(t *testing.T) {
			f := newRepoFixture(t, reg.start(t), reg.tagsAlone)
			ctx := context.Background()
			rules := Rules{KeepLast: 2, Keep: []*regexp.Regexp{regexp.MustCompile(`^stable$`)}, Untagged: true, Orphans: true}
			before := f.tags(t)

			p, err := NewPlan(ctx, f.ep, rules, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := f.tags(t); !slices.Equal(got, before) {
				t.Fatalf("planning changed the tags: %v, then %v", before, got)
			}
			// What goes, and why.
			for d, want := range map[digest.Digest]string{
				f.v110: KindImage, f.idx: KindImage, f.sig110: KindSignature, f.sigGone: KindSignature,
				f.sbom110: KindReferrer, f.children[0]: KindUntagged, f.children[1]: KindUntagged,
			} {
				it := find(p.Delete, d)
				if it == nil || it.Kind != want || it.UntagOnly {
					t.Errorf("plan: %s should be deleted as %s; got %+v", d, want, it)
				}
			}
			if it := find(p.Delete, f.v100); it == nil || !it.UntagOnly || !slices.Equal(it.Tags, []string{"1.0.0"}) || !strings.Contains(it.Reason, "stays for tag stable") {
				t.Errorf("plan: 1.0.0 should be untagged only, its manifest kept for stable; got %+v", it)
			}
			for _, d := range []digest.Digest{f.v200, f.v210, f.sig210} {
				if find(p.Delete, d) != nil || find(p.Keep, d) == nil {
					t.Errorf("plan: %s should be kept", d)
				}
			}

			Apply(ctx, f.ep, p, Options{})
			for _, d := range []digest.Digest{f.v110, f.idx, f.sig110, f.sigGone, f.sbom110, f.children[0], f.children[1]} {
				if f.exists(t, string(d)) {
					t.Errorf("%s is still there after gc", d)
				}
			}
			for _, id := range []string{"2.0.0", "2.1.0", "stable", string(f.sig210), transfer.AttachmentTag(f.v210, ".sig")} {
				if !f.exists(t, id) {
					t.Errorf("%s is gone after gc; it should stay", id)
				}
			}
			tags := f.tags(t)
			for _, gone := range []string{"1.1.0", "0.1.0", transfer.AttachmentTag(f.v110, ".sig")} {
				if slices.Contains(tags, gone) {
					t.Errorf("tag %s is still listed after gc: %v", gone, tags)
				}
			}
			untag := find(p.Delete, f.v100)
			if f.deletesTagsAlone {
				if p.Failed != 0 || slices.Contains(tags, "1.0.0") || !untag.Deleted {
					t.Errorf("failed %d; tags %v; want 1.0.0 untagged and nothing failed: %+v", p.Failed, tags, untag)
				}
			} else if p.Failed != 1 || !slices.Contains(tags, "1.0.0") || !strings.Contains(untag.Error, "only with its manifest") {
				t.Errorf("a registry that cannot delete a tag alone: failed %d, tags %v, item %+v; want the 1.0.0 untag to fail, saying why, and the tag to stay", p.Failed, tags, untag)
			}

			// A second run finds nothing more to delete.
			again, err := NewPlan(ctx, f.ep, rules, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range again.Delete {
				if !(it.Digest == f.v100 && !f.deletesTagsAlone) {
					t.Errorf("second run plans to delete %+v", it)
				}
			}
		})
	}
}

// Without --orphans, signatures of deleted images stay and the plan says
// so; --older-than judges by the config's created time.
func TestCollectOlderThanKeepsOrphans(t *testing.T) {
	f := newRepoFixture(t, regtest.Ferry(t, nil), true)
	ctx := context.Background()
	p, err := NewPlan(ctx, f.ep, Rules{OlderThan: 30 * 24 * time.Hour}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{f.v110} {
		if it := find(p.Delete, d); it == nil || !strings.Contains(it.Reason, "past --older-than") {
			t.Errorf("1.1.0, 50 days old, should go: %+v", it)
		}
	}
	// 1.0.0 and stable name one 100-day-old manifest: it goes whole. The
	// index has no created time.
	if it := find(p.Delete, f.v100); it == nil || it.UntagOnly || !slices.Equal(it.Tags, []string{"1.0.0", "stable"}) {
		t.Errorf("1.0.0's manifest, also tagged stable, should be deleted with both tags: %+v", it)
	}
	if it := find(p.Keep, f.idx); it == nil || !strings.Contains(it.Reason, "no created time") {
		t.Errorf("an index without dates should be kept, saying why: %+v", it)
	}
	if find(p.Delete, f.sig110) != nil || find(p.Delete, f.sbom110) != nil {
		t.Error("without --orphans, the signature and SBOM of a deleted image are planned for deletion")
	}
	if !slices.ContainsFunc(p.Notes, func(n string) bool { return strings.Contains(n, "--orphans deletes them") }) {
		t.Errorf("notes %q should say the orphans stay and how to delete them", p.Notes)
	}
}

// A registry that refuses DELETE gets an error that says so and what to do.
func TestCollectRefusedDeletes(t *testing.T) {
	host := regtest.Ferry(t, nil)
	f := newRepoFixture(t, host, true)
	ro := regtest.Faults(t, host)
	ro.Inject(regtest.Rule{Method: http.MethodDelete, Fault: regtest.Status(http.StatusMethodNotAllowed)})
	ref, _ := transfer.ParseReference(ro.Host()+"/team/app", false)
	remote := &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	r, err := remote.Open(context.Background(), ref.Repo, true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(context.Background(), r, Rules{KeepLast: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	Apply(context.Background(), r, p, Options{})
	if p.Failed == 0 || p.Deleted != 0 {
		t.Fatalf("deleted %d, failed %d; want every delete refused", p.Deleted, p.Failed)
	}
	for _, it := range p.Delete {
		if !strings.Contains(it.Error, "refuses deletes") || !strings.Contains(it.Error, "storage.delete.enabled") {
			t.Errorf("%s: error %q should say the registry refuses deletes and how to allow them", it.Digest, it.Error)
		}
	}
	if !f.exists(t, "1.0.0") {
		t.Error("1.0.0 is gone though every delete was refused")
	}
}
