//go:build cgo

package repo

// With cgo, blobs are compressed by the reference zstd library (the C
// sources that github.com/DataDog/zstd compiles into the binary). On the
// benchmark image's text it compresses 128 KiB chunks about 1.75x faster than
// the pure-Go encoder's fastest level, and smaller (2.78x against 2.71x).
// It decompresses them 2.2x faster than the pure-Go decoder, into a buffer
// of exactly the blob's recorded size. The frames are standard zstd: either
// build reads what the other wrote.
//
// The parameters are level 1 with a larger hash table (2^16 entries, not the
// 2^12 that level 1 picks for inputs of 128 KiB or less) and matches of at
// least 6 bytes: 3.5% smaller than plain level 1 on the benchmark's text for
// 6% of its speed, 1.6-2.8% smaller on Go sources, shared libraries and
// documents (docs/FORMAT.md).

/*
#include <stddef.h>

// From zstd.h (stable API since zstd 1.4.0), compiled by github.com/DataDog/zstd.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
size_t ZSTD_compressBound(size_t srcSize);
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
ZSTD_DCtx* ZSTD_createDCtx(void);
size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx);
size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);
int ZSTD_getErrorCode(size_t functionResult); // zstd_errors.h; returns a ZSTD_ErrorCode
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	_ "github.com/DataDog/zstd" // the C library the declarations above link to
)

// ZSTD_cParameter values (zstd.h) and an error code (zstd_errors.h).
const (
	zstdCompressionLevel = 100
	zstdHashLog          = 102
	zstdMinMatch         = 105

	zstdErrorDstSizeTooSmall = 70
)

// cEncoder owns one compression context; contexts are not safe for
// concurrent use, so each goroutine takes one from the pool.
type cEncoder struct{ cctx *C.ZSTD_CCtx }

var cEncoders = sync.Pool{New: func() any {
	cctx := C.ZSTD_createCCtx()
	if cctx == nil {
		return nil
	}
	for _, p := range [][2]C.int{{zstdCompressionLevel, 1}, {zstdHashLog, 16}, {zstdMinMatch, 6}} {
		if C.ZSTD_isError(C.ZSTD_CCtx_setParameter(cctx, p[0], p[1])) != 0 {
			C.ZSTD_freeCCtx(cctx)
			return nil
		}
	}
	e := &cEncoder{cctx: cctx}
	runtime.AddCleanup(e, func(c *C.ZSTD_CCtx) { C.ZSTD_freeCCtx(c) }, cctx)
	return e
}}

// zstdEncode returns the zstd frame of src, in dst's storage (grown when
// too small).
func zstdEncode(src, dst []byte) ([]byte, error) {
	e, _ := cEncoders.Get().(*cEncoder)
	if e == nil {
		return nil, errors.New("zstd: cannot create a compression context")
	}
	defer cEncoders.Put(e)
	bound := int(C.ZSTD_compressBound(C.size_t(len(src))))
	if cap(dst) < bound {
		dst = make([]byte, bound)
	}
	dst = dst[:bound]
	var in unsafe.Pointer
	if len(src) > 0 {
		in = unsafe.Pointer(&src[0])
	}
	n := C.ZSTD_compress2(e.cctx, unsafe.Pointer(&dst[0]), C.size_t(bound), in, C.size_t(len(src)))
	if C.ZSTD_isError(n) != 0 {
		return nil, fmt.Errorf("zstd: %s", C.GoString(C.ZSTD_getErrorName(n)))
	}
	return dst[:n], nil
}

// cDecoder owns one decompression context, like cEncoder.
type cDecoder struct{ dctx *C.ZSTD_DCtx }

var cDecoders = sync.Pool{New: func() any {
	dctx := C.ZSTD_createDCtx()
	if dctx == nil {
		return nil
	}
	d := &cDecoder{dctx: dctx}
	runtime.AddCleanup(d, func(c *C.ZSTD_DCtx) { C.ZSTD_freeDCtx(c) }, dctx)
	return d
}}

// zstdDecode decompresses the frame src, which must hold exactly rawLen
// bytes, into dst's storage (grown when too small). The C library writes no
// further than rawLen bytes: a frame holding more fails.
func zstdDecode(src []byte, rawLen int, dst []byte) ([]byte, error) {
	if len(src) == 0 {
		return nil, errors.New("zstd: empty frame")
	}
	d, _ := cDecoders.Get().(*cDecoder)
	if d == nil {
		return nil, errors.New("zstd: cannot create a decompression context")
	}
	defer cDecoders.Put(d)
	if cap(dst) < rawLen {
		dst = make([]byte, rawLen)
	}
	dst = dst[:rawLen]
	var out unsafe.Pointer
	if rawLen > 0 {
		out = unsafe.Pointer(&dst[0])
	}
	n := C.ZSTD_decompressDCtx(d.dctx, out, C.size_t(rawLen), unsafe.Pointer(&src[0]), C.size_t(len(src)))
	if C.ZSTD_isError(n) != 0 {
		if C.ZSTD_getErrorCode(n) == zstdErrorDstSizeTooSmall {
			return nil, fmt.Errorf("decompresses to more than %d bytes", rawLen)
		}
		return nil, fmt.Errorf("zstd: %s", C.GoString(C.ZSTD_getErrorName(n)))
	}
	return dst[:n], nil
}
