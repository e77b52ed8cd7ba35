// Command genimage writes the seeded disk images of the repository benchmark
// (scripts/bench-repo.sh) and changes them between backups.
//
//	go run ./scripts/genimage -size 2G -seed 1 -out FILE
//	go run ./scripts/genimage -mutate FILE -fraction 0.01 -piece 64K -seed 2
//
// The first writes a sparse raw image: 30% holes, 40% compressible text, 30%
// random bytes, in 1 MiB regions. The second overwrites fraction of FILE in
// scattered pieces of -piece bytes with new random bytes and prints the number
// of bytes changed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cairn-backup/cairn/internal/benchdata"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "genimage:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("genimage", flag.ContinueOnError)
	size := fs.String("size", "2G", "image size (K, M, G: binary units)")
	seed := fs.Int64("seed", 1, "generator seed")
	out := fs.String("out", "", "image file to write (replaced)")
	mutate := fs.String("mutate", "", "image file to change in place instead")
	fraction := fs.Float64("fraction", 0.01, "with -mutate: fraction of the image to overwrite")
	piece := fs.String("piece", "64K", "with -mutate: size of each overwritten piece")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: genimage -size 2G -seed 1 -out FILE")
		fmt.Fprintln(fs.Output(), "       genimage -mutate FILE -fraction 0.01 -piece 64K -seed 2")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case *mutate != "" && *out != "":
		return fmt.Errorf("give -out or -mutate, not both")
	case *mutate != "":
		p, err := benchdata.ParseSize(*piece)
		if err != nil {
			return err
		}
		changed, err := benchdata.Mutate(*mutate, *fraction, p, *seed)
		if err != nil {
			return err
		}
		fmt.Println(changed)
		return nil
	case *out != "":
		n, err := benchdata.ParseSize(*size)
		if err != nil {
			return err
		}
		return benchdata.Generate(*out, n, *seed)
	}
	fs.Usage()
	return fmt.Errorf("give -out FILE or -mutate FILE")
}
