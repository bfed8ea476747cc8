package transfer

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/store"
)

// Kind says where content lives.
type Kind int

// Kinds of endpoint, by the prefix of a reference.
const (
	KindRegistry Kind = iota // host/repo:tag or host/repo@digest
	KindLayout               // oci:DIR[:TAG|@DIGEST]
	KindArchive              // oci-archive:FILE[:TAG|@DIGEST]
)

func (k Kind) String() string {
	switch k {
	case KindLayout:
		return "oci"
	case KindArchive:
		return "oci-archive"
	}
	return "registry"
}

// Reference names content at an endpoint, as given on the command line.
type Reference struct {
	Kind Kind
	// Repo is the repository of a registry reference.
	Repo name.Repository
	// Path is the directory or archive file of a layout reference.
	Path string
	// Tag and Digest select the content; either may be empty. When both
	// are set the digest wins and the tag is only a name.
	Tag    string
	Digest digest.Digest
	// Original is the text the user gave.
	Original string
}

// Identifier is the tag or digest a request for this reference uses.
func (r Reference) Identifier() string {
	if r.Digest != "" {
		return string(r.Digest)
	}
	return r.Tag
}

func (r Reference) String() string {
	var b strings.Builder
	switch r.Kind {
	case KindRegistry:
		b.WriteString(r.Repo.Name())
	default:
		b.WriteString(r.Kind.String() + ":" + r.Path)
	}
	if r.Tag != "" {
		b.WriteString(":" + r.Tag)
	}
	if r.Digest != "" {
		b.WriteString("@" + string(r.Digest))
	}
	return b.String()
}

// ParseReference parses a reference in any endpoint form. A registry
// reference without tag or digest gets "latest", as docker does. insecure
// allows plain http to the registry.
func ParseReference(s string, insecure bool) (Reference, error) {
	for _, k := range []Kind{KindArchive, KindLayout} {
		if rest, ok := strings.CutPrefix(s, k.String()+":"); ok {
			return parseLayoutReference(k, rest, s)
		}
	}
	return parseRegistryReference(s, insecure, true)
}

// ParseRepository parses a registry repository with no tag or digest.
func ParseRepository(s string, insecure bool) (name.Repository, error) {
	ref, err := parseRegistryReference(s, insecure, false)
	if err != nil {
		return name.Repository{}, err
	}
	if ref.Tag != "" || ref.Digest != "" {
		return name.Repository{}, fmt.Errorf("%w: %q: expected a repository without a tag or digest, e.g. registry.example.com/team/app", ErrInvalidReference, s)
	}
	return ref.Repo, nil
}

func parseRegistryReference(s string, insecure, defaultTag bool) (Reference, error) {
	ref := Reference{Kind: KindRegistry, Original: s}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	rest := s
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		d, err := ParseDigest(rest[i+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, s, err)
		}
		ref.Digest = d
		rest = rest[:i]
	}
	// A colon after the last slash starts a tag.
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		t, err := name.NewTag(rest, opts...)
		if err != nil {
			return Reference{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, s, err)
		}
		ref.Tag = t.TagStr()
		rest = rest[:i]
	}
	repo, err := name.NewRepository(rest, opts...)
	if err != nil {
		return Reference{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, s, err)
	}
	if !store.ValidRepositoryName(repo.RepositoryStr()) {
		return Reference{}, fmt.Errorf("%w: %q: repository %q is not valid: lowercase letters and digits, separated by '.', '_', '__', '-' or '/'", ErrInvalidReference, s, repo.RepositoryStr())
	}
	ref.Repo = repo
	if defaultTag && ref.Tag == "" && ref.Digest == "" {
		ref.Tag = name.DefaultTag
	}
	return ref, nil
}

func parseLayoutReference(k Kind, rest, orig string) (Reference, error) {
	ref := Reference{Kind: k, Original: orig}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		d, err := ParseDigest(rest[i+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("%w: %q: %v", ErrInvalidReference, orig, err)
		}
		ref.Digest = d
		rest = rest[:i]
	}
	// oci:DIR:NAME splits at the first colon, as skopeo does, so that a
	// name can itself hold colons: oci:root:team/app:v1 names "team/app:v1"
	// in the layout root (a ferry serve root, or a bundle's full
	// references). A Windows drive letter (C:\ or C:/) is part of the path.
	skip := 0
	if len(rest) >= 3 && rest[1] == ':' && (rest[2] == '\\' || rest[2] == '/') && isLetter(rest[0]) {
		skip = 2
	}
	if i := strings.Index(rest[skip:], ":"); i >= 0 {
		i += skip
		ref.Tag = rest[i+1:]
		rest = rest[:i]
		if ref.Tag == "" {
			return Reference{}, fmt.Errorf("%w: %q: empty name after ':'", ErrInvalidReference, orig)
		}
	}
	if rest == "" {
		return Reference{}, fmt.Errorf("%w: %q: missing path, e.g. %s:./images:app", ErrInvalidReference, orig, k)
	}
	ref.Path = rest
	return ref, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// Reader reads manifests, small blobs and tags from an endpoint. A registry
// Repository implements it, and so does a Layout.
type Reader interface {
	// Manifest fetches and validates the manifest for a tag or digest.
	Manifest(ctx context.Context, identifier string) (*Manifest, error)
	// ManifestDigest resolves a tag or digest to a digest as cheaply as
	// the endpoint allows.
	ManifestDigest(ctx context.Context, identifier string) (digest.Digest, error)
	// FetchBlob reads a whole, verified blob of at most limit bytes.
	FetchBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error)
	// Tags lists every tag within the options' caps.
	Tags(ctx context.Context, opts TagOptions) ([]string, error)
}

// Source is an endpoint content is copied from.
type Source interface {
	Reader
	// String names the endpoint for messages: host/repo, oci:DIR, ...
	String() string
	// OpenBlob streams a blob from offset (for resuming after a reset).
	// The stream is not verified: the copy engine checks digest and size.
	OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error)
	// Referrers lists the manifests whose subject is the given manifest,
	// at most limit of them (ROBUSTNESS rows 13, 33).
	Referrers(ctx context.Context, subject ocispec.Descriptor, limit int) ([]ocispec.Descriptor, error)
}

// VerifiedSource is a Source whose blobs were checked against their
// digests just before the copy: a bundle that its import has verified.
// Into a DigestCheckingTarget the engine streams its blobs without hashing
// them a second time: it checks their sizes, and the target their digests.
type VerifiedSource interface {
	Source
	BlobsVerified() bool
}

// DigestCheckingTarget is a Target that checks each blob's digest itself
// before it keeps the blob: a registry as it takes an upload, an OCI
// layout as it writes one.
type DigestCheckingTarget interface {
	Target
	ChecksDigests()
}

// Target is an endpoint content is copied to.
type Target interface {
	// String names the endpoint for messages.
	String() string
	// BlobExists reports whether the target already has the blob.
	BlobExists(ctx context.Context, desc ocispec.Descriptor) (bool, error)
	// WriteBlob stores exactly desc.Size bytes read from r. r is verified
	// by the engine as it is read and fails instead of ending when the
	// content is wrong; a target must not keep a blob whose body failed.
	WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error
	// ManifestExists reports whether the target has the manifest.
	ManifestExists(ctx context.Context, desc ocispec.Descriptor) (bool, error)
	// PutManifest stores m under its digest and, when tag is not empty,
	// points tag at it. Everything m references is already there.
	PutManifest(ctx context.Context, m *Manifest, tag string) error
	// TagDigest returns what tag points at, or an error wrapping
	// ErrNotFound.
	TagDigest(ctx context.Context, tag string) (digest.Digest, error)
}

// Mounter is a Target that can take a blob from another repository of the
// same registry without moving its bytes.
type Mounter interface {
	// Mount asks for desc to be mounted from src; false means the target
	// could not, and the blob must be copied.
	Mount(ctx context.Context, desc ocispec.Descriptor, src Source) (bool, error)
}
