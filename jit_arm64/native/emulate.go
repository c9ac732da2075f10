package native

import (
	"fmt"

	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// EmuLimit is the most instructions Emulate lets one case retire before it
// counts as hung.
const EmuLimit = 1 << 24

// Emulate runs each case on jit_arm64/emu under the calling convention of
// the package doc: code in a fresh executable (read-only) area of the
// modules region, Data in a fresh vmalloc area, a fresh zeroed StackSize
// stack, and a fresh CPU. A fault of the code gives Result.Fault; the
// error is for failures to set a case up.
func Emulate(cases []Case) ([]Result, error) {
	s := mem.New()
	tlb := s.NewTLB()
	results := make([]Result, len(cases))
	for i, c := range cases {
		r, err := emulateOne(s, tlb, c)
		if err != nil {
			return nil, fmt.Errorf("native: emulating case %d: %w", i, err)
		}
		results[i] = r
	}
	return results, nil
}

func emulateOne(s *mem.Space, tlb *mem.TLB, c Case) (res Result, err error) {
	if len(c.Code) == 0 || len(c.Code)%4 != 0 {
		return res, fmt.Errorf("code of %d bytes is not whole instructions", len(c.Code))
	}
	var areas []uint64
	defer func() {
		for _, a := range areas {
			if ferr := s.Free(a); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	alloc := func(size uint64, o mem.AllocOptions) (uint64, error) {
		a, err := s.Alloc(max(size, 1), o)
		if err == nil {
			areas = append(areas, a)
		}
		return a, err
	}
	textSize := roundUp(uint64(len(c.Code)), mem.PageSize)
	text, err := alloc(textSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Name: "native_text"})
	if err != nil {
		return res, err
	}
	if err := s.Write(text, c.Code); err != nil {
		return res, err
	}
	if err := s.SetPerm(text, textSize, mem.PermRX); err != nil {
		return res, err
	}
	data, err := alloc(uint64(len(c.Data)), mem.AllocOptions{Region: mem.RegionVmalloc, Perm: mem.PermRW, Name: "native_data"})
	if err != nil {
		return res, err
	}
	buf, err := c.relocated(data)
	if err != nil {
		return res, err
	}
	if err := s.Write(data, buf); err != nil {
		return res, err
	}
	stack, err := alloc(StackSize, mem.AllocOptions{Region: mem.RegionVmalloc, Perm: mem.PermRW, Name: "native_stack"})
	if err != nil {
		return res, err
	}
	top := stack + StackSize

	cpu := emu.New(tlb)
	cpu.Limit = EmuLimit
	cpu.SetX(16, text)
	for r := 19; r <= 29; r++ {
		cpu.SetX(r, CalleeSavedPattern(r))
	}
	cpu.SetSP(top)
	x0, runErr := cpu.Run(text, data, uint64(len(c.Data)))
	if runErr != nil {
		res.Fault = runErr.Error()
		return res, nil
	}
	res.X0 = x0
	for r := 19; r <= 29; r++ {
		if cpu.X(r) != CalleeSavedPattern(r) {
			res.Clobbered |= 1 << uint(r)
		}
	}
	if cpu.SP() != top {
		res.Clobbered |= SPClobbered
	}
	res.Data = make([]byte, len(c.Data))
	if err := s.Read(data, res.Data); err != nil {
		return res, err
	}
	c.unrelocate(res.Data, data)
	return res, nil
}
