package sim

// CheckFormatForTest is checkFormat, the verifier's check of a
// bpf_snprintf format, for the tests of package sim_test.
var CheckFormatForTest = checkFormat
