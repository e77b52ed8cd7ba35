package qcow2

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// compressedCluster returns the decompressed guest cluster c from its L2
// entry e (a compressed cluster descriptor). The result is shared: callers
// must not modify it.
func (im *Image) compressedCluster(e uint64, c int64) ([]byte, error) {
	e &^= l2Copied
	if data := im.zc.get(e); data != nil {
		return data, nil
	}
	// Descriptor: the low x bits are the host offset, the next
	// cluster_bits-8 bits the number of 512-byte sectors after the first.
	x := 62 - (im.clusterBits - 8)
	coff := int64(e & (uint64(1)<<x - 1))
	sectors := int64((e>>x)&(uint64(1)<<(im.clusterBits-8)-1)) + 1
	csize := sectors*sectorSize - coff%sectorSize
	if coff > maxVirtualSize || !im.within(coff, 1) {
		return nil, im.corrupt("compressed cluster for guest offset 0x%x at host offset 0x%x beyond end of file (size %d)", c*im.clusterSize, coff, im.fileSize.Load())
	}
	// The last sectors of the last compressed cluster may be missing from
	// the file: decompression stops once a cluster is produced.
	csize = min(csize, im.fileSize.Load()-coff)
	src := make([]byte, csize)
	n, err := im.data.ReadAt(src, coff)
	if n < len(src) && err != io.EOF {
		return nil, im.corrupt("reading compressed cluster at host offset 0x%x: %v", coff, err)
	}
	src = src[:n]
	dst := make([]byte, im.clusterSize)
	switch im.compression {
	case compressionZstd:
		err = im.unzstd(dst, src)
	default:
		err = inflate(dst, src)
	}
	if err != nil {
		return nil, im.corrupt("compressed cluster for guest offset 0x%x at host offset 0x%x (%d bytes): %v", c*im.clusterSize, coff, csize, err)
	}
	im.zc.put(e, dst)
	return dst, nil
}

var flatePool sync.Pool // of io.ReadCloser that are also flate.Resetter

// inflate decompresses raw deflate data (zlib's windowBits -12, without a
// zlib header) into dst, which it must fill exactly; bytes after the end of
// the stream belong to the next compressed cluster and are ignored.
func inflate(dst, src []byte) error {
	br := bytes.NewReader(src)
	var r io.ReadCloser
	if v := flatePool.Get(); v != nil {
		r = v.(io.ReadCloser)
		if err := r.(flate.Resetter).Reset(br, nil); err != nil {
			return err
		}
	} else {
		r = flate.NewReader(br)
	}
	defer flatePool.Put(r)
	return fillCluster(r, dst)
}

// fillCluster reads exactly len(dst) bytes of decompressed data.
func fillCluster(r io.Reader, dst []byte) error {
	n, err := io.ReadFull(r, dst)
	if n == len(dst) {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("decompresses to fewer bytes than a cluster")
	}
	return err
}

type zstdDecoder struct{ d *zstd.Decoder }

func (z *zstdDecoder) close() { z.d.Close() }

// unzstd decompresses one zstd frame into dst, which it must fill exactly;
// the bytes after the frame (the tail of the last sector) are never read.
func (im *Image) unzstd(dst, src []byte) error {
	im.zstdMu.Lock()
	var z *zstdDecoder
	if k := len(im.zstdDec); k > 0 {
		z, im.zstdDec = im.zstdDec[k-1], im.zstdDec[:k-1]
	}
	im.zstdMu.Unlock()
	if z == nil {
		// One synchronous decoder (no goroutines). QEMU compresses a
		// cluster in one call, so its frames declare a window no larger
		// than the cluster; 8 MiB leaves room for other writers while a
		// hostile frame cannot ask for gigabytes.
		limit := uint64(max(2*im.clusterSize, 8<<20))
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(limit),
			zstd.WithDecoderMaxMemory(limit))
		if err != nil {
			return err
		}
		z = &zstdDecoder{d: d}
	}
	// A bytes.Reader (not a bytes.Buffer) keeps the decoder streaming, so
	// trailing bytes after the frame are not an error.
	err := z.d.Reset(bytes.NewReader(src))
	if err == nil {
		err = fillCluster(z.d, dst)
	}
	_ = z.d.Reset(nil)
	im.zstdMu.Lock()
	if len(im.zstdDec) < 4 {
		im.zstdDec = append(im.zstdDec, z)
		z = nil
	}
	im.zstdMu.Unlock()
	if z != nil {
		z.close()
	}
	return err
}

// clusterCache keeps the last few decompressed clusters, so that reading a
// compressed cluster in small pieces decompresses it once.
type clusterCache struct {
	mu    sync.Mutex
	max   int
	keys  []uint64
	datas [][]byte
}

func newClusterCache(max int) *clusterCache { return &clusterCache{max: max} }

func (c *clusterCache) get(key uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range c.keys {
		if k == key {
			return c.datas[i]
		}
	}
	return nil
}

func (c *clusterCache) put(key uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		copy(c.keys, c.keys[1:])
		copy(c.datas, c.datas[1:])
		c.keys, c.datas = c.keys[:len(c.keys)-1], c.datas[:len(c.datas)-1]
	}
	c.keys = append(c.keys, key)
	c.datas = append(c.datas, data)
}
