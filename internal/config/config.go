// Package config reads ferry's TOML configuration files strictly: an unknown
// key or a value of the wrong type is an error that names the file, the line
// and the key.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/ferry-oci/ferry/internal/transport"
)

// File is the global configuration file, config.toml.
type File struct {
	// Registry holds per-registry settings keyed by "host[:port]".
	Registry map[string]transport.RegistryConfig `toml:"registry"`
}

// RegistryConfig returns the settings for host, or the zero value.
func (f *File) RegistryConfig(host string) transport.RegistryConfig {
	if f == nil {
		return transport.RegistryConfig{}
	}
	return f.Registry[host]
}

// DefaultPath is where the global configuration lives when --config is not
// given: $XDG_CONFIG_HOME/ferry/config.toml, else ~/.config/ferry/config.toml.
func DefaultPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "ferry", "config.toml")
}

// Load reads the global configuration at path. A missing file is an empty
// configuration unless required is set (the user named it explicitly).
func Load(path string, required bool) (*File, error) {
	var f File
	if path == "" {
		return &f, nil
	}
	if err := DecodeFile(path, &f); err != nil {
		if !required && errors.Is(err, fs.ErrNotExist) {
			return &File{}, nil
		}
		return nil, err
	}
	for host := range f.Registry {
		if host == "" || strings.ContainsAny(host, "/ \t") {
			return nil, &Error{File: path, Line: keyLine(mustRead(path), toml.Key{"registry", host}), Key: "registry." + host,
				Msg: "a registry table is named by host[:port] only, e.g. [registry.\"registry.example.com:5000\"]"}
		}
	}
	return &f, nil
}

// Error is a configuration error at a place in a file.
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// DecodeFile decodes the TOML file at path into v and rejects keys that v
// has no field for. Errors are *Error, or wrap fs.ErrNotExist for a missing
// file.
func DecodeFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	md, err := toml.Decode(string(data), v)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return &Error{File: path, Line: perr.Position.Line, Key: perr.LastKey, Msg: perr.Message, Err: err}
		}
		// Type mismatches are plain errors: toml: line N (last key "K"): msg
		if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			key, _ := strconv.Unquote(m[2])
			return &Error{File: path, Line: line, Key: key, Msg: m[3], Err: err}
		}
		return &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: "), Err: err}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		k := undecoded[0]
		return &Error{File: path, Line: keyLine(string(data), k), Key: k.String(),
			Msg: "unknown key; check its spelling and the table it is in"}
	}
	return nil
}

var decodeErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

func mustRead(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// keyLine finds the line that defines key by parsing each table header and
// key/value line on its own; it returns 0 when the key is not found on a
// single line (for example inside a multi-line value).
func keyLine(data string, key toml.Key) int {
	want := key.String()
	var table toml.Key
	for i, line := range strings.Split(data, "\n") {
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		var m map[string]any
		md, err := toml.Decode(s, &m)
		if err != nil {
			continue
		}
		keys := md.Keys()
		if len(keys) == 0 {
			continue
		}
		if s[0] == '[' {
			table = keys[0]
			if table.String() == want {
				return i + 1
			}
			continue
		}
		for _, k := range keys {
			full := append(append(toml.Key{}, table...), k...)
			if full.String() == want {
				return i + 1
			}
		}
	}
	return 0
}
