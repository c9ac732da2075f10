package insn

// Exported for tests.
var (
	FromAsmMarshal = fromAsmMarshal
	FromAsmFast    = fromAsmFast
)
