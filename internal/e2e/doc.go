// Package e2e holds cairn's end-to-end tests: they build the cairn binary, start
// `cairn server` (and `cairn node`) as real processes on random loopback ports in
// temporary directories, and drive them through the API and the CLI while real
// QEMU tools (qemu-img, qemu-io, qemu-storage-daemon, qemu-nbd) write and read
// the volumes. It has no non-test code.
package e2e
