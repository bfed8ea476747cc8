package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/store"
)

// Faults between ferry and the registries it talks to (ROBUSTNESS rows 2–5
// and 32, and "nothing lost"): each command runs as a process through
// regtest's fault proxy and either finishes correctly, retrying, or fails
// with an error that names what failed and the exit code for it; then a
// rerun without the fault completes the job. After every run each tag at
// the destination is read in full, every manifest and blob checked against
// its digest: a tag never points at incomplete content.

// image is what pushImage pushed: a manifest, its config and layers, and
// a cosign-style signature tag.
type image struct {
	digest, config string
	layers         []string
	sigTag         string
}

// pushImage pushes to host/repo:v1 a random image of two layers of size
// bytes and a signature for it.
func pushImage(t *testing.T, host, repo string, size int64) image {
	t.Helper()
	img := image{digest: regtest.PushRandom(t, host+"/"+repo+":v1", 2, size, "", "")}
	regtest.PushSignature(t, host+"/"+repo, img.digest, "", "")
	img.sigTag = strings.Replace(img.digest, ":", "-", 1) + ".sig"
	body, err := fetch(host, repo, "manifests", img.digest)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	img.config = string(m.Config.Digest)
	for _, l := range m.Layers {
		img.layers = append(img.layers, string(l.Digest))
	}
	return img
}

// manifestAccept is every manifest type ferry copies.
const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// fetch GETs a manifest or blob ("manifests" or "blobs" is kind) straight
// from the registry at host.
func fetch(host, repo, kind, ref string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/"+kind+"/"+ref, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s %s: %s", kind, ref, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func sha256Digest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// registryContent reads, as a client pulling would, everything each tag
// of repo at host reaches: manifests (the children of indexes too) and
// blobs, each checked against its digest. Anything missing or damaged
// fails the test. It returns the tags' digests.
func registryContent(t *testing.T, host, repo string) map[string]string {
	t.Helper()
	out := map[string]string{}
	body, err := fetch(host, repo, "tags", "list")
	if err != nil {
		return out // no such repository
	}
	var list struct{ Tags []string }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("tags of %s/%s: %v", host, repo, err)
	}
	for _, tag := range list.Tags {
		d, err := readTree(host, repo, tag)
		if err != nil {
			t.Errorf("%s/%s:%s points at incomplete content: %v", host, repo, tag, err)
			continue
		}
		out[tag] = d
	}
	return out
}

// readTree fetches the manifest ref names and everything it references,
// checking each against its digest, and returns the manifest's digest.
func readTree(host, repo, ref string) (string, error) {
	body, err := fetch(host, repo, "manifests", ref)
	if err != nil {
		return "", err
	}
	d := sha256Digest(body)
	if strings.HasPrefix(ref, "sha256:") && d != ref {
		return "", fmt.Errorf("manifest %s hashes to %s", ref, d)
	}
	var m struct {
		Manifests []ocispec.Descriptor
		Config    *ocispec.Descriptor
		Layers    []ocispec.Descriptor
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("manifest %s: %w", d, err)
	}
	for _, c := range m.Manifests {
		if _, err := readTree(host, repo, string(c.Digest)); err != nil {
			return "", err
		}
	}
	blobs := m.Layers
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	for _, b := range blobs {
		if len(b.URLs) > 0 {
			continue // a foreign layer lives elsewhere
		}
		data, err := fetch(host, repo, "blobs", string(b.Digest))
		if err != nil {
			return "", err
		}
		if got := sha256Digest(data); got != string(b.Digest) || int64(len(data)) != b.Size {
			return "", fmt.Errorf("blob %s: %d bytes hashing to %s, want %d", b.Digest, len(data), got, b.Size)
		}
	}
	return d, nil
}

// layoutContent runs the store's full integrity check on the OCI layout in
// dir (every blob's digest, every manifest's references) and fails the
// test on any problem. It returns the layout's tags' digests; a directory
// that is not there has none.
func layoutContent(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	s, err := store.OpenExisting(dir)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotLayout) && creationCutShort(t, dir) {
		return out // not created yet, or its creation was cut short
	}
	if err != nil {
		t.Fatal(err)
	}
	problems, err := s.Check(t.Context())
	if err != nil {
		t.Fatalf("checking %s: %v", dir, err)
	}
	for _, p := range problems {
		t.Errorf("%s: %v", dir, p.Err)
	}
	idx, err := s.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range idx.Manifests {
		if name := m.Annotations[ocispec.AnnotationRefName]; name != "" {
			out[name] = string(m.Digest)
		}
	}
	return out
}

// creationCutShort reports whether dir is a layout whose creation was
// cut short, which store.Open completes: nothing but ferry's own .ferry
// directory, or an oci-layout file (and empty blobs/) without index.json.
func creationCutShort(t *testing.T, dir string) bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case ".ferry", ocispec.ImageLayoutFile:
		case ocispec.ImageBlobsDir:
			if blobs, _ := os.ReadDir(filepath.Join(dir, e.Name())); len(blobs) > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// faultCase is a fault injected into a command's requests, and what the
// command must make of it.
type faultCase struct {
	name string
	dst  bool // at the destination registry; otherwise at the source
	// rule picks the requests; in Path and Query, {config} and {layer}
	// stand for the image's config and first layer digests.
	rule regtest.Rule
	// code is the exit code with the fault in place: 0 when ferry
	// recovers from it, otherwise the fault is lasting and a rerun
	// without it must complete the job.
	code int
	msg  string // a regular expression the error matches, with {config} and {layer} expanded
	// gap: the first two requests the rule matched came at least this far
	// apart (a Retry-After honoured).
	gap time.Duration
	// imageTagged: after the failed run the image's tag is there (and
	// complete) but its signature is not.
	imageTagged bool
	// layouts: run it on copies from or to a layout too, not only
	// between registries. The faults that only the transport sees are
	// the same whatever the other side is.
	layouts bool
}

func (c faultCase) expand(img image, s string) string {
	return strings.NewReplacer("{config}", img.config, "{layer}", img.layers[0]).Replace(s)
}

// copyLayerSize is the size of the layers copied under faults: larger
// than ferry sends in a single POST, so uploads are streamed.
const copyLayerSize = 1536 << 10

// copyFaults are run on the copies between registries, and those marked
// layouts also on the copies whose side they are on is a registry.
var copyFaults = []faultCase{
	{name: "reset mid-blob", rule: regtest.Rule{Method: "GET", Path: `/blobs/{layer}$`, Times: 2, Fault: regtest.ResetAfter(256 << 10)}, layouts: true},
	{name: "reset mid-manifest", rule: regtest.Rule{Method: "GET", Path: `/manifests/`, Times: 1, Fault: regtest.ResetAfter(100)}},
	{name: "truncated blobs", rule: regtest.Rule{Method: "GET", Path: `/blobs/`, Times: 3, Fault: regtest.Truncate(100 << 10)}, layouts: true},
	{name: "stall mid-blob", rule: regtest.Rule{Method: "GET", Path: `/blobs/{layer}$`, Times: 1, Fault: regtest.StallAfter(128<<10, 500*time.Millisecond)}},
	{name: "stall before answering", rule: regtest.Rule{Method: "GET", Path: `/manifests/`, Times: 1, Fault: regtest.Stall(500 * time.Millisecond)}},
	{name: "503 burst", rule: regtest.Rule{Path: `/manifests/`, Times: 3, Fault: regtest.Status(http.StatusServiceUnavailable)}},
	{name: "429 Retry-After seconds", rule: regtest.Rule{Method: "GET", Path: `/blobs/{config}$`, Times: 1, Fault: regtest.TooManyRequests(time.Second)}, gap: time.Second},
	{name: "latency", rule: regtest.Rule{Fault: regtest.Latency(20 * time.Millisecond)}},
	{name: "blob always reset", rule: regtest.Rule{Method: "GET", Path: `/blobs/{layer}$`, Fault: regtest.ResetAfter(1 << 10)}, code: 1, msg: `copying blob {layer} from \S+/app to `, layouts: true},
	{name: "blob altered", rule: regtest.Rule{Method: "GET", Path: `/blobs/{layer}$`, Fault: regtest.Alter(flipLastByte)}, code: 4, msg: `{layer}.*digest`, layouts: true},
	{name: "manifest 500", rule: regtest.Rule{Path: `/manifests/v1$`, Fault: regtest.Status(http.StatusInternalServerError)}, code: 1, msg: `app:v1.*500`},
	{name: "429 beyond the longest wait", rule: regtest.Rule{Path: `/manifests/v1$`, Fault: regtest.TooManyRequests(time.Hour)}, code: 1, msg: `app:v1.*429.*rerun in 1h0m0s, as the registry asks`},

	{dst: true, name: "429 Retry-After date on upload", rule: regtest.Rule{Method: "POST", Path: `/blobs/uploads/$`, Query: `digest={config}`, Times: 1, Fault: regtest.TooManyRequestsUntil(time.Second)}, gap: time.Second},
	{dst: true, name: "500 on an upload's commit", rule: regtest.Rule{Method: "PUT", Path: `/blobs/uploads/`, Times: 1, Fault: regtest.Status(http.StatusInternalServerError)}, layouts: true},
	{dst: true, name: "reset mid-upload", rule: regtest.Rule{Method: "PUT", Path: `/blobs/uploads/`, Times: 1, Fault: regtest.ResetRequestAfter(256 << 10)}, layouts: true},
	{dst: true, name: "503 burst on manifest PUT", rule: regtest.Rule{Method: "PUT", Path: `/manifests/`, Times: 2, Fault: regtest.Status(http.StatusServiceUnavailable)}},
	{dst: true, name: "503 burst on HEAD", rule: regtest.Rule{Method: "HEAD", Times: 3, Fault: regtest.Status(http.StatusServiceUnavailable)}},
	{dst: true, name: "upload always reset", rule: regtest.Rule{Method: "PUT", Path: `/blobs/uploads/`, Fault: regtest.ResetRequestAfter(256 << 10)}, code: 1, msg: `uploading blob \S+/app@sha256:[0-9a-f]{64}`, layouts: true},
	{dst: true, name: "manifest PUT always 500", rule: regtest.Rule{Method: "PUT", Path: `/manifests/`, Fault: regtest.Status(http.StatusInternalServerError)}, code: 1, msg: `/app.*500`, layouts: true},
	{dst: true, name: "signature PUT always 500", rule: regtest.Rule{Method: "PUT", Path: `/manifests/sha256-[0-9a-f]{64}\.sig$`, Fault: regtest.Status(http.StatusInternalServerError)}, code: 1, msg: `\.sig.*500`, imageTagged: true, layouts: true},
}

// flipLastByte damages a body the way a bad disk or a broken proxy
// would: same length, one byte different.
func flipLastByte(_ http.Header, body []byte) []byte {
	if len(body) > 0 {
		body[len(body)-1] ^= 0xff
	}
	return body
}

// TestCopyFaults runs every copy fault on the copies it applies to:
// registry to registry, registry to oci:, and oci: to registry.
func TestCopyFaults(t *testing.T) {
	// A layout source, made from a registry once.
	dir := t.TempDir()
	up := regtest.GGCR(t, nil)
	layoutImg := pushImage(t, up, "app", copyLayerSize)
	if _, _, code := runFerry(t, ferry(dir, "copy", "--progress", "none", up+"/app:v1", "oci:"+filepath.Join(dir, "src")+":v1")); code != 0 {
		t.Fatalf("making the source layout: exit %d", code)
	}
	for _, pair := range []struct {
		name           string
		fromOCI, toOCI bool
	}{
		{name: "registry to registry"},
		{name: "registry to oci", toOCI: true},
		{name: "oci to registry", fromOCI: true},
	} {
		t.Run(pair.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range copyFaults {
				if (pair.fromOCI || pair.toOCI) && (!c.layouts || c.dst && pair.toOCI || !c.dst && pair.fromOCI) {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					src := filepath.Join(dir, "src")
					if !pair.fromOCI {
						src = ""
					}
					testCopyFault(t, c, src, layoutImg, pair.toOCI)
				})
			}
		})
	}
}

// testCopyFault copies app:v1 with the fault c, from the layout
// layoutSrc (holding img) or else a registry, to a layout or a registry.
func testCopyFault(t *testing.T, c faultCase, layoutSrc string, img image, toOCI bool) {
	dir := t.TempDir()
	var srcRef, dstRef string
	var faults *regtest.FaultProxy
	if layoutSrc != "" {
		srcRef = "oci:" + layoutSrc + ":v1"
	} else {
		up := regtest.GGCR(t, nil)
		img = pushImage(t, up, "app", copyLayerSize)
		p := regtest.Faults(t, up)
		srcRef, faults = p.Host()+"/app:v1", p
	}
	var content func() map[string]string
	if toOCI {
		dstRef = "oci:" + filepath.Join(dir, "dst") + ":v1"
		content = func() map[string]string { return layoutContent(t, filepath.Join(dir, "dst")) }
	} else {
		up := regtest.GGCR(t, nil)
		p := regtest.Faults(t, up)
		dstRef = p.Host() + "/app:v1"
		content = func() map[string]string { return registryContent(t, up, "app") }
		if c.dst {
			faults = p
		}
	}
	rule := c.rule
	rule.Path, rule.Query = c.expand(img, rule.Path), c.expand(img, rule.Query)
	hits, _ := runWithFaults(t, ferry(dir, "copy", "--progress", "none", srcRef, dstRef), c.code, c.expand(img, c.msg), injection{faults, rule})
	checkGap(t, hits[0], c.gap)
	got := content()
	if c.code != 0 {
		if _, tagged := got["v1"]; tagged != c.imageTagged {
			t.Errorf("after the failed copy v1 is tagged: %v, want %v", tagged, c.imageTagged)
		}
		if _, signed := got[img.sigTag]; signed {
			t.Errorf("after the failed copy the signature is there")
		}
		faults.Clear()
		if _, _, code := runFerry(t, ferry(dir, "copy", "--progress", "none", srcRef, dstRef)); code != 0 {
			t.Fatalf("rerun: exit %d", code)
		}
		got = content()
	}
	if got["v1"] != img.digest || got[img.sigTag] == "" {
		t.Errorf("destination tags %v, want v1 at %s and %s", got, img.digest, img.sigTag)
	}
}

// injection is a rule to inject at a fault proxy.
type injection struct {
	at   *regtest.FaultProxy
	rule regtest.Rule
}

// runWithFaults runs cmd with the rules injected and checks what every
// fault test checks: each rule injected its fault, the exit code is code,
// and when that is not 0 the error matches the regular expression msg. It
// returns the rules' counters and ferry's stderr.
func runWithFaults(t *testing.T, cmd *exec.Cmd, code int, msg string, injs ...injection) ([]*regtest.Hits, string) {
	t.Helper()
	hits := make([]*regtest.Hits, len(injs))
	for i, in := range injs {
		hits[i] = in.at.Inject(in.rule)
	}
	_, stderr, got := runFerry(t, cmd)
	injected := 0
	for i, h := range hits {
		if h.Injected() == 0 {
			t.Errorf("fault %d (%s) was never injected", i, injs[i].rule.Fault)
		}
		injected += h.Injected()
	}
	t.Logf("faults injected: %d", injected)
	if got != code {
		t.Fatalf("exit %d, want %d", got, code)
	}
	if code != 0 && !regexp.MustCompile(msg).MatchString(stderr) {
		t.Errorf("the error does not match %q:\n%s", msg, stderr)
	}
	return hits, stderr
}

// at returns an injection of each rule at p.
func at(p *regtest.FaultProxy, rules ...regtest.Rule) []injection {
	injs := make([]injection, len(rules))
	for i, r := range rules {
		injs[i] = injection{p, r}
	}
	return injs
}

// checkGap checks that the first two requests hits counted came at least
// gap apart.
func checkGap(t *testing.T, hits *regtest.Hits, gap time.Duration) {
	t.Helper()
	if gap == 0 {
		return
	}
	a := hits.Arrivals()
	if len(a) < 2 {
		t.Errorf("the request was not retried")
	} else if waited := a[1].Sub(a[0]); waited < gap {
		t.Errorf("retried after %s, before the %s Retry-After asked for", waited, gap)
	}
}

// writeFile writes a test file, failing the test on error.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mirrorFaults are faults at the source or the destination of a mirror of
// two repositories to a registry and one to a layout.
var mirrorFaults = []struct {
	name  string
	src   []regtest.Rule
	dst   []regtest.Rule
	code  int
	msg   string
	whole bool // after the failed run, mirror/a is complete and mirror/b untagged
}{
	{name: "transient", src: []regtest.Rule{
		{Method: "GET", Path: `/blobs/`, Times: 2, Fault: regtest.ResetAfter(128)},
		{Path: `/tags/list`, Times: 2, Fault: regtest.Status(http.StatusServiceUnavailable)},
		{Path: `/manifests/`, Times: 1, Fault: regtest.TooManyRequests(time.Second)},
	}, dst: []regtest.Rule{
		{Method: "POST", Path: `/blobs/uploads/`, Times: 1, Fault: regtest.ResetRequestAfter(128)},
		{Method: "PUT", Path: `/manifests/`, Times: 2, Fault: regtest.Status(http.StatusBadGateway)},
	}},
	{name: "one repository's blobs always reset", src: []regtest.Rule{
		{Method: "GET", Path: `^/v2/team/b/blobs/`, Fault: regtest.ResetAfter(1 << 10)},
	}, code: 3, msg: `mirror/b:v1: copying blob sha256:[0-9a-f]{64} from \S+/team/b`, whole: true},
	{name: "every upload refused", dst: []regtest.Rule{
		{Method: "POST", Path: `/blobs/uploads/`, Fault: regtest.Status(http.StatusForbidden)},
	}, code: 3, msg: `mirror/a:v1: .*403`},
	{name: "source unreachable", src: []regtest.Rule{
		{Fault: regtest.Status(http.StatusServiceUnavailable)},
	}, code: 1, msg: `team/a.*503`},
}

// pushTeams pushes the images the mirror tests mirror to host: team/a:v1,
// team/a:v2 and team/b:v1, each of two 256 KiB layers. It returns their
// digests by reference.
func pushTeams(t *testing.T, host string) map[string]string {
	t.Helper()
	want := map[string]string{}
	for _, ref := range []string{"team/a:v1", "team/a:v2", "team/b:v1"} {
		want[ref] = regtest.PushRandom(t, host+"/"+ref, 2, 256<<10, "", "")
	}
	return want
}

// writeMirrorConfig writes dir/mirror.toml with a [[sync]] entry for each
// pair of from and to.
func writeMirrorConfig(t *testing.T, dir string, fromTo ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(fromTo); i += 2 {
		fmt.Fprintf(&b, "[[sync]]\nfrom = %q\nto = %q\n\n", fromTo[i], fromTo[i+1])
	}
	writeFile(t, filepath.Join(dir, "mirror.toml"), b.String())
}

func TestMirrorFaults(t *testing.T) {
	for _, c := range mirrorFaults {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srcUp, dstUp := regtest.GGCR(t, nil), regtest.GGCR(t, nil)
			src, dst := regtest.Faults(t, srcUp), regtest.Faults(t, dstUp)
			want := pushTeams(t, srcUp)
			layout := filepath.Join(dir, "layout")
			writeMirrorConfig(t, dir,
				src.Host()+"/team/a", dst.Host()+"/mirror/a",
				src.Host()+"/team/b", dst.Host()+"/mirror/b",
				src.Host()+"/team/a", "oci:"+layout)
			runWithFaults(t, ferry(dir, "mirror", "--progress", "none", "-c", "mirror.toml"), c.code, c.msg, append(at(src, c.src...), at(dst, c.dst...)...)...)
			a, b := registryContent(t, dstUp, "mirror/a"), registryContent(t, dstUp, "mirror/b")
			l := layoutContent(t, layout)
			if c.code != 0 {
				if c.whole && (a["v1"] != want["team/a:v1"] || a["v2"] != want["team/a:v2"] || len(b) != 0) {
					t.Errorf("after the failed run mirror/a is %v and mirror/b %v; want a complete and b empty", a, b)
				}
				src.Clear()
				dst.Clear()
				if _, _, code := runFerry(t, ferry(dir, "mirror", "--progress", "none", "-c", "mirror.toml")); code != 0 {
					t.Fatalf("rerun: exit %d", code)
				}
				a, b, l = registryContent(t, dstUp, "mirror/a"), registryContent(t, dstUp, "mirror/b"), layoutContent(t, layout)
			}
			if a["v1"] != want["team/a:v1"] || a["v2"] != want["team/a:v2"] || b["v1"] != want["team/b:v1"] ||
				l["v1"] != want["team/a:v1"] || l["v2"] != want["team/a:v2"] {
				t.Errorf("mirrored: mirror/a %v, mirror/b %v, layout %v; want %v", a, b, l, want)
			}
		})
	}
}

// commandFault is a set of faults injected into one command's requests,
// and what the command must make of them: exit code, and unless that is
// 0, an error matching msg.
type commandFault struct {
	name  string
	rules []regtest.Rule
	code  int
	msg   string
}

// TestBundleCreateFaults: bundle create recovers from transient faults at
// the source; a lasting one fails it and leaves no file behind ("a bundle
// is complete or absent"); a rerun makes a bundle that verifies.
func TestBundleCreateFaults(t *testing.T) {
	for _, c := range []commandFault{
		{name: "resets", rules: []regtest.Rule{{Method: "GET", Path: `/blobs/`, Times: 3, Fault: regtest.ResetAfter(32 << 10)}}},
		{name: "503 burst", rules: []regtest.Rule{{Path: `/manifests/`, Times: 3, Fault: regtest.Status(http.StatusServiceUnavailable)}}},
		// The second attempt rewrites the blob in the place the first
		// took in the tar.
		{name: "blob altered once", rules: []regtest.Rule{{Method: "GET", Path: `^/v2/img1/blobs/`, Times: 1, Fault: regtest.Alter(flipLastByte)}}},
		{name: "blob altered", rules: []regtest.Rule{{Method: "GET", Path: `^/v2/img1/blobs/`, Fault: regtest.Alter(flipLastByte)}}, code: 4, msg: `img1.*digest mismatch`},
		{name: "blob always truncated", rules: []regtest.Rule{{Method: "GET", Path: `^/v2/img1/blobs/`, Fault: regtest.Truncate(1 << 10)}}, code: 4, msg: `img1.*shorter than`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			up := regtest.GGCR(t, nil)
			src := regtest.Faults(t, up)
			args := []string{"bundle", "create", "--progress", "none", "-o", "b.tar"}
			for i := range 3 {
				ref := fmt.Sprintf("img%d:v1", i)
				regtest.PushRandom(t, up+"/"+ref, 2, 64<<10, "", "")
				args = append(args, src.Host()+"/"+ref)
			}
			runWithFaults(t, ferry(dir, args...), c.code, c.msg, at(src, c.rules...)...)
			if c.code != 0 {
				if left, _ := filepath.Glob(filepath.Join(dir, "b.tar*")); len(left) > 0 {
					t.Errorf("the failed bundle left %v", left)
				}
				src.Clear()
				if _, _, code := runFerry(t, ferry(dir, args...)); code != 0 {
					t.Fatalf("rerun: exit %d", code)
				}
			}
			if _, _, code := runFerry(t, ferry(dir, "bundle", "verify", "b.tar")); code != 0 {
				t.Errorf("bundle verify: exit %d", code)
			}
		})
	}
}

// TestBundleImportFaults: bundle import into a registry recovers from
// transient faults; uploads of one image that always fail make it exit 3
// with the others complete, and a rerun imports the rest.
func TestBundleImportFaults(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 3)
	for _, c := range []commandFault{
		{name: "transient", rules: []regtest.Rule{
			{Method: "POST", Path: `/blobs/uploads/`, Times: 1, Fault: regtest.TooManyRequestsUntil(time.Second)},
			{Method: "POST", Path: `/blobs/uploads/`, Skip: 1, Times: 2, Fault: regtest.ResetRequestAfter(128)},
			{Method: "HEAD", Path: `/blobs/`, Times: 2, Fault: regtest.Status(http.StatusBadGateway)},
			{Method: "PUT", Path: `/manifests/`, Times: 2, Fault: regtest.Status(http.StatusServiceUnavailable)},
		}},
		{name: "one image's uploads always reset", rules: []regtest.Rule{
			{Method: "POST", Path: `^/v2/site/img1/blobs/uploads/`, Fault: regtest.ResetRequestAfter(16 << 10)},
		}, code: 3, msg: `site/img1:v1: .*uploading blob \S+/site/img1@sha256:`},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := regtest.GGCR(t, nil)
			dst := regtest.Faults(t, up)
			receipt := filepath.Join(t.TempDir(), "receipt.json")
			args := []string{"bundle", "import", "--progress", "none", "--receipt", receipt, "b.tar", "--to", dst.Host() + "/site"}
			runWithFaults(t, ferry(dir, args...), c.code, c.msg, at(dst, c.rules...)...)
			if c.code != 0 {
				_, img1 := registryContent(t, up, "site/img1")["v1"]
				if n := importedTags(t, up, digests); img1 || n != len(digests)-1 {
					t.Errorf("after the failed import %d images are there, img1 among them: %v; want all but img1", n, img1)
				}
				dst.Clear()
				if _, _, code := runFerry(t, ferry(dir, args...)); code != 0 {
					t.Fatalf("rerun: exit %d", code)
				}
			}
			checkImported(t, up, digests)
			data, err := os.ReadFile(receipt)
			if err != nil {
				t.Fatal(err)
			}
			for name := range digests {
				if !strings.Contains(string(data), "site/"+name+":v1") {
					t.Errorf("the receipt does not list site/%s:v1:\n%s", name, data)
				}
			}
		})
	}
}

// signKeys copies the test-only key pair of testdata/keys into dir.
func signKeys(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"test.key", "test.pub"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "keys", f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, f), string(data))
	}
}

// signCmd is ferry sign with the test-only key.
func signCmd(dir, ref string) *exec.Cmd {
	cmd := ferry(dir, "sign", "--key", "test.key", ref)
	cmd.Env = append(cmd.Env, "COSIGN_PASSWORD=ferry-test-only")
	return cmd
}

// TestSignFaults: ferry sign recovers from transient faults; when writing
// the signature always fails it exits 1 naming the signature, leaves no
// signature tag, and verify fails closed until a rerun signs.
func TestSignFaults(t *testing.T) {
	for _, c := range []commandFault{
		{name: "transient", rules: []regtest.Rule{
			{Method: "GET", Path: `/manifests/`, Times: 1, Fault: regtest.ResetAfter(100)},
			{Method: "POST", Path: `/blobs/uploads/`, Times: 1, Fault: regtest.TooManyRequests(time.Second)},
			{Method: "PUT", Path: `/manifests/sha256-[0-9a-f]{64}\.sig$`, Times: 2, Fault: regtest.Status(http.StatusServiceUnavailable)},
		}},
		{name: "signature PUT always 500", rules: []regtest.Rule{
			{Method: "PUT", Path: `/manifests/sha256-[0-9a-f]{64}\.sig$`, Fault: regtest.Status(http.StatusInternalServerError)},
		}, code: 1, msg: `app:sha256-[0-9a-f]{64}\.sig.*500`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			signKeys(t, dir)
			up := regtest.GGCR(t, nil)
			p := regtest.Faults(t, up)
			digest := regtest.PushRandom(t, up+"/app:v1", 1, 4096, "", "")
			ref := p.Host() + "/app@" + digest
			runWithFaults(t, signCmd(dir, ref), c.code, c.msg, at(p, c.rules...)...)
			p.Clear()
			if c.code != 0 {
				if tags := registryContent(t, up, "app"); len(tags) != 1 {
					t.Errorf("after the failed sign the tags are %v, want v1 alone", tags)
				}
				if _, _, code := runFerry(t, ferry(dir, "verify", "--key", "test.pub", ref)); code != 4 {
					t.Errorf("verify after the failed sign: exit %d, want 4", code)
				}
				if _, _, code := runFerry(t, signCmd(dir, ref)); code != 0 {
					t.Fatalf("rerun: exit %d", code)
				}
			}
			registryContent(t, up, "app")
			if _, _, code := runFerry(t, ferry(dir, "verify", "--key", "test.pub", ref)); code != 0 {
				t.Errorf("verify: exit %d, want 0", code)
			}
		})
	}
}

// TestVerifyDamagedContent (ROBUSTNESS row 32): verify never passes when
// what it reads was damaged on the way: the signature payload, the
// signature manifest, or the signed manifest. Transient faults do not make
// it fail.
func TestVerifyDamagedContent(t *testing.T) {
	dir := t.TempDir()
	signKeys(t, dir)
	up := regtest.GGCR(t, nil)
	digest := regtest.PushRandom(t, up+"/app:v1", 1, 4096, "", "")
	if _, _, code := runFerry(t, signCmd(dir, up+"/app@"+digest)); code != 0 {
		t.Fatalf("sign: exit %d", code)
	}
	sigTag := strings.Replace(digest, ":", "-", 1) + ".sig"
	body, err := fetch(up, "app", "manifests", sigTag)
	if err != nil {
		t.Fatal(err)
	}
	var sig ocispec.Manifest
	if err := json.Unmarshal(body, &sig); err != nil || len(sig.Layers) != 1 {
		t.Fatalf("signature manifest %s: %v", body, err)
	}
	payload := string(sig.Layers[0].Digest)

	// A space appended keeps a manifest valid JSON with another digest.
	appendSpace := func(drop bool) func(h http.Header, body []byte) []byte {
		return func(h http.Header, body []byte) []byte {
			if drop {
				h.Del("Docker-Content-Digest")
			}
			return append(body, ' ')
		}
	}
	// A signature that is not the one made: the annotation's first
	// base64 character changed.
	forgeSignature := func(h http.Header, body []byte) []byte {
		h.Del("Docker-Content-Digest")
		return regexp.MustCompile(`("dev.cosignproject.cosign/signature":")(.)`).ReplaceAllFunc(body, func(m []byte) []byte {
			m[len(m)-1] ^= 1
			return m
		})
	}
	for _, c := range []commandFault{
		{name: "payload altered", rules: []regtest.Rule{{Method: "GET", Path: "/blobs/" + payload, Fault: regtest.Alter(flipLastByte)}}, code: 4, msg: `digest mismatch`},
		{name: "payload truncated", rules: []regtest.Rule{{Method: "GET", Path: "/blobs/" + payload, Fault: regtest.Truncate(20)}}, code: 1, msg: `reading blob \S+/app@` + payload + `: unexpected EOF`},
		{name: "signature manifest altered", rules: []regtest.Rule{{Path: `/manifests/sha256-`, Fault: regtest.Alter(appendSpace(false))}}, code: 4, msg: `digest`},
		{name: "signature forged", rules: []regtest.Rule{{Path: `/manifests/sha256-`, Fault: regtest.Alter(forgeSignature)}}, code: 4, msg: `does not verify`},
		{name: "image manifest altered", rules: []regtest.Rule{{Path: `/manifests/v1$`, Fault: regtest.Alter(appendSpace(false))}}, code: 4, msg: `digest`},
		{name: "image manifest altered, digest header dropped", rules: []regtest.Rule{{Path: `/manifests/v1$`, Fault: regtest.Alter(appendSpace(true))}}, code: 4, msg: `no signatures`},
		{name: "503 burst", rules: []regtest.Rule{{Times: 3, Fault: regtest.Status(http.StatusServiceUnavailable)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := regtest.Faults(t, up)
			_, stderr := runWithFaults(t, ferry(dir, "verify", "--key", "test.pub", p.Host()+"/app:v1"), c.code, c.msg, at(p, c.rules...)...)
			if c.code != 0 && !strings.Contains(stderr, "/app:v1") {
				t.Errorf("the error does not name the image:\n%s", stderr)
			}
		})
	}
}
