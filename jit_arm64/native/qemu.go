package native

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// QEMUEnv names an environment variable that, when set, is the path of
// the qemu-aarch64 binary to use.
const QEMUEnv = "BPFSIM_QEMU_AARCH64"

var (
	qemuOnce sync.Once
	qemuPath string
	qemuErr  error
)

// QEMU returns the path of qemu-aarch64: $BPFSIM_QEMU_AARCH64, else
// qemu-aarch64 or qemu-aarch64-static on PATH, else what
// scripts/qemu-user.sh (found by walking up from the working directory to
// the module root) installs and prints. The answer is computed once.
func QEMU() (string, error) {
	qemuOnce.Do(func() { qemuPath, qemuErr = findQEMU() })
	return qemuPath, qemuErr
}

func findQEMU() (string, error) {
	if p := os.Getenv(QEMUEnv); p != "" {
		return p, nil
	}
	for _, name := range []string{"qemu-aarch64", "qemu-aarch64-static"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	script, err := findScript("scripts/qemu-user.sh")
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("native: %s failed (%v): %s", script, err, strings.TrimSpace(stderr.String()))
	}
	p := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "", fmt.Errorf("native: %s printed no path", script)
	}
	return p, nil
}

// findScript looks for rel in the working directory and its parents up to
// the directory holding go.mod.
func findScript(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("native: no qemu-aarch64 on PATH and no %s above the working directory to install it", rel)
}

// Options tune Native.
type Options struct {
	// Timeout bounds one qemu process (one batch); a case still running
	// then gets a Fault and the rest run in a new process. Zero means 60 s.
	Timeout time.Duration
	// Chunk is the most cases one process runs; zero means 4096.
	Chunk int
}

// Native returns a Runner that runs cases under the qemu-aarch64 at qemu.
func Native(qemu string, opts Options) Runner {
	return func(cases []Case) ([]Result, error) { return RunNative(qemu, cases, opts) }
}

// RunNative runs cases under qemu-aarch64, as many per process as
// opts.Chunk allows. A case that kills the process gets a Fault naming the
// signal (and qemu's message); the cases after it run in a new process.
// The error is for failures of the harness itself: qemu not starting, an
// output it cannot parse, a case it cannot encode.
func RunNative(qemu string, cases []Case, opts Options) ([]Result, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 4096
	}
	dir, err := os.MkdirTemp("", "bpfsim-native-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	results := make([]Result, 0, len(cases))
	for len(results) < len(cases) {
		rest := cases[len(results):]
		if len(rest) > opts.Chunk {
			rest = rest[:opts.Chunk]
		}
		got, err := runProcess(qemu, dir, rest, opts.Timeout)
		if err != nil {
			return nil, err
		}
		results = append(results, got...)
	}
	return results, nil
}

// runProcess runs one batch and returns the results of the cases that
// completed, plus one faulted result if the process died in a case. It
// returns at least one result.
func runProcess(qemu, dir string, cases []Case, timeout time.Duration) ([]Result, error) {
	b, err := buildBatch(cases)
	if err != nil {
		return nil, err
	}
	exe := filepath.Join(dir, "batch")
	if err := os.WriteFile(exe, b.image, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// No core file from qemu when a case faults: it would be written into
	// the working directory, and it is slow.
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `ulimit -c 0; exec "$0" "$@"`, qemu, exe)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	results, perr := parseRecords(stdout.Bytes(), cases, b)
	if perr != nil {
		return nil, fmt.Errorf("native: %v (qemu: %v; stderr: %s)", perr, runErr, strings.TrimSpace(stderr.String()))
	}
	if runErr == nil {
		if len(results) != len(cases) {
			return nil, fmt.Errorf("native: qemu exited normally after %d of %d cases", len(results), len(cases))
		}
		return results, nil
	}
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) {
		return nil, fmt.Errorf("native: running %s: %w", qemu, runErr)
	}
	if len(results) == len(cases) {
		return nil, fmt.Errorf("native: qemu failed after the last case: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	why := runErr.Error()
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		why = "signal " + ws.Signal().String()
	}
	if ctx.Err() != nil {
		why = fmt.Sprintf("timed out after %v", timeout)
	} else if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Exited() && ws.ExitStatus() == exitShortWrite {
		return nil, fmt.Errorf("native: the runner's write to stdout came up short at case %d", len(results))
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		why += ": " + msg
	}
	return append(results, Result{Fault: why}), nil
}

// parseRecords decodes the records of the cases that completed.
func parseRecords(out []byte, cases []Case, b *batch) ([]Result, error) {
	var results []Result
	for i := 0; len(out) > 0; i++ {
		if i >= len(cases) {
			return nil, fmt.Errorf("%d bytes of output after the last case", len(out))
		}
		n := recordHeader + len(cases[i].Data)
		if len(out) < n {
			return nil, fmt.Errorf("case %d: record of %d bytes cut at %d", i, n, len(out))
		}
		rec := out[:n]
		out = out[n:]
		if m := binary.LittleEndian.Uint32(rec); m != recordMagic {
			return nil, fmt.Errorf("case %d: bad record magic %#x", i, m)
		}
		if idx := binary.LittleEndian.Uint32(rec[4:]); idx != uint32(i) {
			return nil, fmt.Errorf("case %d: record says case %d", i, idx)
		}
		r := Result{
			X0:        binary.LittleEndian.Uint64(rec[8:]),
			Clobbered: uint32(binary.LittleEndian.Uint64(rec[16:])),
			Data:      append([]byte(nil), rec[recordHeader:]...),
		}
		cases[i].unrelocate(r.Data, b.dataAt[i])
		results = append(results, r)
	}
	return results, nil
}
