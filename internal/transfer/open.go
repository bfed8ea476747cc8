package transfer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ferry-oci/ferry/internal/store"
)

// OpenSource opens the endpoint ref names for reading. close releases it.
func (r *Remote) OpenSource(ctx context.Context, ref Reference) (src Source, close func() error, err error) {
	nop := func() error { return nil }
	switch ref.Kind {
	case KindRegistry:
		repo, err := r.Open(ctx, ref.Repo, false)
		if err != nil {
			return nil, nil, err
		}
		return repo, nop, nil
	case KindLayout:
		s, err := store.OpenExisting(ref.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", ref.Kind.String()+":"+ref.Path, notFoundErr(err))
		}
		return NewLayout("oci:"+ref.Path, s, r.ManifestLimit), nop, nil
	default:
		a, err := store.OpenArchive(ref.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", "oci-archive:"+ref.Path, notFoundErr(err))
		}
		return NewReadOnlyLayout("oci-archive:"+ref.Path, a, r.ManifestLimit), a.Close, nil
	}
}

func notFoundErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, store.ErrNotFound) {
		return errors.Join(ErrNotFound, err)
	}
	return err
}

// OpenTarget opens the endpoint ref names for writing. from names the
// copy's source, when there is one: a repository on the same registry is
// where blobs can be mounted from. It takes the source's reference rather
// than the opened source, so that both ends can be opened at once.
// finish must be called once: with ok set it completes the write (an
// oci-archive: file is written then, and replaces any file there);
// otherwise it discards what was staged.
func (r *Remote) OpenTarget(ctx context.Context, ref, from Reference) (dst Target, finish func(ok bool) error, err error) {
	switch ref.Kind {
	case KindRegistry:
		var mountFrom []name.Repository
		if from.Kind == KindRegistry && from.Repo.RepositoryStr() != "" {
			mountFrom = append(mountFrom, from.Repo)
		}
		repo, err := r.Open(ctx, ref.Repo, true, mountFrom...)
		if err != nil {
			return nil, nil, err
		}
		return repo, func(bool) error { return nil }, nil
	case KindLayout:
		s, err := store.Open(ref.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("opening oci:%s for writing: %w", ref.Path, err)
		}
		return NewLayout("oci:"+ref.Path, s, r.ManifestLimit), func(bool) error { return nil }, nil
	default:
		return openArchiveTarget(ctx, ref.Path, r.ManifestLimit)
	}
}

// openArchiveTarget stages the content in a layout beside path and, on
// success, writes the tar to a temporary file and renames it over path.
func openArchiveTarget(ctx context.Context, path string, limit int64) (Target, func(bool) error, error) {
	dir := filepath.Dir(path)
	stage, err := os.MkdirTemp(dir, ".ferry-stage-*")
	if err != nil {
		return nil, nil, fmt.Errorf("oci-archive:%s: making a staging directory: %w", path, err)
	}
	s, err := store.Open(stage)
	if err != nil {
		os.RemoveAll(stage)
		return nil, nil, err
	}
	finish := func(ok bool) error {
		defer os.RemoveAll(stage)
		if !ok {
			return nil
		}
		return writeArchiveFile(ctx, path, s)
	}
	return NewLayout("oci-archive:"+path, s, limit), finish, nil
}

func writeArchiveFile(ctx context.Context, path string, s *store.Store) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".ferry-archive-*")
	if err != nil {
		return fmt.Errorf("writing oci-archive:%s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = store.WriteArchive(ctx, f, s); err != nil {
		return fmt.Errorf("writing oci-archive:%s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing oci-archive:%s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing oci-archive:%s: %w", path, err)
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing oci-archive:%s: %w", path, err)
	}
	return nil
}
