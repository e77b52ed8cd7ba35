// Package blobtest is the one conformance suite that every blob.Store
// implementation runs (mem, local, S3 against a real server, and wrapped
// stores): it checks the contract written in package blob's documentation.
//
// A backend's test calls Run with a function that returns a new, empty store
// for each subtest; the suite closes the stores it gets.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
)

// NewStore returns an empty store for one subtest.
type NewStore func(t *testing.T) blob.Store

// Run runs every conformance check as a subtest of t.
func Run(t *testing.T, newStore NewStore) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"LoadRange", testLoadRange},
		{"Overwrite", testOverwrite},
		{"SizeMismatch", testSizeMismatch},
		{"Missing", testMissing},
		{"Remove", testRemove},
		{"InvalidNames", testInvalidNames},
		{"NestedNames", testNestedNames},
		{"ListMany", testListMany},
		{"ListStops", testListStops},
		{"ConcurrentSameName", testConcurrentSameName},
		{"Cancel", testCancel},
		{"Open", testOpen},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			c.f(t, s)
		})
	}
}

// Data returns n pseudo-random bytes determined by seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func save(t *testing.T, s blob.Store, name string, data []byte) {
	t.Helper()
	if err := blob.SaveBytes(context.Background(), s, name, data); err != nil {
		t.Fatalf("Save %s (%d bytes): %v", name, len(data), err)
	}
}

func load(t *testing.T, s blob.Store, name string, offset, length int64) []byte {
	t.Helper()
	got, err := blob.LoadRange(context.Background(), s, name, offset, length)
	if err != nil {
		t.Fatalf("Load %s [%d+%d]: %v", name, offset, length, err)
	}
	return got
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

func list(t *testing.T, s blob.Store, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := s.List(context.Background(), prefix, func(info blob.Info) error {
		if _, dup := got[info.Name]; dup {
			return fmt.Errorf("%s reported twice", info.Name)
		}
		got[info.Name] = info.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	return got
}

func names(m map[string]int64) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func testRoundTrip(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for i, size := range []int{0, 1, 1000, 64 << 10, 5<<20 + 7} {
		name := fmt.Sprintf("roundtrip/obj-%d", i)
		data := Data(uint64(i), size)
		save(t, s, name, data)
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatalf("Stat %s: %v", name, err)
		}
		if info.Name != name || info.Size != int64(size) {
			t.Fatalf("Stat %s = %+v, want size %d", name, info, size)
		}
		mustEqual(t, "Load "+name, load(t, s, name, 0, 0), data)
	}
	// A reader that returns data in odd-sized pieces.
	data := Data(99, 300_001)
	if err := s.Save(ctx, "roundtrip/odd", oddReader{bytes.NewReader(data)}, int64(len(data))); err != nil {
		t.Fatalf("Save from a multi-reader: %v", err)
	}
	mustEqual(t, "Load roundtrip/odd", load(t, s, "roundtrip/odd", 0, 0), data)
	// The caller may reuse its buffer after Save.
	buf := bytes.Clone(data)
	save(t, s, "roundtrip/reuse", buf)
	clear(buf)
	mustEqual(t, "Load after the caller changed its buffer", load(t, s, "roundtrip/reuse", 0, 0), data)
}

// oddReader reads at most 4093 bytes at a time; it stays seekable so that
// retrying wrappers can rewind it.
type oddReader struct{ *bytes.Reader }

func (o oddReader) Read(p []byte) (int, error) {
	if len(p) > 4093 {
		p = p[:4093]
	}
	return o.Reader.Read(p)
}

func testLoadRange(t *testing.T, s blob.Store) {
	const size = 1 << 20
	data := Data(7, size)
	save(t, s, "range/obj", data)
	save(t, s, "range/empty", nil)
	for _, c := range []struct{ off, n int64 }{
		{0, 10}, {5, 0}, {size - 1, 1}, {size - 1, 0}, {size, 0}, {100, 1000}, {0, size}, {12345, size - 12345},
	} {
		want := data[c.off:]
		if c.n > 0 {
			want = data[c.off : c.off+c.n]
		}
		mustEqual(t, fmt.Sprintf("Load [%d+%d]", c.off, c.n), load(t, s, "range/obj", c.off, c.n), want)
	}
	mustEqual(t, "Load of an empty object", load(t, s, "range/empty", 0, 0), nil)
	for _, c := range []struct {
		name    string
		off, n  int64
		rangeOK bool
	}{
		{"range/obj", size + 1, 0, false},
		{"range/obj", size - 10, 20, false},
		{"range/obj", size, 1, false},
		{"range/obj", -1, 0, false},
		{"range/obj", 0, -5, false},
		{"range/empty", 0, 1, false},
		{"range/empty", 1, 0, false},
	} {
		rc, err := s.Load(context.Background(), c.name, c.off, c.n)
		if err == nil {
			rc.Close()
			t.Fatalf("Load %s [%d+%d] outside the object succeeded", c.name, c.off, c.n)
		}
		if !errors.Is(err, blob.ErrRange) {
			t.Fatalf("Load %s [%d+%d]: error %v is not blob.ErrRange", c.name, c.off, c.n, err)
		}
	}
	// Reading a range in small pieces.
	rc, err := s.Load(context.Background(), "range/obj", 1000, 5000)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []byte
	p := make([]byte, 333)
	for {
		n, err := rc.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading in pieces: %v", err)
		}
	}
	mustEqual(t, "pieces", got, data[1000:6000])
}

func testOverwrite(t *testing.T, s blob.Store) {
	// Documented: Save is create-or-replace.
	a, b := Data(1, 100_000), Data(2, 4_000)
	save(t, s, "over/x", a)
	save(t, s, "over/x", b)
	mustEqual(t, "after overwrite", load(t, s, "over/x", 0, 0), b)
	info, err := s.Stat(context.Background(), "over/x")
	if err != nil || info.Size != int64(len(b)) {
		t.Fatalf("Stat after overwrite = %+v, %v; want size %d", info, err, len(b))
	}
	if got := list(t, s, "over/"); len(got) != 1 || got["over/x"] != int64(len(b)) {
		t.Fatalf("List after overwrite = %v", got)
	}
}

// shortReader ends before its announced size.
func testSizeMismatch(t *testing.T, s blob.Store) {
	ctx := context.Background()
	data := Data(3, 10_000)
	err := s.Save(ctx, "size/short", bytes.NewReader(data), int64(len(data)+1))
	if err == nil {
		t.Fatal("Save with a reader shorter than size succeeded")
	}
	if _, err := s.Stat(ctx, "size/short"); !blob.IsNotExist(err) {
		t.Fatalf("after a short Save, Stat = %v; want IsNotExist", err)
	}
	if err := s.Save(ctx, "size/long", bytes.NewReader(data), int64(len(data)-1)); err == nil {
		t.Fatal("Save with a reader longer than size succeeded")
	}
	if _, err := s.Stat(ctx, "size/long"); !blob.IsNotExist(err) {
		t.Fatalf("after a long Save, Stat = %v; want IsNotExist", err)
	}
	// The same with a reader of bytes in memory, which a store may take
	// whole (blob.BytesReader), and one partly read already.
	if err := s.Save(ctx, "size/bytes-short", blob.NewBytesReader(data), int64(len(data)+1)); err == nil {
		t.Fatal("Save with a BytesReader shorter than size succeeded")
	}
	if err := s.Save(ctx, "size/bytes-long", blob.NewBytesReader(data), int64(len(data)-1)); err == nil {
		t.Fatal("Save with a BytesReader longer than size succeeded")
	}
	for _, name := range []string{"size/bytes-short", "size/bytes-long"} {
		if _, err := s.Stat(ctx, name); !blob.IsNotExist(err) {
			t.Fatalf("after a failed Save, Stat(%s) = %v; want IsNotExist", name, err)
		}
	}
	br := blob.NewBytesReader(data)
	if _, err := io.ReadFull(br, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "size/bytes-rest", br, int64(len(data)-100)); err != nil {
		t.Fatalf("Save of a partly read BytesReader: %v", err)
	}
	mustEqual(t, "a partly read BytesReader's object", load(t, s, "size/bytes-rest", 0, 0), data[100:])
	// A failed replacement keeps the previous object.
	save(t, s, "size/keep", data)
	if err := s.Save(ctx, "size/keep", bytes.NewReader(data[:10]), 20); err == nil {
		t.Fatal("Save with a short reader succeeded")
	}
	mustEqual(t, "the previous object after a failed replace", load(t, s, "size/keep", 0, 0), data)
	// A reader that fails.
	boom := errors.New("boom")
	err = s.Save(ctx, "size/fail", io.MultiReader(bytes.NewReader(data[:5000]), &errReader{boom}), int64(len(data)))
	if err == nil {
		t.Fatal("Save from a failing reader succeeded")
	}
	if _, err := s.Stat(ctx, "size/fail"); !blob.IsNotExist(err) {
		t.Fatalf("after a failed Save, Stat = %v; want IsNotExist", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

func testMissing(t *testing.T, s blob.Store) {
	ctx := context.Background()
	save(t, s, "present/x", []byte("x"))
	for _, name := range []string{"missing", "missing/deeper/name", "present/y", "present/x/below"} {
		if _, err := s.Stat(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("Stat %s = %v; want IsNotExist", name, err)
		} else if core.KindOf(err) != core.KindNotFound {
			t.Errorf("Stat %s: kind %v, want KindNotFound", name, core.KindOf(err))
		}
		if rc, err := s.Load(ctx, name, 0, 0); !blob.IsNotExist(err) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Load %s = %v; want IsNotExist", name, err)
		}
		if rc, err := s.Load(ctx, name, 10, 5); !blob.IsNotExist(err) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("ranged Load %s = %v; want IsNotExist", name, err)
		}
		if err := s.Remove(ctx, name); err != nil {
			t.Errorf("Remove of missing %s: %v", name, err)
		}
	}
	// A "directory" is not an object.
	if _, err := s.Stat(ctx, "present"); !blob.IsNotExist(err) {
		t.Errorf("Stat of a parent path = %v; want IsNotExist", err)
	}
	if got := list(t, s, "nothing-here/"); len(got) != 0 {
		t.Errorf("List of an empty prefix = %v", got)
	}
}

func testRemove(t *testing.T, s blob.Store) {
	ctx := context.Background()
	save(t, s, "rm/a", []byte("a"))
	save(t, s, "rm/b", []byte("bb"))
	for range 2 { // idempotent
		if err := s.Remove(ctx, "rm/a"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := s.Stat(ctx, "rm/a"); !blob.IsNotExist(err) {
		t.Fatalf("Stat after Remove = %v", err)
	}
	if _, err := s.Load(ctx, "rm/a", 0, 0); !blob.IsNotExist(err) {
		t.Fatalf("Load after Remove = %v", err)
	}
	if got := list(t, s, "rm/"); len(got) != 1 || got["rm/b"] != 2 {
		t.Fatalf("List after Remove = %v", got)
	}
	// Removing a parent path removes nothing.
	if err := s.Remove(ctx, "rm"); err != nil {
		t.Fatalf("Remove of a parent path: %v", err)
	}
	mustEqual(t, "rm/b after removing its parent path", load(t, s, "rm/b", 0, 0), []byte("bb"))
	// Saved again after removal.
	save(t, s, "rm/a", []byte("again"))
	mustEqual(t, "rm/a saved again", load(t, s, "rm/a", 0, 0), []byte("again"))
}

// BadNames are names every Store refuses.
var BadNames = []string{
	"", "/", "/abs", "trailing/", "a//b", ".", "..", "../up", "a/../b", "a/./b", "./a",
	".hidden", "dir/.tmp-x", "space here", "back\\slash", "nul\x00", "ümlaut", "a/b\n",
	string(make([]byte, 300)), // NULs
}

func testInvalidNames(t *testing.T, s blob.Store) {
	ctx := context.Background()
	long := bytes.Repeat([]byte("a"), 256)
	bad := append(append([]string{}, BadNames...), string(long), "x/"+string(bytes.Repeat([]byte("a/"), 500))+"z")
	for _, name := range bad {
		check := func(op string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s %q succeeded; want an invalid-name error", op, name)
			} else if core.KindOf(err) != core.KindInvalid || blob.IsNotExist(err) {
				t.Errorf("%s %q: %v (kind %v); want kind Invalid", op, name, err, core.KindOf(err))
			}
		}
		check("Save", blob.SaveBytes(ctx, s, name, []byte("x")))
		rc, err := s.Load(ctx, name, 0, 0)
		if err == nil {
			rc.Close()
		}
		check("Load", err)
		_, err = s.Stat(ctx, name)
		check("Stat", err)
		check("Remove", s.Remove(ctx, name))
	}
	for _, prefix := range []string{"/", "/abs", "a//", "../", "a/../", ".x", "a b"} {
		err := s.List(ctx, prefix, func(blob.Info) error { return nil })
		if core.KindOf(err) != core.KindInvalid {
			t.Errorf("List %q: %v; want kind Invalid", prefix, err)
		}
	}
	// Every allowed character.
	name := "Az09_-.x/y.z-Q_"
	save(t, s, name, []byte("ok"))
	mustEqual(t, "allowed characters", load(t, s, name, 0, 0), []byte("ok"))
}

func testNestedNames(t *testing.T, s blob.Store) {
	objs := map[string]int64{
		"config":               1,
		"a/b/c/d":              2,
		"a/b/e":                3,
		"a/x":                  4,
		"a/bb":                 5,
		"ab/c":                 6,
		"data/00/00aa":         7,
		"data/00/00bb":         8,
		"data/ff/ffcc":         9,
		"deep/1/2/3/4/5/6/7/8": 10,
	}
	for name, n := range objs {
		save(t, s, name, Data(uint64(n), int(n)))
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", names(objs)},
		{"a/", []string{"a/b/c/d", "a/b/e", "a/bb", "a/x"}},
		{"a/b/", []string{"a/b/c/d", "a/b/e"}},
		{"a/b", []string{"a/b/c/d", "a/b/e", "a/bb"}},
		{"a", []string{"a/b/c/d", "a/b/e", "a/bb", "a/x", "ab/c"}},
		{"data/00/", []string{"data/00/00aa", "data/00/00bb"}},
		{"data/00/00a", []string{"data/00/00aa"}},
		{"data/f", []string{"data/ff/ffcc"}},
		{"config", []string{"config"}},
		{"config/", nil},
		{"deep/1/2/3/4/5/6/7/", []string{"deep/1/2/3/4/5/6/7/8"}},
		{"zzz", nil},
	} {
		got := list(t, s, c.prefix)
		if fmt.Sprint(names(got)) != fmt.Sprint(c.want) {
			t.Errorf("List %q = %v; want %v", c.prefix, names(got), c.want)
		}
		for name, size := range got {
			if size != objs[name] {
				t.Errorf("List %q: %s has size %d, want %d", c.prefix, name, size, objs[name])
			}
		}
	}
	for name, n := range objs {
		mustEqual(t, name, load(t, s, name, 0, 0), Data(uint64(n), int(n)))
	}
}

// testListMany saves 1,200 objects from 8 goroutines at once (more than one
// S3 listing page) and lists them.
func testListMany(t *testing.T, s blob.Store) {
	const n, workers = 1200, 8
	ctx := context.Background()
	save(t, s, "other/x", []byte("x"))
	save(t, s, "mana", []byte("not under many/"))
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				name := fmt.Sprintf("many/%02x/obj-%04d", i%256, i)
				if err := blob.SaveBytes(ctx, s, name, Data(uint64(i), i%97)); err != nil {
					errs <- fmt.Errorf("Save %s: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := list(t, s, "many/")
	if len(got) != n {
		t.Fatalf("List many/ reported %d objects, want %d", len(got), n)
	}
	for i := range n {
		name := fmt.Sprintf("many/%02x/obj-%04d", i%256, i)
		if size, ok := got[name]; !ok || size != int64(i%97) {
			t.Fatalf("List many/: %s = %d, %v; want size %d", name, size, ok, i%97)
		}
	}
	if all := list(t, s, ""); len(all) != n+2 {
		t.Fatalf("List \"\" reported %d objects, want %d", len(all), n+2)
	}
	// Spot-check contents written concurrently.
	for _, i := range []int{0, 1, 7, 8, 500, n - 1} {
		name := fmt.Sprintf("many/%02x/obj-%04d", i%256, i)
		mustEqual(t, name, load(t, s, name, 0, 0), Data(uint64(i), i%97))
	}
}

func testListStops(t *testing.T, s blob.Store) {
	for i := range 20 {
		save(t, s, fmt.Sprintf("stop/%02d", i), []byte{byte(i)})
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.List(context.Background(), "stop/", func(blob.Info) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop && !errors.Is(err, stop) {
		t.Fatalf("List returned %v; want the callback's error", err)
	}
	if calls != 3 {
		t.Fatalf("callback ran %d times after returning an error at the 3rd", calls)
	}
	// The callback may use the store (no lock held across it).
	err = s.List(context.Background(), "stop/", func(info blob.Info) error {
		_, err := s.Stat(context.Background(), info.Name)
		return err
	})
	if err != nil {
		t.Fatalf("List with a callback that calls Stat: %v", err)
	}
}

func testConcurrentSameName(t *testing.T, s blob.Store) {
	const writers = 6
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = Data(uint64(100+i), 200_000+i*1000)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*3)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if err := blob.SaveBytes(context.Background(), s, "same/name", versions[i]); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Save: %v", err)
	}
	got := load(t, s, "same/name", 0, 0)
	for _, v := range versions {
		if bytes.Equal(got, v) {
			return
		}
	}
	t.Fatalf("after concurrent Saves of one name the object (%d bytes) is none of the versions", len(got))
}

// cancelReader cancels its context once after bytes were read through it
// (over all attempts: it stays seekable so that retrying wrappers can rewind
// it, and then the retry is cancelled too).
type cancelReader struct {
	*bytes.Reader
	after  int
	read   int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.read >= c.after {
		c.cancel()
	}
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n, err := c.Reader.Read(p)
	c.read += n
	return n, err
}

func testCancel(t *testing.T, s blob.Store) {
	data := Data(5, 4<<20)
	save(t, s, "cancel/present", data)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	isCanceled := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v; want context.Canceled", op, err)
		}
	}
	isCanceled("Save", blob.SaveBytes(ctx, s, "cancel/new", []byte("x")))
	rc, err := s.Load(ctx, "cancel/present", 0, 0)
	if err == nil {
		rc.Close()
	}
	isCanceled("Load", err)
	_, err = s.Stat(ctx, "cancel/present")
	isCanceled("Stat", err)
	isCanceled("Remove", s.Remove(ctx, "cancel/present"))
	isCanceled("List", s.List(ctx, "", func(blob.Info) error { return nil }))
	if _, err := s.Stat(context.Background(), "cancel/new"); !blob.IsNotExist(err) {
		t.Errorf("a Save with a cancelled context stored the object (Stat: %v)", err)
	}
	mustEqual(t, "object after a cancelled Remove", load(t, s, "cancel/present", 0, 0), data)

	// Cancelled in the middle of a Save: nothing is stored.
	ctx, cancel = context.WithCancel(context.Background())
	err = s.Save(ctx, "cancel/mid", &cancelReader{Reader: bytes.NewReader(data), after: 1 << 20, cancel: cancel}, int64(len(data)))
	cancel()
	if err == nil {
		t.Fatal("Save cancelled midway succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Save cancelled midway: %v; want context.Canceled", err)
	}
	if _, err := s.Stat(context.Background(), "cancel/mid"); !blob.IsNotExist(err) {
		t.Errorf("a Save cancelled midway stored the object (Stat: %v)", err)
	}
	if got := list(t, s, "cancel/"); len(got) != 1 {
		t.Errorf("List after cancelled Saves = %v; want only cancel/present", got)
	}

	// Cancelled in the middle of reading a Load.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	rc, err = s.Load(ctx, "cancel/present", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = io.Copy(io.Discard, rc)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("reading a Load after cancelling: %v; want context.Canceled", err)
	}
}

// BenchmarkSaveLoad measures Save and Load of objects of size bytes on s,
// as two sub-benchmarks whose MB/s is the store's throughput.
func BenchmarkSaveLoad(b *testing.B, s blob.Store, size int) {
	ctx := context.Background()
	data := Data(42, size)
	b.Run("Save", func(b *testing.B) {
		b.SetBytes(int64(size))
		for i := 0; b.Loop(); i++ {
			if err := blob.SaveBytes(ctx, s, fmt.Sprintf("bench/%d", i%4), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	if err := blob.SaveBytes(ctx, s, "bench/load", data); err != nil {
		b.Fatal(err)
	}
	b.Run("Load", func(b *testing.B) {
		b.SetBytes(int64(size))
		buf := make([]byte, 1<<20)
		for b.Loop() {
			rc, err := s.Load(ctx, "bench/load", 0, 0)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, rc, buf)
			rc.Close()
			if err != nil || n != int64(size) {
				b.Fatalf("Load: %d bytes, %v", n, err)
			}
		}
	})
}

// testOpen checks blob.Opener, for stores that implement it: the opened
// object reads as Load does, keeps its bytes when replaced or removed, and
// a missing or invalid name fails as Load fails.
func testOpen(t *testing.T, s blob.Store) {
	op, ok := s.(blob.Opener)
	if !ok {
		t.Log("the store does not implement blob.Opener: nothing to check")
		return
	}
	ctx := context.Background()
	data := Data(21, 100000)
	save(t, s, "data/ab/open", data)
	o, err := op.Open(ctx, "data/ab/open")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", o.Size(), len(data))
	}
	save(t, s, "data/ab/open", Data(22, 50))
	if err := s.Remove(ctx, "data/ab/open"); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 1}, {0, len(data)}, {4095, 8193}, {len(data) - 7, 7}} {
		got := make([]byte, r[1])
		if n, err := o.ReadAt(got, int64(r[0])); n != r[1] || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", r[0], r[1], n, err)
		}
		mustEqual(t, fmt.Sprintf("range %v of the opened object", r), got, data[r[0]:r[0]+r[1]])
	}
	if n, err := o.ReadAt(make([]byte, 10), int64(len(data)-5)); n != 5 || err == nil {
		t.Fatalf("ReadAt past the end = %d, %v; want 5 bytes and an error", n, err)
	}
	if _, err := op.Open(ctx, "data/ab/open"); !blob.IsNotExist(err) {
		t.Fatalf("Open of a removed object: %v, want not-exist", err)
	}
	if _, err := op.Open(ctx, "../escape"); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("Open of an invalid name: %v, want invalid", err)
	}
}
