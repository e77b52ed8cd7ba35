package repo

import "testing"

// TestBufferPool: a buffer given back is handed out again for a size it
// fits (not one far smaller), emptied; at most keep are kept.
func TestBufferPool(t *testing.T) {
	p := bufferPool{keep: 2}
	a := p.get(1000)
	if len(a) != 0 || cap(a) < 1000 {
		t.Fatalf("get(1000): len %d cap %d", len(a), cap(a))
	}
	a = append(a, 1, 2, 3)
	p.put(a)
	if b := p.get(100); cap(b) == cap(a) {
		t.Fatal("a 1000-byte buffer was handed out for 100 bytes")
	}
	b := p.get(900)
	if len(b) != 0 || &b[:1][0] != &a[:1][0] {
		t.Fatal("the buffer given back was not reused, or not emptied")
	}
	p.put(b)
	p.put(make([]byte, 10))
	p.put(make([]byte, 20))
	if len(p.free) != 2 {
		t.Fatalf("%d buffers kept, want 2", len(p.free))
	}
}
