package crypto

import "flag"

var (
	kdfCost = flag.Bool("kdfcost", false, "print the argon2id cost table")
	update  = flag.Bool("update", false, "rewrite the test vectors under testdata/ (changes the format: think twice)")
)
