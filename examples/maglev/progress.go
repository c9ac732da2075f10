package main

import (
	"fmt"
	"os"
	"strings"
)

// progress draws a bar on a terminal, and nothing when the output goes
// to a file or a pipe.
type progress struct {
	out   *os.File
	total int
	tty   bool
}

func newProgress(out *os.File, total int) *progress {
	st, err := out.Stat()
	return &progress{out: out, total: total, tty: err == nil && st.Mode()&os.ModeCharDevice != 0}
}

func (p *progress) set(done int) {
	if !p.tty || p.total == 0 {
		return
	}
	const width = 40
	filled := done * width / p.total
	fmt.Fprintf(p.out, "\rsending packets [%s%s] %3d%%", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done*100/p.total)
}

func (p *progress) done() {
	if p.tty {
		p.set(p.total)
		fmt.Fprintln(p.out)
	}
}
