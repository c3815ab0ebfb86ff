// Command mkpkg writes a valid synthetic conda package, for the end-to-end
// test and the benchmarks: any name, subdir and payload size, in either
// format, with a random payload that does not compress.
//
//	go run ./test/mkpkg -o big-1.0-0.conda -subdir linux-64 -size 300MiB
//	go run ./test/mkpkg -scale 10000     # the shared scale channel's root
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("mkpkg: ")
	out := flag.String("o", "", "output file; its name must be name-version-build.conda or .tar.bz2")
	subdir := flag.String("subdir", "noarch", "subdir in info/index.json")
	size := flag.String("size", "0", "payload size, e.g. 100MiB")
	scale := flag.Int("scale", 0, "instead: build (or reuse) the shared channel of this many packages that the scale benchmarks use, and print its root")
	flag.Parse()
	if *scale > 0 {
		fmt.Println(pkgtest.ScaleChannel(pkgtest.Exit{}, *scale))
		return
	}
	fn, err := condapkg.ParseFilename(filepath.Base(*out))
	if err != nil {
		log.Fatal(err)
	}
	n, err := config.ParseByteSize(*size)
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	spec := pkgtest.Simple(fn.Name, fn.Version, fn.Build, *subdir)
	switch {
	case n == 0:
		_, err = w.Write(pkgtest.Build(pkgtest.Exit{}, spec, fn.Format.Extension()))
	case strings.HasSuffix(*out, ".conda"):
		pkgtest.LargeConda(pkgtest.Exit{}, spec, int64(n), w)
	default:
		pkgtest.LargeTarBz2(pkgtest.Exit{}, spec, int64(n), w)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(*out)
}
