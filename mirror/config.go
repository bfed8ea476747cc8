// Package mirror keeps copies of many repositories in step with their
// sources, as a TOML config describes them (docs/mirror-config.md): it
// selects tags, plans what differs between source and target from tag
// lists and HEAD requests, copies what changed through internal/transfer
// with one shared blob budget, prunes what is no longer selected, and
// reports every image.
package mirror

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferry-oci/ferry/internal/config"
	"github.com/ferry-oci/ferry/internal/image"
	"github.com/ferry-oci/ferry/internal/transfer"
	"github.com/ferry-oci/ferry/internal/transport"
)

// Defaults for the [defaults] table.
const (
	DefaultImages = 8 // images copied at once
)

// Config is a mirror config file, validated.
type Config struct {
	// Path is the file it was read from.
	Path string
	// Registry holds the file's [registry."host"] tables, with relative
	// file names made absolute. For the hosts it names they replace the
	// global config's tables.
	Registry map[string]transport.RegistryConfig
	// Jobs is the blob budget shared by every image (0: transfer.DefaultJobs).
	Jobs int
	// Images is how many images are copied at once (0: DefaultImages).
	Images int
	// Syncs are the [[sync]] entries, in file order.
	Syncs []*Sync
}

// Sync is one [[sync]] entry: a source repository mirrored to a target.
type Sync struct {
	// Index is the entry's position in the file, from 1, and Line the
	// line of its [[sync]] header.
	Index, Line int
	// From and To are the endpoints as written; paths of oci: and
	// oci-archive: endpoints are made absolute against the config's
	// directory.
	From, To string
	// Platforms selects images from an index; empty copies it whole.
	Platforms []ocispec.Platform
	// Referrers carries signatures, attestations and SBOMs along.
	Referrers bool
	// Prune deletes target tags that are no longer selected.
	Prune bool

	selector  image.TagSelector
	immutable []*regexp.Regexp
	shardKey  string // to, exactly as written
}

// Immutable reports whether tag matches one of the entry's immutable
// patterns.
func (s *Sync) Immutable(tag string) bool {
	for _, re := range s.immutable {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}

// SelectTags applies the entry's [sync.tags] rules to a source's tag
// list. Signature and referrer tags (sha256-<hex>, sha256-<hex>.sig,
// .att, .sbom) are never selected: they travel with the image they belong
// to.
func (s *Sync) SelectTags(tags []string) []string {
	kept := make([]string, 0, len(tags))
	for _, t := range tags {
		if !isReferrerTag(t) {
			kept = append(kept, t)
		}
	}
	return s.selector.Select(kept)
}

// isReferrerTag reports whether t is one of cosign's signature,
// attestation and SBOM tags or a referrers tag schema's index tag.
func isReferrerTag(t string) bool {
	_, _, ok := transfer.ParseAttachmentTag(t)
	return ok
}

// The file's shape. Every key has a field, so config.DecodeFile rejects
// any other with its line.
type fileConfig struct {
	Defaults fileDefaults                        `toml:"defaults"`
	Registry map[string]transport.RegistryConfig `toml:"registry"`
	Sync     []fileSync                          `toml:"sync"`
}

type fileDefaults struct {
	Platforms *[]string `toml:"platforms"`
	Referrers *bool     `toml:"referrers"`
	Jobs      int       `toml:"jobs"`
	Images    int       `toml:"images"`
}

type fileSync struct {
	From      string    `toml:"from"`
	To        string    `toml:"to"`
	Tags      fileTags  `toml:"tags"`
	Platforms *[]string `toml:"platforms"`
	Referrers *bool     `toml:"referrers"`
	Immutable []string  `toml:"immutable"`
	Prune     bool      `toml:"prune"`
}

type fileTags struct {
	Include []string `toml:"include"`
	Exclude []string `toml:"exclude"`
	Glob    []string `toml:"glob"`
	Semver  string   `toml:"semver"`
	Newest  int      `toml:"newest"`
}

// Load reads and validates the mirror config at path. Errors are
// *config.Error naming the file, the line and the key, or wrap
// fs.ErrNotExist.
func Load(path string) (*Config, error) {
	var f fileConfig
	// ferry gc -c reads and checks the [[retention]] tables.
	if err := config.DecodeFile(path, &f, "retention"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	v := &validator{path: path, data: string(data), dir: dir}
	return v.config(&f)
}

// validator turns the decoded file into a Config, or the first error.
type validator struct {
	path, data, dir string
}

// fail makes an error at key in sync entry i (from 1; 0 for keys outside
// [[sync]]).
func (v *validator) fail(i int, key, format string, args ...any) error {
	line := config.EntryKeyLine(v.data, "sync", i, key)
	if line == 0 && i > 0 {
		line = config.EntryKeyLine(v.data, "sync", i, "sync") // a missing key: the entry's header
	}
	return &config.Error{File: v.path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) config(f *fileConfig) (*Config, error) {
	c := &Config{Path: v.path, Registry: map[string]transport.RegistryConfig{}, Jobs: f.Defaults.Jobs, Images: f.Defaults.Images}
	if c.Jobs < 0 {
		return nil, v.fail(0, "defaults.jobs", "%d: expected a positive number of blobs in flight (0 means %d)", c.Jobs, transfer.DefaultJobs)
	}
	if c.Images < 0 {
		return nil, v.fail(0, "defaults.images", "%d: expected a positive number of images at once (0 means %d)", c.Images, DefaultImages)
	}
	for _, host := range slices.Sorted(maps.Keys(f.Registry)) {
		r := f.Registry[host]
		key := "registry." + toml.Key{host}.String()
		if host == "" || strings.ContainsAny(host, "/ \t") {
			return nil, v.fail(0, key, "a registry table is named by host[:port] only, e.g. [registry.\"registry.example.com:5000\"]")
		}
		if k, msg := r.CheckCredentials(); k != "" {
			return nil, v.fail(0, key+"."+k, "%s", msg)
		}
		c.Registry[host] = r.RelativeTo(v.dir)
	}
	defPlatforms, err := v.platforms(0, "defaults.platforms", f.Defaults.Platforms)
	if err != nil {
		return nil, err
	}
	defReferrers := f.Defaults.Referrers == nil || *f.Defaults.Referrers

	if len(f.Sync) == 0 {
		return nil, &config.Error{File: v.path, Key: "sync", Msg: "no [[sync]] entries: nothing to mirror; add one with from and to"}
	}
	targets := map[string]*Sync{}
	for n, fs := range f.Sync {
		s, err := v.sync(n+1, &fs, defPlatforms, defReferrers)
		if err != nil {
			return nil, err
		}
		key := endpointKey(s.To)
		if other, ok := targets[key]; ok {
			return nil, v.fail(s.Index, "sync.to", "%q is also the target of the [[sync]] at line %d: one target per entry, or each would prune the other's tags; merge the two entries", fs.To, other.Line)
		}
		targets[key] = s
		c.Syncs = append(c.Syncs, s)
	}
	return c, nil
}

func (v *validator) sync(i int, f *fileSync, defPlatforms []ocispec.Platform, defReferrers bool) (*Sync, error) {
	s := &Sync{Index: i, Line: config.EntryKeyLine(v.data, "sync", i, "sync"), Prune: f.Prune, Platforms: defPlatforms, Referrers: defReferrers, shardKey: f.To}
	if f.Referrers != nil {
		s.Referrers = *f.Referrers
	}
	if f.Platforms != nil {
		p, err := v.platforms(i, "sync.platforms", f.Platforms)
		if err != nil {
			return nil, err
		}
		s.Platforms = p
	}
	var err error
	if s.From, err = v.endpoint(i, "sync.from", f.From, true); err != nil {
		return nil, err
	}
	if s.To, err = v.endpoint(i, "sync.to", f.To, false); err != nil {
		return nil, err
	}
	if endpointKey(s.From) == endpointKey(s.To) {
		return nil, v.fail(i, "sync.to", "%q is the source as well: mirror to another repository", f.To)
	}

	sel := image.TagSelector{Sort: "semver", Last: f.Tags.Newest, OmitSignatures: true}
	if f.Tags.Newest < 0 {
		return nil, v.fail(i, "sync.tags.newest", "%d: expected how many of the newest versions to keep, or 0 for all", f.Tags.Newest)
	}
	if sel.Include, err = v.regexps(i, "sync.tags.include", f.Tags.Include); err != nil {
		return nil, err
	}
	for _, g := range f.Tags.Glob {
		re, err := globRegexp(g)
		if err != nil {
			return nil, v.fail(i, "sync.tags.glob", "%q: %v", g, err)
		}
		sel.Include = append(sel.Include, re)
	}
	if sel.Exclude, err = v.regexps(i, "sync.tags.exclude", f.Tags.Exclude); err != nil {
		return nil, err
	}
	if f.Tags.Semver != "" {
		if sel.Semver, err = semver.NewConstraint(f.Tags.Semver); err != nil {
			return nil, v.fail(i, "sync.tags.semver", "%q: %v; e.g. \">=1.25, <2\"", f.Tags.Semver, err)
		}
	}
	s.selector = sel
	if s.immutable, err = v.regexps(i, "sync.immutable", f.Immutable); err != nil {
		return nil, err
	}
	return s, nil
}

func (v *validator) regexps(i int, key string, patterns []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(patterns))
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, v.fail(i, key, "%q is not a valid regular expression: %v", p, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func (v *validator) platforms(i int, key string, list *[]string) ([]ocispec.Platform, error) {
	if list == nil {
		return nil, nil
	}
	out := make([]ocispec.Platform, 0, len(*list))
	for _, s := range *list {
		p, err := transfer.ParsePlatform(s)
		if err != nil {
			return nil, v.fail(i, key, "%q: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// endpoint validates a from or to value and makes a layout's path
// absolute against the config's directory.
func (v *validator) endpoint(i int, key, s string, source bool) (string, error) {
	if s == "" {
		return "", v.fail(i, key, "missing: give a repository such as registry.example.com/team/app, or oci:DIR")
	}
	ref, err := transfer.ParseReference(s, false)
	if err != nil {
		return "", v.fail(i, key, "%v", err)
	}
	switch ref.Kind {
	case transfer.KindRegistry:
		if _, err := transfer.ParseRepository(s, false); err != nil {
			return "", v.fail(i, key, "%q: a repository without a tag or digest; choose tags under [sync.tags]", s)
		}
		return s, nil
	case transfer.KindArchive:
		if !source {
			return "", v.fail(i, key, "%q: an oci-archive: file cannot be mirrored into, since it is rewritten whole; use oci:DIR, or ferry bundle", s)
		}
	}
	if ref.Tag != "" || ref.Digest != "" {
		return "", v.fail(i, key, "%q: a layout without a tag or digest; choose tags under [sync.tags]", s)
	}
	return ref.Kind.String() + ":" + v.abs(ref.Path), nil
}

// abs makes a relative path absolute against the config's directory.
func (v *validator) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(v.dir, p)
}

// endpointKey is what makes two endpoints the same for duplicate checks.
func endpointKey(s string) string {
	if strings.HasPrefix(s, "oci:") || strings.HasPrefix(s, "oci-archive:") {
		return s
	}
	repo, err := transfer.ParseRepository(s, false)
	if err != nil {
		return s
	}
	return repo.Name()
}

// globRegexp turns a shell glob (*, ?, [...]) into an anchored regexp.
func globRegexp(g string) (*regexp.Regexp, error) {
	if _, err := path.Match(g, ""); err != nil {
		return nil, fmt.Errorf("not a valid glob: %v", err)
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '\\':
			if i+1 < len(g) {
				i++
				b.WriteString(regexp.QuoteMeta(g[i : i+1]))
			}
		case '[':
			class, end := globClass(g, i)
			b.WriteString(class)
			i = end
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// globClass turns the class that opens at g[i] into a regexp class and
// returns it with the index of its closing "]"; path.Match has checked
// the syntax. As in path.Match, a leading "^" negates, "-" makes a range,
// "\" escapes the next character and every other one is literal: "[\d]"
// is a "d" and "[[:alpha:]]" no POSIX class.
func globClass(g string, i int) (string, int) {
	var b strings.Builder
	b.WriteByte('[')
	j := i + 1
	if j < len(g) && g[j] == '^' {
		b.WriteByte('^')
		j++
	}
	for j < len(g) && g[j] != ']' {
		if g[j] == '-' {
			b.WriteByte('-')
			j++
			continue
		}
		if g[j] == '\\' && j+1 < len(g) {
			j++
		}
		r, n := utf8.DecodeRuneInString(g[j:])
		if r == '-' {
			b.WriteString(`\-`)
		} else {
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
		j += n
	}
	b.WriteByte(']')
	return b.String(), j
}
