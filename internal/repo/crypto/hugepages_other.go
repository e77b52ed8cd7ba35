//go:build !linux

package crypto

// prepareKDFMemory does nothing here: huge pages for the key derivation's
// memory are asked for on Linux only.
func prepareKDFMemory(int) {}
