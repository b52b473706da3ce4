package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/sandbox"
	"forkvm/internal/snapshot"

	"github.com/spf13/cobra"
)

// defaultStateDir is where templates live unless --state-dir or
// FORKVM_STATE_DIR says otherwise: the user's data directory.
func defaultStateDir() string {
	if d := os.Getenv("FORKVM_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "forkvm")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "forkvm")
	}
	return filepath.Join(os.TempDir(), "forkvm")
}

func addStateDirFlag(cmd *cobra.Command, dst *string) {
	cmd.PersistentFlags().StringVar(dst, "state-dir", defaultStateDir(), "directory holding templates (env FORKVM_STATE_DIR)")
}

func templateCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Build, list, inspect and remove templates (snapshots of a warm runtime)",
	}
	addStateDirFlag(cmd, &stateDir)
	cmd.AddCommand(templateBuildCmd(&stateDir), templateLsCmd(&stateDir), templateInspectCmd(&stateDir), templateRmCmd(&stateDir))
	return cmd
}

func templateBuildCmd(stateDir *string) *cobra.Command {
	var (
		rootfs, memory string
		preload        []string
	)
	cmd := &cobra.Command{
		Use:   "build [NAME]",
		Short: "Boot the Python agent in a VM, let it import its modules, and snapshot it",
		Long: `Build starts python3 with forkvm's agent in a new VM, lets it import the
preloaded modules (numpy and friends), and snapshots the VM at the agent's
first read of its request channel. Every sandbox forked from the template
starts from that point. NAME defaults to "python"; building replaces an
existing template of that name.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "python"
			if len(args) == 1 {
				name = args[0]
			}
			mem, err := guestMemory(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			root, err := absRootfs(rootfs)
			if err != nil {
				return err
			}
			sys, err := kvm.Open()
			if err != nil {
				return err
			}
			defer sys.Close()
			start := time.Now()
			stop := spinner(fmt.Sprintf("building template %s", name), start)
			m, err := sandbox.Build(sys, sandbox.BuildOptions{
				Name: name, Rootfs: root, StateDir: *stateDir, Preload: preload, MemorySize: mem,
				Version: version, Progress: func(s string) { stop(); fmt.Fprintf(os.Stderr, "forkvm: %s\n", s); stop = spinner("  "+s, start) },
			})
			stop()
			if err != nil {
				return fmt.Errorf("build template %s: %w", name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "template %s built in %v: %d MiB memory image (%d pages), %d syscalls to get ready\n",
				name, time.Since(start).Round(time.Millisecond), m.Sizes["memory.img"]>>20, m.ImagePages, m.Syscalls)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rootfs, "rootfs", "build/rootfs", "guest root directory holding python3 (make rootfs)")
	f.StringVar(&memory, "memory", "1G", "guest memory of each sandbox, its memory limit (KVM keeps ~3 KiB of host memory per MiB of it for every live sandbox)")
	f.StringSliceVar(&preload, "preload", nil, "modules to import before the snapshot (default numpy,json,re,math,random,collections,itertools,functools,datetime,hashlib)")
	return cmd
}

func absRootfs(rootfs string) (string, error) {
	st, err := os.Stat(rootfs)
	if err != nil || !st.IsDir() {
		return "", fmt.Errorf("--rootfs %s: not a directory (build it with 'make rootfs')", rootfs)
	}
	return filepath.Abs(rootfs)
}

// spinner shows a progress line with the elapsed time on a terminal until
// the returned function is called.
func spinner(what string, start time.Time) func() {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r\033[K%s ... %.1fs", what, time.Since(start).Seconds())
			}
		}
	}()
	var once bool
	return func() {
		if !once {
			once = true
			close(done)
			<-finished
		}
	}
}

func listTemplates(stateDir string) ([]snapshot.Manifest, []error) {
	entries, _ := os.ReadDir(filepath.Join(stateDir, "templates"))
	var ms []snapshot.Manifest
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), ".old") {
			continue
		}
		m, err := snapshot.ReadManifest(filepath.Join(stateDir, "templates", e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms, errs
}

func templateLsCmd(stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List templates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, errs := listTemplates(*stateDir)
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tLANGUAGE\tCREATED\tIMAGE\tPRELOAD")
			for _, m := range ms {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d MiB\t%s\n", m.Name, m.Language, m.Created.Local().Format("2006-01-02 15:04"), m.Sizes["memory.img"]>>20, strings.Join(m.Preload, ","))
			}
			w.Flush()
			for _, err := range errs {
				fmt.Fprintf(os.Stderr, "forkvm: %v\n", err)
			}
			return nil
		},
	}
}

func templateInspectCmd(stateDir *string) *cobra.Command {
	var verify bool
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print a template's manifest as JSON (--verify also checks every checksum)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := sandbox.TemplateDir(*stateDir, args[0])
			m, err := snapshot.ReadManifest(dir)
			if err != nil {
				return templateError(args[0], err)
			}
			if verify {
				sys, err := kvm.Open()
				if err != nil {
					return err
				}
				t, err := snapshot.Load(dir, sys)
				if err != nil {
					return templateError(args[0], err)
				}
				t.Close()
			}
			b, _ := json.MarshalIndent(m, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&verify, "verify", false, "load the template and verify its checksums")
	return cmd
}

func templateRmCmd(stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sandbox.ValidName(args[0]); err != nil {
				return err
			}
			dir := sandbox.TemplateDir(*stateDir, args[0])
			if _, err := os.Stat(dir); err != nil {
				return templateError(args[0], err)
			}
			return os.RemoveAll(dir)
		},
	}
}

// templateError turns a template loading error into a sentence that says
// what to do.
func templateError(name string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no template %q: build it with 'forkvm template build %s'", name, name)
	case errors.Is(err, snapshot.ErrCorrupt):
		return fmt.Errorf("template %q cannot be used: %v; rebuild it with 'forkvm template build %s'", name, err, name)
	}
	return fmt.Errorf("template %q: %w", name, err)
}

// openTemplate opens /dev/kvm and loads a template by name.
func openTemplate(stateDir, name string) (*kvm.System, *snapshot.Template, error) {
	sys, err := kvm.Open()
	if err != nil {
		return nil, nil, err
	}
	t, err := loadTemplate(sys, stateDir, name)
	if err != nil {
		sys.Close()
		return nil, nil, err
	}
	return sys, t, nil
}

// loadTemplate loads a template by name.
func loadTemplate(sys *kvm.System, stateDir, name string) (*snapshot.Template, error) {
	if err := sandbox.ValidName(name); err != nil {
		return nil, err
	}
	t, err := snapshot.Load(sandbox.TemplateDir(stateDir, name), sys)
	if err != nil {
		return nil, templateError(name, err)
	}
	return t, nil
}
