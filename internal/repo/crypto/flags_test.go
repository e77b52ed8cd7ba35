package crypto

import "flag"

var (
	update = flag.Bool("update", false, "rewrite the test vectors under testdata/ (changes the format: think twice)")
)
