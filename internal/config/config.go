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
	"reflect"
	"regexp"
	"slices"
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
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	for host, r := range f.Registry {
		if host == "" || strings.ContainsAny(host, "/ \t") {
			return nil, &Error{File: path, Line: keyLine(mustRead(path), toml.Key{"registry", host}), Key: "registry." + host,
				Msg: "a registry table is named by host[:port] only, e.g. [registry.\"registry.example.com:5000\"]"}
		}
		if key, msg := r.CheckCredentials(); key != "" {
			k := toml.Key{"registry", host, key}
			return nil, &Error{File: path, Line: keyLine(mustRead(path), k), Key: k.String(), Msg: msg}
		}
		f.Registry[host] = r.RelativeTo(dir)
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
// has no field for, except in the top-level tables named in others, which
// another reader of the same file checks. Errors are *Error, or wrap
// fs.ErrNotExist for a missing file.
func DecodeFile(path string, v any, others ...string) error {
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
	undecoded := slices.DeleteFunc(md.Undecoded(), func(k toml.Key) bool { return slices.Contains(others, k[0]) })
	if len(undecoded) > 0 {
		k := undecoded[0]
		return &Error{File: path, Line: keyLine(string(data), k), Key: k.String(),
			Msg: "unknown key; check its spelling and the table it is in"}
	}
	if k, field := caseMismatch(reflect.TypeOf(v), md.Keys()); k != nil {
		return &Error{File: path, Line: keyLine(string(data), k), Key: k.String(),
			Msg: fmt.Sprintf("unknown key; keys are case-sensitive: did you mean %q?", field)}
	}
	return nil
}

// caseMismatch returns the first of keys that names a field of t only
// when case is ignored, and the field's name. TOML keys are case-sensitive,
// but the decoder also puts "Insecure" or "[[SYNC]]" in a field, and of
// two keys that differ only in case it keeps one at random.
func caseMismatch(t reflect.Type, keys []toml.Key) (toml.Key, string) {
	for _, k := range keys {
		typ := t
		for i, part := range k {
			for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array {
				typ = typ.Elem()
			}
			if typ.Kind() == reflect.Map {
				typ = typ.Elem() // any key names an entry
				continue
			}
			if typ.Kind() != reflect.Struct {
				break
			}
			name, field, ok := tomlField(typ, part)
			if !ok {
				break
			}
			if name != part {
				return k[:i+1], name
			}
			typ = field
		}
	}
	return nil, ""
}

// tomlField finds the field of struct t that the decoder fills from key:
// the one named key, else one named so ignoring case. It returns the
// field's TOML name and type.
func tomlField(t reflect.Type, key string) (string, reflect.Type, bool) {
	var name string
	var typ reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		n, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || n == "-" {
			continue
		}
		if n == "" {
			n = f.Name
		}
		if n == key {
			return n, f.Type, true
		}
		if typ == nil && strings.EqualFold(n, key) {
			name, typ = n, f.Type
		}
	}
	return name, typ, typ != nil
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

// EntryKeyLine finds the line that sets key in entry n (from 1) of the
// array of tables named array ([[array]]), or outside its entries when n
// is 0; key array itself is an entry's header. Lines are read one at a
// time, as keyLine does; a key inside a multi-line value is found by its
// name before the "=". It returns 0 when the key is not on any line.
func EntryKeyLine(data, array string, n int, key string) int {
	var table toml.Key
	entry := 0
	for i, line := range strings.Split(data, "\n") {
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			var m map[string]any
			md, err := toml.Decode(s, &m)
			if err != nil || len(md.Keys()) == 0 {
				continue
			}
			table = md.Keys()[0]
			if strings.HasPrefix(s, "[[") && table.String() == array {
				entry++
			} else if len(table) == 0 || table[0] != array {
				entry = 0 // a table after the entries
			}
			if table.String() == key && entry == n {
				return i + 1
			}
			continue
		}
		if entry != n && !(n == 0 && entry == 0) {
			continue
		}
		k, _, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		var parts toml.Key
		var m map[string]any
		if md, err := toml.Decode(strings.TrimSpace(k)+" = 0", &m); err == nil && len(md.Keys()) > 0 {
			parts = md.Keys()[len(md.Keys())-1]
		}
		full := append(append(toml.Key{}, table...), parts...)
		if full.String() == key {
			return i + 1
		}
	}
	return 0
}
