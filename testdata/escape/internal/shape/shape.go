// Package shape is the escape fixture's second package: allocation sites
// outside package main are mapped by their import path.
package shape

// Rect is what NewRect allocates (16 bytes).
type Rect struct{ W, H int64 }

// NewRect returns a pointer to a composite literal: the literal escapes.
//
//go:noinline
func NewRect(w, h int64) *Rect {
	return &Rect{W: w, H: h} // escape-site: returned
}
