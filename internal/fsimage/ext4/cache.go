package ext4

import (
	"container/list"
	"sync"
)

// cacheBytes bounds the metadata blocks kept in memory: inode table,
// extent tree, indirect and directory blocks read again and again while a
// tree is walked. Reads of file data bypass it.
const cacheBytes = 4 << 20

// blockCache is a small LRU of file system blocks, safe for concurrent use.
type blockCache struct {
	mu    sync.Mutex
	max   int
	items map[uint64]*list.Element
	order list.List // front: most recently used
}

type cachedBlock struct {
	block uint64
	data  []byte
}

func newBlockCache(blockSize int64) *blockCache {
	return &blockCache{max: max(16, int(cacheBytes/blockSize)), items: make(map[uint64]*list.Element)}
}

func (c *blockCache) get(b uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[b]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cachedBlock).data
	}
	return nil
}

func (c *blockCache) put(b uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[b]; ok {
		return
	}
	c.items[b] = c.order.PushFront(&cachedBlock{b, data})
	for c.order.Len() > c.max {
		e := c.order.Back()
		c.order.Remove(e)
		delete(c.items, e.Value.(*cachedBlock).block)
	}
}

// dirCacheEntries bounds the directory entries kept by name for lookups.
const dirCacheEntries = 1 << 18

// dirCache keeps the parsed entries of recently read directories,
// so that looking up every entry of a large directory costs one read of it.
type dirCache struct {
	mu      sync.Mutex
	entries int
	items   map[uint64]*list.Element
	order   list.List
}

type cachedDir struct {
	ino  uint64
	list *dirList
}

func newDirCache() *dirCache { return &dirCache{items: make(map[uint64]*list.Element)} }

func (c *dirCache) get(ino uint64) *dirList {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[ino]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cachedDir).list
	}
	return nil
}

func (c *dirCache) put(ino uint64, l *dirList) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[ino]; ok || len(l.entries) > dirCacheEntries {
		return
	}
	c.items[ino] = c.order.PushFront(&cachedDir{ino, l})
	c.entries += len(l.entries)
	for c.entries > dirCacheEntries {
		e := c.order.Back()
		c.order.Remove(e)
		d := e.Value.(*cachedDir)
		delete(c.items, d.ino)
		c.entries -= len(d.list.entries)
	}
}
