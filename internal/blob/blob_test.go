package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/blobtest"
	"github.com/cairn-backup/cairn/internal/blob/mem"
	"github.com/cairn-backup/cairn/internal/core"
)

var fastRetry = blob.RetryPolicy{Attempts: 6, Initial: time.Millisecond, Max: 4 * time.Millisecond}

func TestValidName(t *testing.T) {
	for _, name := range []string{"config", "data/ab/abcdef", "a", "A-b_c.d", "locks/2026-11-23T12.00.00-x", strings.Repeat("a", 255)} {
		if err := blob.ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v", name, err)
		}
	}
	for _, name := range blobtest.BadNames {
		err := blob.ValidName(name)
		if err == nil || core.KindOf(err) != core.KindInvalid {
			t.Errorf("ValidName(%q) = %v; want an Invalid error", name, err)
		}
	}
	for _, p := range []string{"", "data/", "data/a", "a/b/c/", "con"} {
		if err := blob.ValidPrefix(p); err != nil {
			t.Errorf("ValidPrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "//", "a//", "/a", "../", ".a", "a/.b"} {
		if blob.ValidPrefix(p) == nil {
			t.Errorf("ValidPrefix(%q) accepted", p)
		}
	}
	if err := blob.ValidName("a/../b"); !strings.Contains(err.Error(), `"a/../b"`) {
		t.Errorf("the error should quote the name: %v", err)
	}
}

// Retry over a store that fails every other call (before or after the
// operation took effect) passes the whole conformance suite: transient
// faults are invisible to callers.
func TestRetryHidesFaults(t *testing.T) {
	for _, after := range []bool{false, true} {
		t.Run(fmt.Sprintf("after=%v", after), func(t *testing.T) {
			var faulties []*blob.Faulty
			blobtest.Run(t, func(*testing.T) blob.Store {
				f := &blob.Faulty{Store: mem.New(), FailEvery: 2, FailAfter: after}
				faulties = append(faulties, f)
				// Concurrent calls share the every-other counter: allow
				// enough attempts that no call can lose every draw.
				p := fastRetry
				p.Attempts = 40
				return blob.Retry(f, p)
			})
			total := 0
			for _, f := range faulties {
				total += f.Injected()
			}
			if total < 1000 {
				t.Fatalf("only %d faults were injected; the suite did not exercise Retry", total)
			}
			t.Logf("%d faults injected and hidden", total)
		})
	}
}

func TestRetryGivesUp(t *testing.T) {
	ctx := context.Background()
	f := &blob.Faulty{Store: mem.New(), FailEvery: 1}
	var notices []string
	p := fastRetry
	p.Notify = func(op blob.Op, name string, err error, wait time.Duration) {
		notices = append(notices, fmt.Sprintf("%v %s", op, name))
	}
	s := blob.Retry(f, p)
	_, err := s.Stat(ctx, "x")
	if !errors.Is(err, blob.ErrInjected) || !strings.Contains(err.Error(), "giving up after 6 attempts") {
		t.Fatalf("Stat on a store that always fails: %v", err)
	}
	if f.Injected() != 6 || len(notices) != 5 || notices[0] != "stat x" {
		t.Fatalf("%d attempts, notices %v; want 6 attempts and 5 notices", f.Injected(), notices)
	}
}

func TestRetryDoesNotRetryPermanentErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		err  error
	}{
		{"not exist", blob.NotExist("x")},
		{"unauthorized", core.Unauthorized("S3 refused the credentials")},
		{"invalid", core.Invalid("bad")},
		{"plain", errors.New("disk on fire")},
		{"cancelled, even if marked", blob.Transient(context.Canceled)},
	} {
		f := &blob.Faulty{Store: mem.New(), FailEvery: 1, Err: c.err}
		_, err := blob.Retry(f, fastRetry).Stat(ctx, "x")
		if !errors.Is(err, c.err) && err != c.err {
			t.Errorf("%s: got %v", c.name, err)
		}
		if f.Injected() != 1 {
			t.Errorf("%s: tried %d times; want 1", c.name, f.Injected())
		}
	}
	// A missing object is reported at once through Retry.
	calls := 0
	f := &blob.Faulty{Store: mem.New(), Before: func(blob.Op, string) error { calls++; return nil }}
	if _, err := blob.Retry(f, fastRetry).Load(ctx, "missing", 0, 0); !blob.IsNotExist(err) || calls != 1 {
		t.Fatalf("Load of a missing object through Retry: %v after %d calls", err, calls)
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	f := &blob.Faulty{Store: mem.New(), FailEvery: 1}
	ctx, cancel := context.WithCancel(context.Background())
	p := blob.RetryPolicy{Attempts: 100, Initial: time.Hour, Max: time.Hour,
		Notify: func(blob.Op, string, error, time.Duration) { cancel() }}
	start := time.Now()
	_, err := blob.Retry(f, p).Stat(ctx, "x")
	if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("Stat cancelled while waiting to retry: %v after %v", err, time.Since(start))
	}
}

// onlyReader hides every method but Read (no Seek).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestRetrySaveRewinds(t *testing.T) {
	ctx := context.Background()
	data := blobtest.Data(1, 100_000)
	m := mem.New()
	// The first Save fails after it consumed the data.
	failed := false
	f := &blob.Faulty{Store: m, After: func(op blob.Op, name string) error {
		if op == blob.OpSave && !failed {
			failed = true
			return blob.Transient(errors.New("connection reset"))
		}
		return nil
	}}
	// A seekable reader that does not start at 0: Retry rewinds to where it was.
	r := bytes.NewReader(append([]byte("skip"), data...))
	r.Seek(4, io.SeekStart)
	if err := blob.Retry(f, fastRetry).Save(ctx, "a", r, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	got, _ := blob.LoadAll(ctx, m, "a")
	if !bytes.Equal(got, data) {
		t.Fatal("retried Save stored the wrong bytes")
	}
	// A reader that cannot rewind is not retried once consumed.
	failed = false
	err := blob.Retry(f, fastRetry).Save(ctx, "b", onlyReader{bytes.NewReader(data)}, int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "cannot rewind") {
		t.Fatalf("Save from a non-seekable reader after a failure: %v", err)
	}
	// ... but it is retried when the failure came before any byte was read.
	f2 := &blob.Faulty{Store: mem.New(), FailEvery: 2}
	f2.Stat(ctx, "x") // selected call 1
	if err := blob.Retry(f2, fastRetry).Save(ctx, "c", onlyReader{bytes.NewReader(data)}, int64(len(data))); err != nil {
		t.Fatalf("Save failing before reading: %v", err)
	}
}

func TestRetryResumesLoad(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	data := blobtest.Data(2, 1<<20)
	blob.SaveBytes(ctx, m, "big", data)
	for _, c := range []struct{ off, n int64 }{{0, 0}, {1000, 0}, {12345, 500_000}, {0, 1 << 20}} {
		// The first 8 Loads deliver half their range, then fail.
		loads := 0
		f := &blob.Faulty{Store: m, After: func(op blob.Op, _ string) error {
			if op == blob.OpLoad {
				loads++
				if loads <= 8 {
					return blob.Transient(errors.New("connection lost"))
				}
			}
			return nil
		}}
		p := fastRetry
		p.Attempts = 3 // per failure without progress
		got, err := blob.LoadRange(ctx, blob.Retry(f, p), "big", c.off, c.n)
		if err != nil {
			t.Fatalf("Load [%d+%d]: %v", c.off, c.n, err)
		}
		want := data[c.off:]
		if c.n > 0 {
			want = data[c.off : c.off+c.n]
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("resumed Load [%d+%d] got %d bytes, want %d", c.off, c.n, len(got), len(want))
		}
		if f.Injected() != 8 {
			t.Fatalf("%d mid-stream failures, want 8", f.Injected())
		}
	}
}

func TestRetryListReportsOnce(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	for i := range 50 {
		blob.SaveBytes(ctx, m, fmt.Sprintf("l/%02d", i), []byte{1})
	}
	// The first listing fails after its first object.
	f := &blob.Faulty{Store: m, Ops: blob.OpList, FailEvery: 1, FailAfter: true, Match: func(string) bool { return true }}
	calls := 0
	f.Before = func(op blob.Op, _ string) error {
		if op == blob.OpList {
			calls++
			if calls > 1 {
				f.FailEvery = 0 // later listings succeed
			}
		}
		return nil
	}
	seen := map[string]int{}
	err := blob.Retry(f, fastRetry).List(ctx, "l/", func(i blob.Info) error { seen[i.Name]++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 50 || calls != 2 {
		t.Fatalf("%d names over %d listings; want 50 over 2", len(seen), calls)
	}
	for n, c := range seen {
		if c != 1 {
			t.Fatalf("%s reported %d times", n, c)
		}
	}
	// An error from the callback is returned as is, not retried.
	stop := blob.Transient(errors.New("callback says stop"))
	calls = 0
	err = blob.Retry(f, fastRetry).List(ctx, "l/", func(blob.Info) error { return stop })
	if err != stop || calls != 1 {
		t.Fatalf("List with a failing callback: %v after %d listings", err, calls)
	}
}

func TestFaultyAfterTakesEffect(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	f := &blob.Faulty{Store: m, Ops: blob.OpSave | blob.OpRemove, FailEvery: 1, FailAfter: true}
	err := blob.SaveBytes(ctx, f, "x", []byte("data"))
	if !errors.Is(err, blob.ErrInjected) || !blob.IsTransient(err) {
		t.Fatalf("Save: %v; want an injected transient error", err)
	}
	if got, err := blob.LoadAll(ctx, m, "x"); err != nil || string(got) != "data" {
		t.Fatalf("the Save that reported failure should have taken effect: %q, %v", got, err)
	}
	if err := f.Remove(ctx, "x"); !errors.Is(err, blob.ErrInjected) {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := m.Stat(ctx, "x"); !blob.IsNotExist(err) {
		t.Fatalf("the Remove that reported failure should have taken effect: %v", err)
	}
	// Before: nothing happens.
	f = &blob.Faulty{Store: m, FailEvery: 1, Match: func(n string) bool { return strings.HasPrefix(n, "index/") }}
	if err := blob.SaveBytes(ctx, f, "index/1", []byte("i")); !errors.Is(err, blob.ErrInjected) {
		t.Fatalf("Save index/1: %v", err)
	}
	if _, err := m.Stat(ctx, "index/1"); !blob.IsNotExist(err) {
		t.Fatalf("a Save failed before the operation stored it: %v", err)
	}
	if err := blob.SaveBytes(ctx, f, "data/1", []byte("d")); err != nil {
		t.Fatalf("Save of an unmatched name: %v", err)
	}
	if f.Injected() != 1 {
		t.Fatalf("Injected = %d, want 1", f.Injected())
	}
	if got := (blob.OpSave | blob.OpList).String(); got != "save|list" {
		t.Fatalf("Op.String = %q", got)
	}
}

func TestDelayedList(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	m := mem.New()
	blob.SaveBytes(ctx, m, "snap/old", []byte("o"))
	d := &blob.DelayedList{Store: m, Delay: 10 * time.Second, Now: clock}
	listed := func() string {
		var names []string
		if err := d.List(ctx, "snap/", func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}

	blob.SaveBytes(ctx, d, "snap/new", []byte("n"))
	if got := listed(); got != "snap/old" {
		t.Fatalf("List right after Save = %q; the fresh object should be hidden", got)
	}
	// Load and Stat see it at once.
	if got, err := blob.LoadAll(ctx, d, "snap/new"); err != nil || string(got) != "n" {
		t.Fatalf("Load of a fresh object: %q, %v", got, err)
	}
	if err := d.Remove(ctx, "snap/old"); err != nil {
		t.Fatal(err)
	}
	if got := listed(); got != "snap/old" {
		t.Fatalf("List right after Remove = %q; the removed object should still be listed", got)
	}
	if _, err := d.Stat(ctx, "snap/old"); !blob.IsNotExist(err) {
		t.Fatalf("Stat of a removed object: %v", err)
	}
	advance(5 * time.Second)
	if got := listed(); got != "snap/old" {
		t.Fatalf("List 5 s later = %q", got)
	}
	advance(5 * time.Second)
	if got := listed(); got != "snap/new" {
		t.Fatalf("List after the delay = %q; want snap/new", got)
	}
	// Saved, removed and saved again: listed once, after the delay.
	blob.SaveBytes(ctx, d, "snap/again", []byte("1"))
	d.Remove(ctx, "snap/again")
	blob.SaveBytes(ctx, d, "snap/again", []byte("2"))
	if got := listed(); got != "snap/new" {
		t.Fatalf("List = %q", got)
	}
	advance(11 * time.Second)
	if got := listed(); got != "snap/again,snap/new" {
		t.Fatalf("List = %q", got)
	}
}

// With the real clock: what a repository test will do.
func TestDelayedListRealClock(t *testing.T) {
	ctx := context.Background()
	d := &blob.DelayedList{Store: mem.New(), Delay: 150 * time.Millisecond}
	count := func() int {
		n := 0
		d.List(ctx, "", func(blob.Info) error { n++; return nil })
		return n
	}
	start := time.Now()
	blob.SaveBytes(ctx, d, "a", []byte("a"))
	if n := count(); n != 0 && time.Since(start) < d.Delay { // a stalled machine may pass the delay
		t.Fatal("fresh object listed")
	}
	time.Sleep(200 * time.Millisecond)
	if count() != 1 {
		t.Fatal("object not listed after the delay")
	}
}

func TestSizedReader(t *testing.T) {
	read := func(r io.Reader) (string, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	}
	if got, err := read(blob.SizedReader(strings.NewReader("abc"), 3, "n")); got != "abc" || err != nil {
		t.Fatalf("exact: %q %v", got, err)
	}
	if _, err := read(blob.SizedReader(strings.NewReader("ab"), 3, "n")); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short: %v", err)
	}
	if _, err := read(blob.SizedReader(strings.NewReader("abcd"), 3, "n")); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("long: %v", err)
	}
	if got, err := read(blob.SizedReader(strings.NewReader(""), 0, "n")); got != "" || err != nil {
		t.Fatalf("empty: %q %v", got, err)
	}
}
