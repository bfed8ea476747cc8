package bundle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/registry"
)

// A bundle served in place answers pulls under the names an import into
// the registry's root would give, signatures and referrers included, and
// refuses writes.
func TestServeReader(t *testing.T) {
	src := newSource(t).withBig(t)
	// Blobs are sent from the file that holds them (big's layers are over
	// the registry's sendfile size), or read across parts (1 KiB parts).
	for _, split := range []int64{1 << 10, 0} {
		t.Run(fmt.Sprintf("split %d", split), func(t *testing.T) { testServeReader(t, src, split) })
	}
}

func testServeReader(t *testing.T, src *source, split int64) {
	path, res := create(t, t.TempDir(), "b.tar", src.refs("team/app:v1", "multi:v1", "signed:v1", "big:v1", "team/app@"+src.app), func(o *CreateOptions) { o.Split = split })
	if split > 0 && len(res.Files) < 3 {
		t.Fatalf("%d parts", len(res.Files))
	}
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := b.ServeReader()
	if err != nil {
		t.Fatal(err)
	}
	h, err := registry.NewReadOnly(r, registry.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	sigTag := "sha256-" + strings.TrimPrefix(src.signed, "sha256:") + ".sig"
	for ref, want := range map[string]string{
		"team/app:v1":             src.app,
		"team/app@" + src.app:     src.app,
		"multi:v1":                src.multi,
		"signed:v1":               src.signed,
		"signed:" + sigTag:        src.sig,
		"signed@" + src.sbom:      src.sbom,
		"multi:latest":            "",
		"docker.io/team/app:v1":   "",
		src.host + "/team/app:v1": "",
	} {
		if got := digestOf(t, host+"/"+ref); got != want {
			t.Errorf("%s is %q, want %q", ref, got, want)
		}
	}
	// The engine pulls it whole, referrers included.
	dst := regtest.GGCR(t, nil)
	remote := testRemote()
	from, err := remote.Open(context.Background(), mustRepo(t, host+"/signed"), false)
	if err != nil {
		t.Fatal(err)
	}
	to, err := remote.Open(context.Background(), mustRepo(t, dst+"/signed"), true)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := transfer.Copy(context.Background(), from, to, transfer.Request{Source: "v1", Tag: "v1"}, transfer.Options{Referrers: true})
	if err != nil || cr.Referrers != 2 {
		t.Fatalf("copy from the served bundle: %+v %v", cr, err)
	}
	// The engine verifies every byte of big's 3 MiB layers as it copies.
	from, err = remote.Open(context.Background(), mustRepo(t, host+"/big"), false)
	if err != nil {
		t.Fatal(err)
	}
	to, err = remote.Open(context.Background(), mustRepo(t, dst+"/big"), true)
	if err != nil {
		t.Fatal(err)
	}
	if cr, err := transfer.Copy(context.Background(), from, to, transfer.Request{Source: "v1", Tag: "v1"}, transfer.Options{}); err != nil || cr.Digest != digest.Digest(src.big) {
		t.Fatalf("copy of big from the served bundle: %+v %v", cr, err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/team/app/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("an upload got %d", resp.StatusCode)
	}
}

// Two sources that would be served under one name are refused.
func TestServeReaderCollision(t *testing.T) {
	a, b := newSource(t), newSource(t)
	path, _ := create(t, t.TempDir(), "b.tar", append(a.refs("team/app:v1"), b.refs("team/app:v1")...), nil)
	bd, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	if _, err := bd.ServeReader(); err == nil || !strings.Contains(err.Error(), "would both be served as team/app:v1") {
		t.Errorf("err = %v", err)
	}
}
