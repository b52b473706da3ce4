// Package sandbox turns templates into sandboxes: it builds a template by
// running the guest agent to its snapshot point, and forks sandboxes from a
// loaded template, each a new KVM VM whose memory is a copy-on-write view
// of the template's, through a pool of prepared forks.
package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"forkvm/guest"
	"forkvm/internal/kvm"
	"forkvm/internal/linux"
	"forkvm/internal/snapshot"
)

// BuildOptions describe a template to build.
type BuildOptions struct {
	Name       string   // template name, e.g. "python"
	Rootfs     string   // guest root directory (absolute)
	StateDir   string   // templates go to StateDir/templates/Name
	Preload    []string // modules the agent imports before the snapshot
	MemorySize uint64   // guest memory of every sandbox (the default memory limit)
	Version    string   // forkvm's version, recorded in the manifest
	Timeout    time.Duration
	// Progress, if set, receives a line per build stage.
	Progress func(stage string)
}

// DefaultMemorySize is the guest memory of a template's sandboxes.
const DefaultMemorySize = 1 << 30

// TemplateDir returns where a template of that name is stored.
func TemplateDir(stateDir, name string) string {
	return filepath.Join(stateDir, "templates", name)
}

// ValidName reports whether name can be a template name.
func ValidName(name string) error {
	if name == "" || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" || name[0] == '.' {
		return fmt.Errorf("template name %q: use 1-64 lower-case letters, digits, '-', '_' or '.'", name)
	}
	return nil
}

// Build runs the agent in a fresh VM until its first read of the request
// channel and stores the snapshot as a template, replacing any template of
// that name.
func Build(sys *kvm.System, o BuildOptions) (snapshot.Manifest, error) {
	var m snapshot.Manifest
	if err := ValidName(o.Name); err != nil {
		return m, err
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if o.MemorySize == 0 {
		o.MemorySize = DefaultMemorySize
	}
	if len(o.Preload) == 0 {
		o.Preload = guest.DefaultPreload
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	rootManifest, err := os.ReadFile(filepath.Join(o.Rootfs, "etc/forkvm-rootfs.manifest"))
	if err != nil {
		return m, fmt.Errorf("rootfs %s has no manifest (build it with 'make rootfs'): %w", o.Rootfs, err)
	}
	if err := installAgent(o.Rootfs); err != nil {
		return m, err
	}
	progress(fmt.Sprintf("starting python3 %s in a VM (preloading %s)", guest.AgentPath, strings.Join(o.Preload, ", ")))
	var stdout, stderr, control bytes.Buffer
	start := time.Now()
	p, err := linux.New(sys, linux.Config{
		Path: "/usr/bin/python3", Args: []string{"python3", "-s", guest.AgentPath},
		Env:        append(append([]string{}, linux.DefaultEnv...), "FORKVM_PRELOAD="+strings.Join(o.Preload, ",")),
		MemorySize: o.MemorySize, Timeout: o.Timeout, Root: o.Rootfs,
		Stdout: &stdout, Stderr: &stderr, Template: true, Control: &control,
	})
	if err != nil {
		return m, err
	}
	defer p.Close()
	st, err := p.Run()
	if err != nil {
		return m, err
	}
	if st.Reason != "snapshot" {
		msg := st.Message
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", st.Code)
		}
		return m, fmt.Errorf("the agent ended before its first request (%s): %s", msg, lastLines(stderr.String(), 15))
	}
	stats := p.Stats()
	progress(fmt.Sprintf("agent ready after %v (%d syscalls, %d VM exits); snapshotting", time.Since(start).Round(time.Millisecond), stats.Syscalls, stats.Exits))
	cpu, ms, err := p.SaveMachine()
	if err != nil {
		return m, err
	}
	ps, err := p.Snapshot()
	if err != nil {
		return m, err
	}
	rsum := sha256.Sum256(rootManifest)
	asum := sha256.Sum256(guest.Agent)
	m = snapshot.Manifest{
		Name: o.Name, Language: "python", Created: time.Now().UTC(), ForkvmVersion: o.Version,
		Rootfs: o.Rootfs, RootfsManifest: hex.EncodeToString(rsum[:]), AgentSHA256: hex.EncodeToString(asum[:]),
		Preload: o.Preload, MemorySize: o.MemorySize, BuildTime: time.Since(start), Syscalls: stats.Syscalls,
	}
	dir := TemplateDir(o.StateDir, o.Name)
	progress(fmt.Sprintf("writing %d MiB of guest memory to %s", ms.FramesNext>>20, dir))
	old := dir + ".old"
	os.RemoveAll(old)
	if _, err := os.Stat(dir); err == nil {
		if err := os.Rename(dir, old); err != nil {
			return m, err
		}
	}
	if err := snapshot.Write(dir, m, p.Memory(), cpu, ms, ps); err != nil {
		os.Rename(old, dir)
		return m, err
	}
	os.RemoveAll(old)
	m, err = snapshot.ReadManifest(dir)
	return m, err
}

// installAgent places the agent in the rootfs (a build artifact of
// forkvm's own) where the guest finds it.
func installAgent(rootfs string) error {
	path := filepath.Join(rootfs, guest.AgentPath)
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, guest.Agent) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, guest.Agent, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if out == "" {
		return "(no output on stderr)"
	}
	return out
}

// ErrNoTemplate is returned when a template does not exist.
var ErrNoTemplate = errors.New("no such template")
