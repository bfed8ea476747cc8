package gc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-oci/ferry/internal/transfer"
)

// ErrDeleteRefused means the registry does not allow deletes at all.
var ErrDeleteRefused = errors.New("the registry refuses deletes")

// Apply carries out the plan's deletes, some at once: signatures and
// referrers first, then images, then the images of deleted indexes, so
// that nothing is left pointing at a deleted manifest when a run stops
// midway. Each item records its outcome; the plan counts them.
func Apply(ctx context.Context, ep Endpoint, p *Plan, opts Options) {
	phases := [][]string{{KindSignature, KindReferrer}, {KindImage}, {KindUntagged}}
	var refused sync.Once
	for _, kinds := range phases {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(opts.jobs())
		for _, it := range p.Delete {
			if !slices.Contains(kinds, it.Kind) {
				continue
			}
			g.Go(func() error {
				err := deleteItem(gctx, ep, it)
				if errors.Is(err, ErrDeleteRefused) {
					refused.Do(func() {
						p.note("%s refuses deletes: nothing can be collected there until the registry allows them", ep)
					})
				}
				if err != nil {
					it.Error = err.Error()
				} else {
					it.Deleted = true
				}
				return nil
			})
		}
		g.Wait()
	}
	for _, it := range p.Delete {
		if it.Deleted {
			p.Deleted++
		} else {
			p.Failed++
		}
	}
}

// deleteItem deletes a manifest, or only its tags. Before a manifest its
// tags are deleted one by one where the registry can: some registries
// (go-containerregistry's) keep the tags of a deleted manifest.
func deleteItem(ctx context.Context, ep Endpoint, it *Item) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, t := range it.Tags {
		err := ep.DeleteTag(ctx, t)
		switch {
		case errors.Is(err, transfer.ErrTagDeleteUnsupported) && it.UntagOnly:
			return fmt.Errorf("%s:%s: the registry can delete a tag only with its manifest, which must stay; the tag stays", ep, t)
		case errors.Is(err, transfer.ErrTagDeleteUnsupported):
			return ignoreNotFound(explainRefusal(ep, ep.DeleteManifest(ctx, it.Digest)))
		case err != nil && !errors.Is(err, transfer.ErrNotFound):
			return explainRefusal(ep, err)
		}
	}
	if it.UntagOnly {
		return nil
	}
	return ignoreNotFound(explainRefusal(ep, ep.DeleteManifest(ctx, it.Digest)))
}

// ignoreNotFound: what is already gone is deleted.
func ignoreNotFound(err error) error {
	if errors.Is(err, transfer.ErrNotFound) {
		return nil
	}
	return err
}

// explainRefusal turns a registry's refusal of DELETE into an error that
// says so and what to do.
func explainRefusal(ep Endpoint, err error) error {
	var he *transfer.HTTPError
	if !errors.As(err, &he) {
		return err
	}
	if he.StatusCode == http.StatusMethodNotAllowed || slices.Contains(he.Codes, "UNSUPPORTED") {
		return fmt.Errorf("%w (%v): allow deletes on the registry (distribution: storage.delete.enabled: true, or REGISTRY_STORAGE_DELETE_ENABLED=true; ferry serve: drop --read-only)", ErrDeleteRefused, err)
	}
	return err
}

// short abbreviates a digest for reasons: sha256:0123456789ab.
func short(d digest.Digest) string {
	s := string(d)
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13]
	}
	return s
}

// tagList names tags in a reason.
func tagList(tags []string) string {
	if len(tags) == 1 {
		return "tag " + tags[0]
	}
	return "tags " + strings.Join(tags, ", ")
}

// age prints a duration the way retention rules are read: in days past
// two days.
func age(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Minute).String()
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}

// sortedDigests returns the keys of m in order.
func sortedDigests[V any](m map[digest.Digest]V) []digest.Digest {
	out := make([]digest.Digest, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}
