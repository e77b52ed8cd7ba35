package crypto

import (
	"syscall"
	"testing"

	"golang.org/x/crypto/argon2"
)

func minorFaults(t *testing.T) int64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
}

// The derivation after prepareKDFMemory finds its 64 MiB already in place:
// argon2 takes the prepared pages and faults a few times, not once per page
// (16,384 times). Where the system turns huge pages off nothing is prepared.
func TestKDFMemoryPrepared(t *testing.T) {
	off := hugePagesOff()
	const mem = 64 << 10 // KiB
	prepareKDFMemory(mem << 10)
	before := minorFaults(t)
	argon2.IDKey([]byte("password"), []byte("0123456789abcdef"), 1, mem, 4, 32)
	faults := minorFaults(t) - before
	t.Logf("huge pages off: %v; page faults during the derivation: %d", off, faults)
	if !off && faults > 2048 {
		t.Fatalf("the derivation faulted %d times after its memory was prepared, want at most 2048", faults)
	}
	if off && faults < 8192 {
		t.Fatalf("huge pages are off, yet the derivation faulted only %d times: was its memory prepared?", faults)
	}
}
