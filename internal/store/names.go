package store

import "regexp"

// MaxRepositoryName caps a repository name. The spec's grammar has no
// limit; distribution and most clients stop at 255 (ROBUSTNESS row 28).
const MaxRepositoryName = 255

// repositoryName is the grammar of
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests.
var repositoryName = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// ValidRepositoryName reports whether s is a repository name of the OCI
// distribution spec's grammar, at most MaxRepositoryName bytes. The
// grammar rules out "..", "%2e", uppercase, empty components and leading
// or trailing slashes. The registry keeps such names in a layout's
// annotations and the copy engine checks those it is given, so both ask
// here.
func ValidRepositoryName(s string) bool {
	return len(s) <= MaxRepositoryName && repositoryName.MatchString(s)
}
