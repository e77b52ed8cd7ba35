package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Go-level protocol tests: a hand-written client over net.Pipe, for the
// edges real clients never reach.

func TestClientFlags(t *testing.T) {
	x := newTestExports()
	t.Run("unknown flag closes", func(t *testing.T) {
		tc, done := newClient(t, x.server(t))
		tc.clientFlags(clientFixedNewstyle | 1<<5)
		tc.wantClosed(done)
	})
	for _, tt := range []struct {
		name  string
		flags uint32
		reply int // bytes after NBD_OPT_EXPORT_NAME
	}{
		{"no zeroes", clientFixedNewstyle | clientNoZeroes, 10},
		{"with zeroes", clientFixedNewstyle, 134},
		{"plain newstyle client", 0, 134},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc, done := newClient(t, x.server(t))
			tc.clientFlags(tt.flags)
			tc.sendOption(optExportName, []byte("disk"))
			b := make([]byte, tt.reply)
			tc.readFull(b)
			if size := be.Uint64(b); size != testDiskSize {
				t.Fatalf("size %d", size)
			}
			if !bytes.Equal(b[10:], make([]byte, tt.reply-10)) {
				t.Fatalf("padding not zero")
			}
			// The next bytes are transmission: a read works.
			rep := tc.do(request{typ: cmdRead, handle: 7, offset: 0, length: 512}, nil)
			if rep.errno != 0 || !bytes.Equal(rep.data, x.disk.snapshot()[:512]) {
				t.Fatalf("read after EXPORT_NAME: errno %d", rep.errno)
			}
			tc.disconnect(done)
		})
	}
}

func TestTransmissionFlags(t *testing.T) {
	x := newTestExports()
	readOnly := uint16(tfHasFlags | tfReadOnly | tfCanMultiConn | tfSendCache)
	writable := uint16(tfHasFlags | tfSendFlush | tfSendFUA | tfSendWriteZeroes | tfSendCache)
	for _, tt := range []struct {
		export     string
		serverRO   bool
		structured bool
		want       uint16
	}{
		{"disk", false, false, readOnly},
		{"disk", false, true, readOnly | tfSendDF},
		{"plain", false, false, readOnly},
		{"rw", false, false, writable | tfSendTrim},
		{"rw", false, true, writable | tfSendTrim | tfSendDF},
		{"wo", false, false, writable},
		{"rw", true, false, readOnly},
	} {
		srv := x.server(t)
		srv.ReadOnly = tt.serverRO
		tc, done := dial(t, srv, tt.structured)
		// NBD_OPT_INFO and NBD_OPT_GO must agree, and EXPORT_NAME too.
		info := tc.infos(tc.mustAck(optInfo, goData(tt.export)))[infoExport]
		tc.goExport(tt.export)
		if got := be.Uint16(info[8:]); got != tc.flags {
			t.Errorf("%s: INFO flags %#x, GO flags %#x", tt.export, got, tc.flags)
		}
		if tc.flags != tt.want {
			t.Errorf("%s (server read-only %v, structured %v): flags %#x, want %#x", tt.export, tt.serverRO, tt.structured, tc.flags, tt.want)
		}
		tc.disconnect(done)
	}
}

func TestOptions(t *testing.T) {
	x := newTestExports()
	long := func(n int) []byte { return bytes.Repeat([]byte{'a'}, n) }
	for _, tt := range []struct {
		name       string
		noList     bool
		structured bool
		opt        uint32
		data       []byte
		want       []uint32 // reply types, the final one last
		wantData   []string // data of the non-final replies, if checked
	}{
		{name: "unknown option", opt: 999, want: []uint32{repErrUnsup}},
		{name: "extended headers unsupported", opt: 11, want: []uint32{repErrUnsup}},
		{name: "peek export unsupported", opt: 4, want: []uint32{repErrUnsup}},
		{name: "list", opt: optList, want: []uint32{repServer, repServer, repServer, repServer, repServer, repAck},
			wantData: []string{"\x00\x00\x00\x04disk", "\x00\x00\x00\x05plain", "\x00\x00\x00\x02rw", "\x00\x00\x00\x02wo", "\x00\x00\x00\x06faulty"}},
		{name: "list refused", noList: true, opt: optList, want: []uint32{repErrPolicy}},
		{name: "list with data", opt: optList, data: []byte{1}, want: []uint32{repErrInvalid}},
		{name: "starttls without TLS", opt: optStartTLS, want: []uint32{repErrPolicy}},
		{name: "structured reply with data", opt: optStructuredReply, data: []byte{0}, want: []uint32{repErrInvalid}},
		{name: "info too short", opt: optInfo, data: []byte{0, 0, 0, 0, 0}, want: []uint32{repErrInvalid}},
		{name: "info name past end", opt: optInfo, data: []byte{0, 0, 0, 9, 'd', 0, 0}, want: []uint32{repErrInvalid}},
		{name: "info name length huge", opt: optInfo, data: []byte{0xff, 0xff, 0xff, 0xff, 0, 0}, want: []uint32{repErrInvalid}},
		{name: "info request count too big", opt: optInfo, data: goData("disk", 1)[:10], want: []uint32{repErrInvalid}},
		{name: "info trailing byte", opt: optInfo, data: append(goData("disk"), 0), want: []uint32{repErrInvalid}},
		{name: "info name over 4096", opt: optInfo, data: goData(string(long(4097))), want: []uint32{repErrInvalid}},
		{name: "go unknown export", opt: optGo, data: goData("nope"), want: []uint32{repErrUnknown}},
		{name: "info unknown export", opt: optInfo, data: goData("nope"), want: []uint32{repErrUnknown}},
		{name: "info", opt: optInfo, data: goData("disk"), want: []uint32{repInfo, repInfo, repAck}},
		{name: "list meta without structured", opt: optListMetaContext, data: metaData("disk"), want: []uint32{repErrInvalid}},
		{name: "set meta without structured", opt: optSetMetaContext, data: metaData("disk", contextAllocation), want: []uint32{repErrInvalid}},
		{name: "list meta all", structured: true, opt: optListMetaContext, data: metaData("disk"),
			want: []uint32{repMetaContext, repAck}, wantData: []string{"\x00\x00\x00\x00base:allocation"}},
		{name: "list meta base:", structured: true, opt: optListMetaContext, data: metaData("disk", "base:"),
			want: []uint32{repMetaContext, repAck}, wantData: []string{"\x00\x00\x00\x00base:allocation"}},
		{name: "list meta twice", structured: true, opt: optListMetaContext, data: metaData("disk", "base:", contextAllocation),
			want: []uint32{repMetaContext, repAck}, wantData: []string{"\x00\x00\x00\x00base:allocation"}},
		{name: "list meta other namespace", structured: true, opt: optListMetaContext, data: metaData("disk", "qemu:dirty-bitmap:b0", "base:nope", "nocolon"),
			want: []uint32{repAck}},
		{name: "set meta base: selects nothing", structured: true, opt: optSetMetaContext, data: metaData("disk", "base:"), want: []uint32{repAck}},
		{name: "set meta empty selects nothing", structured: true, opt: optSetMetaContext, data: metaData("disk"), want: []uint32{repAck}},
		{name: "set meta", structured: true, opt: optSetMetaContext, data: metaData("disk", "x-foo:bar", contextAllocation),
			want: []uint32{repMetaContext, repAck}, wantData: []string{"\x00\x00\x00\x01base:allocation"}},
		{name: "set meta unknown export", structured: true, opt: optSetMetaContext, data: metaData("nope", contextAllocation), want: []uint32{repErrUnknown}},
		{name: "meta query past end", structured: true, opt: optSetMetaContext, data: metaData("disk", contextAllocation)[:20], want: []uint32{repErrInvalid}},
		{name: "meta query count huge", structured: true, opt: optListMetaContext, data: []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, want: []uint32{repErrInvalid}},
		{name: "meta trailing bytes", structured: true, opt: optListMetaContext, data: append(metaData("disk", "base:"), 1), want: []uint32{repErrInvalid}},
		{name: "meta too short", structured: true, opt: optListMetaContext, data: []byte{0, 0, 0, 0}, want: []uint32{repErrInvalid}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := x.server(t)
			if tt.noList {
				srv.List = nil
			}
			tc, done := dial(t, srv, tt.structured)
			rs := tc.option(tt.opt, tt.data)
			var got []uint32
			for _, r := range rs {
				got = append(got, r.typ)
			}
			if !equalSlices(got, tt.want) {
				t.Fatalf("replies %#x, want %#x (%v)", got, tt.want, rs)
			}
			for i, d := range tt.wantData {
				if string(rs[i].data) != d {
					t.Errorf("reply %d: data %q, want %q", i, rs[i].data, d)
				}
			}
			if last := rs[len(rs)-1]; last.typ&(1<<31) != 0 && len(last.data) == 0 {
				t.Errorf("error reply without a message")
			}
			// Haggling goes on: the export is still reachable.
			tc.goExport("disk")
			tc.disconnect(done)
		})
	}
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestInfoItems(t *testing.T) {
	x := newTestExports()
	tc, done := dial(t, x.server(t), false)
	info := tc.infos(tc.mustAck(optInfo, goData("rw", infoName, infoDescription, infoBlockSize, 77)))
	if got := string(info[infoName]); got != "rw" {
		t.Errorf("NBD_INFO_NAME %q", got)
	}
	if got := string(info[infoDescription]); got != "cairn test disk" {
		t.Errorf("NBD_INFO_DESCRIPTION %q", got)
	}
	bs := info[infoBlockSize]
	if len(bs) != 12 || be.Uint32(bs) != 1 || be.Uint32(bs[4:]) != 4096 || be.Uint32(bs[8:]) != 32<<20 {
		t.Errorf("NBD_INFO_BLOCK_SIZE %x, want 1, 4096, 32 MiB", bs)
	}
	// Not asked for: no name; the export "disk" has no description.
	info = tc.infos(tc.mustAck(optInfo, goData("disk", infoDescription)))
	if _, ok := info[infoName]; ok {
		t.Errorf("NBD_INFO_NAME sent unasked")
	}
	if _, ok := info[infoDescription]; ok {
		t.Errorf("NBD_INFO_DESCRIPTION sent for an export without one")
	}
	tc.goExport("")
	if tc.size != testDiskSize {
		t.Errorf("default export size %d", tc.size)
	}
	tc.disconnect(done)
}

func TestHandshakeClosesConnection(t *testing.T) {
	x := newTestExports()
	for _, tt := range []struct {
		name string
		send func(tc *testClient)
		// wantReply is the option reply type the server sends before
		// closing, if any.
		wantReply uint32
	}{
		{name: "bad option magic", send: func(tc *testClient) {
			tc.write(append([]byte("IHAVEOPX"), 0, 0, 0, 7, 0, 0, 0, 0))
		}},
		{name: "export name unknown", send: func(tc *testClient) { tc.sendOption(optExportName, []byte("nope")) }},
		{name: "option too long", send: func(tc *testClient) {
			b := be.AppendUint64(nil, magicOption)
			b = be.AppendUint32(b, optGo)
			tc.write(be.AppendUint32(b, 1<<30))
		}, wantReply: repErrTooBig},
		{name: "export name too long", send: func(tc *testClient) {
			b := be.AppendUint64(nil, magicOption)
			b = be.AppendUint32(b, optExportName)
			tc.write(be.AppendUint32(b, 0xffffffff))
		}},
		{name: "eof in option data", send: func(tc *testClient) {
			b := be.AppendUint64(nil, magicOption)
			b = be.AppendUint32(b, optGo)
			tc.write(be.AppendUint32(b, 100))
			tc.write([]byte{0, 0})
			tc.c.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc, done := dial(t, x.server(t), false)
			tt.send(tc)
			if tt.wantReply != 0 {
				if r := tc.readOptReply(); r.typ != tt.wantReply {
					t.Fatalf("%v, want %#x", r, tt.wantReply)
				}
			}
			tc.wantClosed(done)
		})
	}
	t.Run("abort", func(t *testing.T) {
		tc, done := dial(t, x.server(t), false)
		tc.mustAck(optAbort, nil)
		waitServe(t, done, false)
	})
}

func TestRead(t *testing.T) {
	x := newTestExports()
	want := x.disk.snapshot()
	ranges := [][2]int64{
		{0, 512}, {0, 4 * MiB}, {1*MiB - 100, 200}, {1 * MiB, 1 * MiB}, {3 * MiB, 512 << 10},
		{5*MiB - 1, 64<<10 + 2}, {6*MiB + 7, 128 << 10}, {testDiskSize - 1, 1}, {0, testDiskSize},
	}
	for _, mode := range []struct {
		name       string
		export     string
		structured bool
		flags      uint16
		wantHoles  bool
	}{
		{"simple", "disk", false, 0, false},
		{"structured", "disk", true, 0, true},
		{"structured DF", "disk", true, cmdFlagDF, false},
		{"structured FUA", "disk", true, cmdFlagFUA, true},
		{"structured no extents", "plain", true, 0, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tc, done := dial(t, x.server(t), mode.structured)
			tc.goExport(mode.export)
			sawHole := false
			for i, r := range ranges {
				req := request{typ: cmdRead, flags: mode.flags, handle: uint64(i), offset: uint64(r[0]), length: uint32(r[1])}
				rep := tc.do(req, nil)
				if rep.errno != 0 {
					t.Fatalf("read [%d, +%d): errno %d %s", r[0], r[1], rep.errno, rep.msg)
				}
				if !bytes.Equal(rep.data, want[r[0]:r[0]+r[1]]) {
					t.Fatalf("read [%d, +%d): wrong bytes", r[0], r[1])
				}
				data := 0
				for _, c := range rep.chunks {
					switch c.typ {
					case replyTypeOffsetHole:
						sawHole = true
					case replyTypeOffsetData:
						data++
					}
				}
				if mode.structured && !mode.wantHoles && (data != 1 || len(rep.chunks) != 1) {
					t.Fatalf("read [%d, +%d): %d chunks, want one data chunk", r[0], r[1], len(rep.chunks))
				}
			}
			if sawHole != mode.wantHoles {
				t.Errorf("hole chunks sent: %v, want %v", sawHole, mode.wantHoles)
			}
			// A zero-length read succeeds and leaves the connection usable.
			if rep := tc.do(request{typ: cmdRead, handle: 99, offset: 10, length: 0}, nil); rep.errno != 0 {
				t.Errorf("empty read: errno %d", rep.errno)
			}
			tc.disconnect(done)
		})
	}
}

// TestReadChunks checks the exact chunks of a structured read over holes
// and allocated zeros.
func TestReadChunks(t *testing.T) {
	x := newTestExports()
	tc, done := dial(t, x.server(t), true)
	tc.goExport("disk")
	rep := tc.do(request{typ: cmdRead, handle: 1, offset: 1*MiB - 4096, length: 2*MiB + 512<<10 + 4096}, nil)
	type c struct {
		typ         uint16
		off, length int64
	}
	var got []c
	for _, ch := range rep.chunks {
		n := int64(len(ch.data))
		if ch.typ == replyTypeOffsetHole {
			n = int64(ch.hole)
		}
		got = append(got, c{ch.typ, ch.off, n})
	}
	want := []c{
		{replyTypeOffsetData, 1*MiB - 4096, 4096},
		{replyTypeOffsetHole, 1 * MiB, 1 * MiB},
		{replyTypeOffsetData, 2 * MiB, 1 * MiB},
		{replyTypeOffsetHole, 3 * MiB, 512 << 10}, // allocated zeros and a hole, both zeros
	}
	if !equalSlices(got, want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
	tc.disconnect(done)
}

func TestRequestErrors(t *testing.T) {
	x := newTestExports()
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			tc, done := dial(t, x.server(t), structured)
			tc.goExport("disk")
			cases := []struct {
				name string
				req  request
				want uint32
			}{
				{"read past the end", request{typ: cmdRead, offset: testDiskSize - 512, length: 1024}, errInval},
				{"read starting past the end", request{typ: cmdRead, offset: testDiskSize + 4096, length: 1}, errInval},
				{"read offset overflow", request{typ: cmdRead, offset: 1<<64 - 512, length: 1024}, errInval},
				{"read of 33 MiB", request{typ: cmdRead, offset: 0, length: 33 << 20}, errInval},
				{"unknown command", request{typ: 42, offset: 0, length: 512}, errInval},
				{"unknown flag", request{typ: cmdRead, flags: 1 << 9, offset: 0, length: 512}, errInval},
				{"no-hole flag on a read", request{typ: cmdRead, flags: cmdFlagNoHole, offset: 0, length: 512}, errInval},
				{"req-one flag on a read", request{typ: cmdRead, flags: cmdFlagReqOne, offset: 0, length: 512}, errInval},
				{"trim read-only", request{typ: cmdTrim, offset: 0, length: 512}, errPerm},
				{"write zeroes read-only", request{typ: cmdWriteZeroes, offset: 0, length: 512}, errPerm},
				{"flush with a range", request{typ: cmdFlush, offset: 0, length: 512}, errInval},
				{"cache past the end", request{typ: cmdCache, offset: testDiskSize, length: 512}, errInval},
				{"cache with a flag", request{typ: cmdCache, flags: cmdFlagDF, offset: 0, length: 512}, errInval},
			}
			if structured {
				cases = append(cases,
					struct {
						name string
						req  request
						want uint32
					}{"read of 33 MiB, DF", request{typ: cmdRead, flags: cmdFlagDF, offset: 0, length: 33 << 20}, errOverflow},
					struct {
						name string
						req  request
						want uint32
					}{"block status past the end", request{typ: cmdBlockStatus, offset: testDiskSize - 512, length: 1024}, errInval},
					struct {
						name string
						req  request
						want uint32
					}{"block status empty", request{typ: cmdBlockStatus, offset: 0, length: 0}, errInval},
				)
			} else {
				cases = append(cases,
					struct {
						name string
						req  request
						want uint32
					}{"DF without structured replies", request{typ: cmdRead, flags: cmdFlagDF, offset: 0, length: 512}, errInval},
					struct {
						name string
						req  request
						want uint32
					}{"block status without a context", request{typ: cmdBlockStatus, offset: 0, length: 512}, errInval},
				)
			}
			for i, c := range cases {
				c.req.handle = uint64(1000 + i)
				rep := tc.do(c.req, nil)
				if rep.errno != c.want {
					t.Errorf("%s: errno %d, want %d", c.name, rep.errno, c.want)
				}
				if structured && rep.msg == "" {
					t.Errorf("%s: error chunk without a message", c.name)
				}
				if rep.errno != 0 && len(rep.data) > 0 {
					t.Errorf("%s: data with an error", c.name)
				}
			}
			// Cache and flush succeed on a read-only export.
			for _, typ := range []uint16{cmdCache, cmdFlush} {
				req := request{typ: typ, handle: 5}
				if typ == cmdCache {
					req.length = 1 * MiB
				}
				if rep := tc.do(req, nil); rep.errno != 0 {
					t.Errorf("command %d: errno %d", typ, rep.errno)
				}
			}
			// The connection survived every refusal.
			if rep := tc.do(request{typ: cmdRead, handle: 9, offset: 0, length: 4096}, nil); rep.errno != 0 {
				t.Fatalf("read after errors: errno %d", rep.errno)
			}
			tc.disconnect(done)
		})
	}
}

// decodeStatus decodes a block status payload into (length, flags) pairs.
func decodeStatus(t testing.TB, rep reply) [][2]uint32 {
	t.Helper()
	if rep.errno != 0 || len(rep.chunks) != 1 || rep.chunks[0].typ != replyTypeBlockStatus {
		t.Fatalf("block status reply: errno %d, %d chunks", rep.errno, len(rep.chunks))
	}
	p := rep.chunks[0].data
	if id := be.Uint32(p); id != contextAllocationID {
		t.Fatalf("context ID %d, want %d", id, contextAllocationID)
	}
	var out [][2]uint32
	for p = p[4:]; len(p) >= 8; p = p[8:] {
		if be.Uint32(p) == 0 {
			t.Fatalf("descriptor of length 0")
		}
		out = append(out, [2]uint32{be.Uint32(p), be.Uint32(p[4:])})
	}
	return out
}

func stateFlags(s blockState) uint32 {
	switch s {
	case blockHole:
		return stateHole | stateZero
	case blockZero:
		return stateZero
	}
	return 0
}

func TestBlockStatus(t *testing.T) {
	x := newTestExports()
	tc, done := dial(t, x.server(t), true)
	tc.goExport("disk")

	rep := tc.do(request{typ: cmdBlockStatus, handle: 1, offset: 0, length: testDiskSize}, nil)
	var want [][2]uint32
	for _, e := range testDiskMap {
		want = append(want, [2]uint32{uint32(e.length), stateFlags(e.state)})
	}
	if got := decodeStatus(t, rep); !equalSlices(got, want) {
		t.Fatalf("block status of the whole disk:\n got %v\nwant %v", got, want)
	}

	for _, tt := range []struct {
		name        string
		flags       uint16
		off, length uint64
		want        [][2]uint32
	}{
		{"req one", cmdFlagReqOne, 1*MiB + 4096, 3 * MiB, [][2]uint32{{1*MiB - 4096, stateHole | stateZero}}},
		{"req one clipped", cmdFlagReqOne, 0, 4096, [][2]uint32{{4096, 0}}},
		{"req one, FUA", cmdFlagReqOne | cmdFlagFUA, 3 * MiB, 1 * MiB, [][2]uint32{{256 << 10, stateZero}}},
		{"unaligned", 0, 100, 1 * MiB, [][2]uint32{{1*MiB - 100, 0}, {100, stateHole | stateZero}}},
		{"tail", 0, testDiskSize - 10, 10, [][2]uint32{{10, stateHole | stateZero}}},
	} {
		rep := tc.do(request{typ: cmdBlockStatus, flags: tt.flags, handle: 2, offset: tt.off, length: uint32(tt.length)}, nil)
		if got := decodeStatus(t, rep); !equalSlices(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	tc.disconnect(done)

	// Without extents everything is data; a context selected for another
	// export does not count.
	tc, done = dial(t, x.server(t), true)
	tc.goExport("plain")
	rep = tc.do(request{typ: cmdBlockStatus, handle: 1, offset: 4096, length: 1 * MiB}, nil)
	if got := decodeStatus(t, rep); !equalSlices(got, [][2]uint32{{1 * MiB, 0}}) {
		t.Errorf("plain export: %v", got)
	}
	tc.disconnect(done)
	tc, done = dial(t, x.server(t), true)
	tc.mustAck(optSetMetaContext, metaData("plain", contextAllocation))
	tc.mustAck(optGo, goData("disk"))
	if rep := tc.do(request{typ: cmdBlockStatus, handle: 1, offset: 0, length: 4096}, nil); rep.errno != errInval {
		t.Errorf("block status with a context of another export: errno %d, want EINVAL", rep.errno)
	}
	tc.disconnect(done)
}

func TestWrites(t *testing.T) {
	for _, structured := range []bool{false, true} {
		x := newTestExports()
		tc, done := dial(t, x.server(t), structured)
		tc.goExport("rw")
		pattern := bytes.Repeat([]byte{0x5a}, 64<<10)
		mustOK := func(what string, req request, payload []byte) {
			t.Helper()
			if rep := tc.do(req, payload); rep.errno != 0 {
				t.Fatalf("%s: errno %d %s", what, rep.errno, rep.msg)
			}
		}
		mustOK("write", request{typ: cmdWrite, handle: 1, offset: 1 * MiB, length: 64 << 10}, pattern)
		if got := x.rw.snapshot()[1*MiB : 1*MiB+64<<10]; !bytes.Equal(got, pattern) {
			t.Fatalf("write did not reach the export")
		}
		if s := x.rw.state[1*MiB/memBlock]; s != blockData {
			t.Fatalf("written block state %d", s)
		}
		f := x.rw.flushes.Load()
		mustOK("write FUA", request{typ: cmdWrite, flags: cmdFlagFUA, handle: 2, offset: 7, length: 3}, []byte{1, 2, 3})
		mustOK("flush", request{typ: cmdFlush, handle: 3}, nil)
		if got := x.rw.flushes.Load() - f; got != 2 {
			t.Fatalf("%d flushes after a FUA write and a flush, want 2", got)
		}
		if got := x.rw.snapshot()[6:11]; !bytes.Equal(got, []byte{0x11, 1, 2, 3, 0x11}) {
			t.Fatalf("unaligned write: %x", got)
		}
		mustOK("write zeroes, no hole", request{typ: cmdWriteZeroes, flags: cmdFlagNoHole, handle: 4, offset: 0, length: 8192}, nil)
		mustOK("write zeroes", request{typ: cmdWriteZeroes, handle: 5, offset: 2 * MiB, length: 8192}, nil)
		mustOK("trim", request{typ: cmdTrim, handle: 6, offset: 2*MiB + 8192, length: 8192}, nil)
		mustOK("trim FUA", request{typ: cmdTrim, flags: cmdFlagFUA, handle: 7, offset: 2*MiB + 16384, length: 100}, nil)
		mustOK("empty write", request{typ: cmdWrite, handle: 8, offset: 100, length: 0}, nil)
		snap := x.rw.snapshot()
		if !bytes.Equal(snap[0:8192], make([]byte, 8192)) || !bytes.Equal(snap[2*MiB:2*MiB+16384], make([]byte, 16384)) {
			t.Fatalf("zeroes or trim left data")
		}
		for _, c := range []struct {
			off  int64
			want blockState
		}{{0, blockZero}, {4096, blockZero}, {2 * MiB, blockHole}, {2*MiB + 8192, blockHole}, {2*MiB + 16384, blockData}} {
			if s := x.rw.state[c.off/memBlock]; s != c.want {
				t.Errorf("block at %d: state %d, want %d", c.off, s, c.want)
			}
		}

		// Refusals: past the end, too long; the payload is skipped.
		for _, c := range []struct {
			name string
			req  request
			want uint32
		}{
			{"write past the end", request{typ: cmdWrite, offset: testDiskSize - 512, length: 1024}, errNoSpace},
			{"write zeroes past the end", request{typ: cmdWriteZeroes, offset: testDiskSize, length: 1}, errNoSpace},
			{"trim past the end", request{typ: cmdTrim, offset: testDiskSize - 1, length: 2}, errInval},
			{"write of 33 MiB", request{typ: cmdWrite, offset: 0, length: 33 << 20}, errInval},
			{"write with DF", request{typ: cmdWrite, flags: cmdFlagDF, offset: 0, length: 512}, errInval},
			{"write zeroes with fast zero", request{typ: cmdWriteZeroes, flags: 1 << 4, offset: 0, length: 512}, errInval},
		} {
			var payload []byte
			if c.req.typ == cmdWrite {
				payload = bytes.Repeat([]byte{0xee}, int(c.req.length))
			}
			c.req.handle = 50
			before := x.rw.snapshot()
			if rep := tc.do(c.req, payload); rep.errno != c.want {
				t.Errorf("%s: errno %d, want %d", c.name, rep.errno, c.want)
			}
			if !bytes.Equal(before, x.rw.snapshot()) {
				t.Errorf("%s changed the export", c.name)
			}
		}
		mustOK("read after refusals", request{typ: cmdRead, handle: 9, offset: 1 * MiB, length: 4096}, nil)
		tc.disconnect(done)
	}
}

func TestWriteWithoutOptionalInterfaces(t *testing.T) {
	x := newTestExports()
	tc, done := dial(t, x.server(t), true)
	tc.goExport("wo")
	if rep := tc.do(request{typ: cmdWriteZeroes, handle: 1, offset: 4096, length: 1*MiB + 100}, nil); rep.errno != 0 {
		t.Fatalf("write zeroes: errno %d", rep.errno)
	}
	if !bytes.Equal(x.wo.snapshot()[4096:4096+1*MiB+100], make([]byte, 1*MiB+100)) {
		t.Fatalf("emulated write zeroes left data")
	}
	before := x.wo.snapshot()
	if rep := tc.do(request{typ: cmdTrim, handle: 2, offset: 0, length: 1 * MiB}, nil); rep.errno != 0 {
		t.Fatalf("trim without a Trimmer: errno %d", rep.errno)
	}
	if !bytes.Equal(before, x.wo.snapshot()) {
		t.Fatalf("trim without a Trimmer changed data")
	}
	tc.disconnect(done)
}

func TestReadOnly(t *testing.T) {
	x := newTestExports()
	srv := x.server(t)
	srv.ReadOnly = true
	tc, done := dial(t, srv, false)
	tc.goExport("rw") // implements Writer, but the server is read-only
	before := x.rw.snapshot()
	for _, req := range []request{
		{typ: cmdWrite, handle: 1, offset: 0, length: 4096},
		{typ: cmdWrite, handle: 2, offset: testDiskSize, length: 4096}, // EPERM before ENOSPC
		{typ: cmdTrim, handle: 3, offset: 0, length: 4096},
		{typ: cmdWriteZeroes, handle: 4, offset: 0, length: 4096},
	} {
		var payload []byte
		if req.typ == cmdWrite {
			payload = bytes.Repeat([]byte{0xee}, int(req.length))
		}
		if rep := tc.do(req, payload); rep.errno != errPerm {
			t.Errorf("command %d on a read-only export: errno %d, want EPERM", req.typ, rep.errno)
		}
	}
	if !bytes.Equal(before, x.rw.snapshot()) {
		t.Fatalf("read-only export changed")
	}
	if n := x.rw.flushes.Load(); n != 0 {
		t.Fatalf("%d flushes of a read-only export", n)
	}
	tc.disconnect(done)
}

func TestExportErrors(t *testing.T) {
	x := newTestExports()
	var logged strings.Builder
	var logMu sync.Mutex
	srv := x.server(t)
	srv.Logf = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logged.WriteString(strings.TrimSpace(fmt.Sprintf(format, args...)) + "\n")
	}
	for _, structured := range []bool{false, true} {
		tc, done := dial(t, srv, structured)
		tc.goExport("faulty")
		rep := tc.do(request{typ: cmdRead, handle: 1, offset: 4096, length: 8192}, nil)
		if rep.errno != errIO {
			t.Errorf("read: errno %d, want EIO", rep.errno)
		}
		if structured {
			c := rep.chunks[0]
			if len(rep.chunks) != 1 || c.typ != replyTypeErrorOffset || c.off != 4096+4096 {
				t.Errorf("read error: chunks %+v, want one ERROR_OFFSET at 8192", rep.chunks)
			}
			if strings.Contains(c.msg, "secret") {
				t.Errorf("error message %q shows the export's error to the client", c.msg)
			}
			if rep := tc.do(request{typ: cmdBlockStatus, handle: 2, offset: 0, length: 4096}, nil); rep.errno != errIO {
				t.Errorf("block status: errno %d, want EIO", rep.errno)
			}
		}
		for _, req := range []request{
			{typ: cmdWrite, handle: 3, offset: 0, length: 512},
			{typ: cmdFlush, handle: 4},
			{typ: cmdWriteZeroes, handle: 5, offset: 0, length: 512},
		} {
			var payload []byte
			if req.typ == cmdWrite {
				payload = make([]byte, req.length)
			}
			if rep := tc.do(req, payload); rep.errno != errIO {
				t.Errorf("command %d: errno %d, want EIO", req.typ, rep.errno)
			}
		}
		tc.disconnect(done)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged.String(), errFaulty.Error()) {
		t.Errorf("the export's error was not logged; log:\n%s", logged.String())
	}
}

func TestErrnoMapping(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want uint32
	}{
		{io.ErrUnexpectedEOF, errIO},
		{fmt.Errorf("writing pack: %w", syscall.ENOSPC), errNoSpace},
		{fmt.Errorf("writing pack: %w", syscall.EDQUOT), errNoSpace},
		{&os.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, errPerm},
		{errFaulty, errIO},
	} {
		if got := errnoFor(tt.err); got != tt.want {
			t.Errorf("errnoFor(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestBadRequestMagic(t *testing.T) {
	x := newTestExports()
	tc, done := dial(t, x.server(t), false)
	tc.goExport("disk")
	b := make([]byte, 28)
	binary.BigEndian.PutUint32(b, 0x25609514)
	tc.write(b)
	tc.wantClosed(done)
}

func TestAbruptClose(t *testing.T) {
	t.Run("mid write payload", func(t *testing.T) {
		x := newTestExports()
		tc, done := dial(t, x.server(t), false)
		tc.goExport("rw")
		before := x.rw.snapshot()
		b := be.AppendUint32(nil, magicRequest)
		b = be.AppendUint16(b, 0)
		b = be.AppendUint16(b, cmdWrite)
		b = be.AppendUint64(b, 1)
		b = be.AppendUint64(b, 0)
		b = be.AppendUint32(b, 64<<10)
		tc.write(append(b, make([]byte, 1000)...))
		tc.c.Close()
		if err := waitServe(t, done, true); !strings.Contains(err.Error(), "payload") {
			t.Errorf("ServeConn: %v, want an error about the payload", err)
		}
		if !bytes.Equal(before, x.rw.snapshot()) {
			t.Errorf("a partial write reached the export")
		}
	})
	t.Run("mid request header", func(t *testing.T) {
		x := newTestExports()
		tc, done := dial(t, x.server(t), false)
		tc.goExport("disk")
		tc.write(be.AppendUint32(nil, magicRequest))
		tc.c.Close()
		waitServe(t, done, true)
	})
	t.Run("replies not read", func(t *testing.T) {
		x := newTestExports()
		tc, done := dial(t, x.server(t), true)
		tc.goExport("disk")
		// More than the in-flight limit: the server stops reading while
		// its replies wait, and must still end when the client goes.
		go func() {
			for i := range 40 {
				b := be.AppendUint32(nil, magicRequest)
				b = be.AppendUint16(b, 0)
				b = be.AppendUint16(b, cmdRead)
				b = be.AppendUint64(b, uint64(i))
				b = be.AppendUint64(b, uint64(i)*4096)
				b = be.AppendUint32(b, 1*MiB)
				if _, err := tc.c.Write(b); err != nil {
					return
				}
			}
		}()
		time.Sleep(50 * time.Millisecond)
		tc.c.Close()
		waitServe(t, done, true)
	})
	t.Run("during handshake", func(t *testing.T) {
		x := newTestExports()
		tc, done := dial(t, x.server(t), false)
		tc.write(be.AppendUint64(nil, magicOption))
		tc.c.Close()
		waitServe(t, done, true)
	})
}

// slowExport delays reads at offset 0.
type slowExport struct {
	Export
	delay time.Duration
}

func (e slowExport) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		time.Sleep(e.delay)
	}
	return e.Export.ReadAt(p, off)
}

func TestConcurrentRequests(t *testing.T) {
	x := newTestExports()
	srv := x.server(t)
	srv.Lookup = func(string) (Export, bool) {
		return slowExport{Export: readOnlyExport{x.disk}, delay: 100 * time.Millisecond}, true
	}
	want := x.disk.snapshot()
	for _, structured := range []bool{false, true} {
		tc, done := dial(t, srv, structured)
		tc.goExport("disk")
		const n = 300
		rnd := rand.New(rand.NewSource(7))
		reqs := make(map[uint64]request, n)
		var order []uint64
		for i := range n {
			off := uint64(rnd.Int63n(testDiskSize - 1))
			if i == 0 {
				off = 0 // the slow one: its reply comes after later ones
			}
			length := uint32(1 + rnd.Int63n(min(int64(testDiskSize-off), 300<<10)))
			h := uint64(rnd.Int63())
			reqs[h] = request{typ: cmdRead, handle: h, offset: off, length: length}
			order = append(order, h)
		}
		sendErr := make(chan error, 1)
		go func() {
			defer close(sendErr)
			for _, h := range order {
				req := reqs[h]
				tc.mu.Lock()
				tc.pending[h] = req
				tc.mu.Unlock()
				b := be.AppendUint32(nil, magicRequest)
				b = be.AppendUint16(b, 0)
				b = be.AppendUint16(b, cmdRead)
				b = be.AppendUint64(b, h)
				b = be.AppendUint64(b, req.offset)
				b = be.AppendUint32(b, req.length)
				if _, err := tc.c.Write(b); err != nil {
					sendErr <- err
					return
				}
			}
		}()
		replies := map[uint64]*reply{}
		var finished []uint64
		for len(finished) < n {
			m, err := tc.readMessage()
			if err != nil {
				t.Fatalf("after %d replies: %v", len(finished), err)
			}
			if _, ok := reqs[m.handle]; !ok {
				t.Fatalf("reply to unknown handle %d", m.handle)
			}
			rep := replies[m.handle]
			if rep == nil {
				rep = &reply{}
				replies[m.handle] = rep
			}
			complete, err := tc.collect(rep, m)
			if err != nil {
				t.Fatal(err)
			}
			if complete {
				req := reqs[m.handle]
				if rep.errno != 0 {
					t.Fatalf("read [%d, +%d): errno %d", req.offset, req.length, rep.errno)
				}
				checkCoverage(t, req, *rep)
				if !bytes.Equal(rep.data, want[req.offset:req.offset+uint64(req.length)]) {
					t.Fatalf("read [%d, +%d) (handle %d): wrong bytes", req.offset, req.length, m.handle)
				}
				finished = append(finished, m.handle)
				replies[m.handle] = nil
			}
		}
		if err := <-sendErr; err != nil {
			t.Fatal(err)
		}
		if finished[0] == order[0] {
			t.Errorf("structured %v: the slow first request was answered first: requests are not concurrent", structured)
		}
		tc.disconnect(done)
	}
}

// gateExport blocks every read until the gate opens and counts how many
// wait at once.
type gateExport struct {
	Export
	gate          chan struct{}
	waiting, peak atomic.Int64
}

func (e *gateExport) ReadAt(p []byte, off int64) (int, error) {
	n := e.waiting.Add(1)
	for {
		p := e.peak.Load()
		if n <= p || e.peak.CompareAndSwap(p, n) {
			break
		}
	}
	<-e.gate
	e.waiting.Add(-1)
	return e.Export.ReadAt(p, off)
}

func TestInFlightLimit(t *testing.T) {
	x := newTestExports()
	gx := &gateExport{Export: readOnlyExport{x.disk}, gate: make(chan struct{})}
	srv := x.server(t)
	srv.Lookup = func(string) (Export, bool) { return gx, true }
	tc, done := dial(t, srv, false)
	tc.goExport("disk")
	const n = 40
	go func() {
		for i := range n {
			tc.send(request{typ: cmdRead, handle: uint64(i), offset: uint64(i) * 4096, length: 4096}, nil)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for gx.waiting.Load() < maxInFlight && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a 17th, if the limit leaked
	if p := gx.peak.Load(); p != maxInFlight {
		t.Fatalf("%d reads in flight at once, want %d", p, maxInFlight)
	}
	close(gx.gate)
	for range n {
		m, err := tc.readMessage()
		if err != nil || m.errno != 0 {
			t.Fatalf("reply: %v, errno %d", err, m.errno)
		}
	}
	tc.disconnect(done)
}

func TestServeMaxConnsAndShutdown(t *testing.T) {
	x := newTestExports()
	srv := x.server(t)
	srv.MaxConns = 1
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()

	c1, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	tc := greet(t, c1)
	tc.clientFlags(clientFixedNewstyle)
	tc.goExport("disk")
	if rep := tc.do(request{typ: cmdRead, handle: 1, length: 512}, nil); rep.errno != 0 {
		t.Fatalf("read: errno %d", rep.errno)
	}

	// A second connection is over the limit: closed without a greeting.
	c2, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection over MaxConns got %d bytes", n)
	}

	// Ending the context closes the open connection and Serve returns nil.
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return")
	}
	c1.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c1); err != nil {
		t.Fatalf("reading until the server closed: %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Errorf("listener still accepts after Serve returned")
	}
}

func TestServeListenerFailure(t *testing.T) {
	x := newTestExports()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := x.server(t).Serve(context.Background(), l); err == nil {
		t.Fatalf("Serve on a closed listener returned nil")
	}
}

func TestServeConnContext(t *testing.T) {
	x := newTestExports()
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.server(t).ServeConn(ctx, server) }()
	tc := greet(t, client)
	tc.clientFlags(clientFixedNewstyle)
	tc.goExport("disk")
	cancel()
	if err := waitServe(t, done, true); err != context.Canceled {
		t.Fatalf("ServeConn after cancel: %v, want context.Canceled", err)
	}
}
