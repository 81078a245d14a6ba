// Command escape is allocwatch's escape-analysis fixture: one heap
// allocation site per classic reason the Go compiler gives for moving a
// value to the heap, each in its own function, each called N times
// (ALLOCWATCH_N, default 1000). The allocating line of each site carries a
// comment `// escape-site: <cause>`; the integration tests read those
// markers instead of hard-coding line numbers. See testdata/README.md.
//
// It is its own module (allocwatch.test/escape) so that `--source` points
// at a module root, and it has a second package (internal/shape) and a site
// in the standard library (strconv), which must get no reason.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"allocwatch.test/escape/internal/shape"
)

// Point is returned by pointer from newPoint (24 bytes).
type Point struct{ X, Y, Z int64 }

// Boxed is converted to an interface by boxValue (24 bytes).
type Boxed struct{ A, B, C int64 }

var (
	pointSink  *Point
	ifaceSink  interface{}
	counterFn  func() int64
	rectSink   *shape.Rect
	stringSink string
	byteSum    int
	goSum      atomic.Int64
)

// newPoint returns a pointer to a local variable: "moved to heap: p".
//
//go:noinline
func newPoint(i int64) *Point {
	p := Point{X: i, Y: i + 1, Z: i + 2} // escape-site: return
	return &p
}

// boxValue assigns a struct to an interface{}: "b escapes to heap".
//
//go:noinline
func boxValue(i int64) {
	b := Boxed{A: i, B: i * 2, C: i * 3}
	ifaceSink = b // escape-site: interface
}

// spawn starts a goroutine that updates a local of spawn's: the local is
// shared with the goroutine, so it moves to the heap.
//
//go:noinline
func spawn(i int64, wg *sync.WaitGroup) {
	total := i // escape-site: goroutine
	wg.Add(1)
	go func() { // escape-site: goroutine-closure
		defer wg.Done()
		total *= 2
		goSum.Add(total)
	}()
}

// counter returns a closure that captures and updates a local: the
// closure object escapes (returned) and the captured variable moves to the
// heap with it.
//
//go:noinline
func counter(start int64) func() int64 {
	n := start            // escape-site: captured
	return func() int64 { // escape-site: closure
		n++
		return n
	}
}

// makeBuf makes a slice whose length is known only at run time (always
// more than 32 bytes, so no Go version can keep it on the stack).
//
//go:noinline
func makeBuf(n int) int {
	buf := make([]byte, n) // escape-site: make
	for i := range buf {
		buf[i] = byte(i)
	}
	s := 0
	for _, c := range buf {
		s += int(c)
	}
	return s
}

// bigLocal uses a local array larger than the compiler's limit for
// implicitly allocated stack variables (64 KiB on every Go version; the
// limit for declared variables is 10 MiB before Go 1.24, 128 KiB since).
//
//go:noinline
func bigLocal(i int) byte {
	buf := new([96 << 10]byte) // escape-site: too-large
	buf[i%len(buf)] = byte(i)
	buf[(i*7)%len(buf)]++
	return buf[(i*13)%len(buf)]
}

// itoa allocates inside the standard library (strconv), which is outside
// the module: that site gets no reason.
//
//go:noinline
func itoa(i int) string {
	return strconv.Itoa(1000000 + i)
}

func main() {
	n := 1000
	if s := os.Getenv("ALLOCWATCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "bad ALLOCWATCH_N %q\n", s)
			os.Exit(2)
		}
		n = v
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		pointSink = newPoint(int64(i))
		boxValue(int64(i))
		spawn(int64(i), &wg)
		counterFn = counter(int64(i))
		byteSum += makeBuf(64 + i%64)
		byteSum += int(bigLocal(i))
		rectSink = shape.NewRect(int64(i), 2)
		stringSink = itoa(i)
	}
	wg.Wait()
	fmt.Printf("escape n=%d sum=%d go=%d\n", n, byteSum, goSum.Load())
}
