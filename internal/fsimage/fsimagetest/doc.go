// Package fsimagetest holds what the tests of every fsimage reader share: a
// source tree with the cases a reader must get right (MakeTree), built by
// mkfs into images, and the comparison of an FS with the tree it was made
// from (CompareTree) or of two host trees (CompareDirs).
package fsimagetest
