package transfer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/ferry-oci/ferry/internal/regtest"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// openThrough opens repo at the fault proxy p with Go's default
// transport, which does not retry what ferry's transport would.
func openThrough(t *testing.T, p *regtest.FaultProxy, repo string) *transfer.Repository {
	t.Helper()
	r := &transfer.Remote{Transport: func(string) (http.RoundTripper, error) { return http.DefaultTransport, nil }}
	rn, err := name.NewRepository(p.Host() + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := r.Open(context.Background(), rn, false)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// ROBUSTNESS row 3 for what is read whole: a manifest or a small blob
// whose body breaks off mid-read is fetched again; one that always breaks
// off fails, after a bounded number of attempts, naming what was read.
func TestBodyBrokenOffIsFetchedAgain(t *testing.T) {
	up := regtest.GGCR(t, nil)
	want := regtest.PushRandom(t, up+"/app:v1", 1, 4096, "", "")
	p := regtest.Faults(t, up)
	ctx := context.Background()

	resets := p.Inject(regtest.Rule{Method: "GET", Path: `/manifests/`, Times: 2, Fault: regtest.ResetAfter(50)})
	m, err := openThrough(t, p, "app").Manifest(ctx, "v1")
	if err != nil || string(m.Descriptor.Digest) != want {
		t.Fatalf("Manifest after two resets: %v, %v; want %s", m, err, want)
	}
	if resets.Injected() != 2 {
		t.Errorf("%d resets injected, want 2", resets.Injected())
	}

	cut := p.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Times: 1, Fault: regtest.Truncate(10)})
	cfg, err := openThrough(t, p, "app").FetchBlob(ctx, m.Config.Digest, m.Config.Size, 1<<20)
	if err != nil || digest.FromBytes(cfg) != m.Config.Digest || cut.Injected() != 1 {
		t.Fatalf("FetchBlob after a truncated body: %d bytes, %v (%d faults); want the config", len(cfg), err, cut.Injected())
	}

	p.Clear()
	always := p.Inject(regtest.Rule{Method: "GET", Path: `/manifests/`, Fault: regtest.ResetAfter(50)})
	_, err = openThrough(t, p, "app").Manifest(ctx, "v1")
	if err == nil || !strings.Contains(err.Error(), "reading manifest "+p.Host()+"/app:v1") {
		t.Fatalf("a manifest always cut: err %v, want one naming it", err)
	}
	if n := always.Seen(); n < 2 || n > 5 {
		t.Errorf("a manifest always cut was fetched %d times, want a few", n)
	}
}
