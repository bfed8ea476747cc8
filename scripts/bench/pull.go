package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// clients is how many crane processes pull at once in the concurrent cases.
const clients = 20

// pull measures `crane pull --format oci REF DIR` into a fresh directory,
// checks that it holds at least want bytes of blobs (crane verifies each
// digest), and removes it again.
func (e *env) pull(ctx context.Context, crane *tool, ref, dir, logPath string, want int64) (sample, error) {
	defer os.RemoveAll(dir)
	smp, err := crane.measureArgs(ctx, []string{"pull", "--insecure", "--format", "oci", ref, dir}, logPath, e.o.timeout)
	if err != nil {
		return smp, err
	}
	return smp, checkLayout(dir, want)
}

// pulls runs clients pulls of ref at once, each into its own directory
// and with its own log (logPath with -clientN before .log), and returns
// the wall time until the last one ended.
func (e *env) pulls(ctx context.Context, crane *tool, ref, dir, logPath string, want int64) (time.Duration, error) {
	logPrefix := strings.TrimSuffix(logPath, ".log")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer os.RemoveAll(dir)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := filepath.Join(dir, fmt.Sprint(c))
			_, err := e.pull(ctx, crane, ref, d, fmt.Sprintf("%s-client%d.log", logPrefix, c), want)
			if err != nil {
				errs[c] = fmt.Errorf("client %d: %w", c, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	return wall, errors.Join(errs...)
}

// checkLayout makes sure the OCI layout in dir holds at least want bytes
// of blobs: the layers and configs, plus manifests.
func checkLayout(dir string, want int64) error {
	got, err := dirBytes(filepath.Join(dir, "blobs"))
	if err != nil {
		return fmt.Errorf("checking the pulled layout: %w", err)
	}
	if got < want {
		return fmt.Errorf("the pulled layout holds %d bytes of blobs, the image %d", got, want)
	}
	return nil
}

// headDigest is the digest host serves for repo:tag.
func headDigest(ctx context.Context, host, repo, tag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "+
		"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json")
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s/%s:%s: HTTP %d", host, repo, tag, resp.StatusCode)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// checkDigest makes sure host serves repo:tag as want.
func checkDigest(ctx context.Context, host, repo, tag, want string) error {
	got, err := headDigest(ctx, host, repo, tag)
	if err != nil {
		return fmt.Errorf("checking the result: %w", err)
	}
	if got != want {
		return fmt.Errorf("%s/%s:%s is %s, want %s", host, repo, tag, got, want)
	}
	return nil
}

// imageBlobs lists the digests of an image's config and layers, and
// their total size.
func imageBlobs(ctx context.Context, host, repo, tag string) ([]string, int64, error) {
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return nil, 0, err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return nil, 0, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, 0, err
	}
	blobs := []string{m.Config.Digest.String()}
	total := m.Config.Size
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest.String())
		total += l.Size
	}
	return blobs, total, nil
}
