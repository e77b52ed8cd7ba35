//go:build cgo

package repo

// With cgo, blobs are compressed by the reference zstd library (the C
// sources that github.com/DataDog/zstd compiles into the binary). On the
// benchmark image's text it compresses 128 KiB chunks about 1.75x faster than
// the pure-Go encoder's fastest level, and smaller (2.78x against 2.71x).
// Only the encoder differs: the frames are standard zstd, read by the same
// pure-Go decoder either way.
//
// The parameters are level 1 with a larger hash table (2^16 entries, not the
// 2^12 that level 1 picks for inputs of 128 KiB or less) and matches of at
// least 6 bytes: 3.5% smaller than plain level 1 on text, for 6% of its speed.

/*
#include <stddef.h>

// From zstd.h (stable API since zstd 1.4.0), compiled by github.com/DataDog/zstd.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
size_t ZSTD_compressBound(size_t srcSize);
unsigned ZSTD_isError(size_t code);
*/
import "C"

import (
	"errors"
	"runtime"
	"sync"
	"unsafe"

	_ "github.com/DataDog/zstd" // the C library the declarations above link to
)

// ZSTD_cParameter values (zstd.h).
const (
	zstdCompressionLevel = 100
	zstdHashLog          = 102
	zstdMinMatch         = 105
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

var errZstdContext = errors.New("zstd: cannot create a compression context")

// zstdEncode appends nothing: it returns the zstd frame of src in dst's
// storage (grown when too small).
func zstdEncode(src, dst []byte) ([]byte, error) {
	e, _ := cEncoders.Get().(*cEncoder)
	if e == nil {
		return nil, errZstdContext
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
		return nil, errors.New("zstd: compression failed")
	}
	return dst[:n], nil
}
