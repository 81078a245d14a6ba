// Command demo is allocwatch's demo service: a small HTTP + JSON "orders"
// service that drives itself with a built-in load generator, so that there is
// always something to watch:
//
//	go build -o demo ./demo && ./demo          # prints its URL, runs until killed
//	sudo allocwatch -p "$(pgrep -n demo)"      # in another terminal
//
// It allocates the way real Go services do. Look for these in allocwatch's
// output (function names as allocwatch reports them):
//
//   - main.newOrder: a constructor returning a pointer to a local variable
//     (the local "moves to heap").
//   - main.handleOrders: a closure capturing a local (sent to the audit
//     log), a goroutine capturing locals (revenue accounting), fmt.Sprintf.
//   - main.orderSummary: strings.Builder growth.
//   - main.handleReport: make([]reportLine, n) with n from the query string.
//   - main.handleStats: integers stored into interface{} values (map[string]any).
//   - encoding/json: decoding requests and encoding responses.
//   - bufPool (main.newBuffer): a sync.Pool of *bytes.Buffer used well: Get,
//     Reset, Put. Almost every Get is a hit.
//   - scratchPool (main.newScratch): a sync.Pool used badly: objects are
//     never Put back, so every Get is a miss and calls New.
//   - main.(*loadGen).*: the load generator's own client-side allocations.
//
// Flags: -addr (default 127.0.0.1:0, an ephemeral port), -rps (requests per
// second generated in total, default 3000; 0 disables the load generator),
// -workers (load generator goroutines). SIGINT or SIGTERM stops it cleanly
// (exit status 0).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ---------------------------------------------------------------------------
// Data model.

// Item is one line of an order.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	PriceCents int64  `json:"price_cents"`
}

// OrderRequest is the body of POST /api/orders.
type OrderRequest struct {
	Customer string `json:"customer"`
	Items    []Item `json:"items"`
}

// Order is a stored order.
type Order struct {
	ID         string
	Customer   string
	Items      []Item
	TotalCents int64
	Created    time.Time
}

// OrderResponse is the reply to POST /api/orders.
type OrderResponse struct {
	ID         string `json:"id"`
	TotalCents int64  `json:"total_cents"`
	Summary    string `json:"summary"`
}

var orderSeq atomic.Int64

// newOrder builds an Order from a request. It returns a pointer to a local
// variable, so the compiler moves the variable to the heap: one allocation
// per call (plus the ID built by fmt.Sprintf).
func newOrder(req *OrderRequest) *Order {
	o := Order{
		ID:       fmt.Sprintf("ord-%08d", orderSeq.Add(1)),
		Customer: req.Customer,
		Items:    req.Items,
		Created:  time.Now(),
	}
	for _, it := range req.Items {
		o.TotalCents += int64(it.Qty) * it.PriceCents
	}
	return &o
}

// orderSummary renders a one-line description with a strings.Builder, which
// grows (reallocates) its buffer as text is appended.
func orderSummary(o *Order) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(len(o.Items)))
	b.WriteString(" item(s) for ")
	b.WriteString(o.Customer)
	b.WriteString(": ")
	for i, it := range o.Items {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s x%d @ %d.%02d", it.SKU, it.Qty, it.PriceCents/100, it.PriceCents%100)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Storage: the most recent orders plus per-customer revenue, in maps.

const keepOrders = 1024

type store struct {
	mu       sync.Mutex
	orders   map[string]*Order   // by ID, the last keepOrders orders
	ring     []string            // IDs in arrival order
	next     int                 // next slot in ring
	byCust   map[string][]string // customer -> recent order IDs (bounded)
	revenue  map[string]int64    // customer -> total cents
	requests map[string]int64    // route -> requests served
}

var db = &store{
	orders:   make(map[string]*Order),
	ring:     make([]string, keepOrders),
	byCust:   make(map[string][]string),
	revenue:  make(map[string]int64),
	requests: make(map[string]int64),
}

func (s *store) add(o *Order) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.ring[s.next]; old != "" {
		delete(s.orders, old)
	}
	s.ring[s.next] = o.ID
	s.next = (s.next + 1) % keepOrders
	s.orders[o.ID] = o
	ids := append(s.byCust[o.Customer], o.ID)
	if len(ids) > 64 {
		ids = append([]string(nil), ids[len(ids)-32:]...)
	}
	s.byCust[o.Customer] = ids
}

func (s *store) addRevenue(customer string, cents int64) {
	s.mu.Lock()
	s.revenue[customer] += cents
	s.mu.Unlock()
}

func (s *store) count(route string) {
	s.mu.Lock()
	s.requests[route]++
	s.mu.Unlock()
}

// ---------------------------------------------------------------------------
// The two pools.

// bufPool holds response buffers. Used well: every Get is paired with a Put,
// so after warm-up Get almost never calls New.
var bufPool = sync.Pool{New: newBuffer}

// newBuffer is bufPool's New function.
func newBuffer() any {
	return new(bytes.Buffer)
}

// scratch is a work area for formatting report lines.
type scratch struct {
	buf []byte
}

// scratchPool holds scratch areas. Used badly: handleReport Gets one per
// request and never Puts it back, so every Get misses and calls New, which
// allocates 4 KiB. (The fix is one line: defer scratchPool.Put(sc).)
var scratchPool = sync.Pool{New: newScratch}

// newScratch is scratchPool's New function.
func newScratch() any {
	return &scratch{buf: make([]byte, 0, 4096)}
}

// writeJSON encodes v into a pooled buffer and writes it out.
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// ---------------------------------------------------------------------------
// Handlers.

// auditLog receives closures that describe what happened; one goroutine
// evaluates them. Each closure captures locals of the handler that sent it,
// so each one is a heap allocation.
var auditLog = make(chan func() string, 1024)

var auditedBytes atomic.Int64

func auditor() {
	for f := range auditLog {
		auditedBytes.Add(int64(len(f())))
	}
}

var revenueWG sync.WaitGroup

// handleOrders: POST /api/orders with an OrderRequest body.
func handleOrders(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	db.count("orders")
	var req OrderRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Customer == "" || len(req.Items) == 0 {
		http.Error(w, "customer and items are required", http.StatusBadRequest)
		return
	}
	o := newOrder(&req)
	db.add(o)

	// A closure capturing a local (o), handed to another goroutine.
	select {
	case auditLog <- func() string { return "order " + o.ID + " by " + o.Customer }:
	default: // audit log full: drop
	}

	// A goroutine capturing locals (customer, total).
	customer, total := o.Customer, o.TotalCents
	revenueWG.Add(1)
	go func() {
		defer revenueWG.Done()
		db.addRevenue(customer, total)
	}()

	writeJSON(w, http.StatusCreated, OrderResponse{ID: o.ID, TotalCents: o.TotalCents, Summary: orderSummary(o)})
}

// reportLine is one line of GET /api/report.
type reportLine struct {
	ID    string `json:"id"`
	Total string `json:"total"`
	Text  string `json:"text"`
}

// handleReport: GET /api/report?customer=NAME&limit=N, the customer's most
// recent orders.
func handleReport(w http.ResponseWriter, r *http.Request) {
	db.count("report")
	customer := r.URL.Query().Get("customer")
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 || limit > 100 {
		limit = 10
	}

	// The badly used pool: Get, never Put.
	sc := scratchPool.Get().(*scratch)

	db.mu.Lock()
	ids := db.byCust[customer]
	if len(ids) > limit {
		ids = ids[len(ids)-limit:]
	}
	// make with a size known only at run time.
	lines := make([]reportLine, len(ids))
	for i, id := range ids {
		o := db.orders[id]
		if o == nil {
			lines[i] = reportLine{ID: id, Text: "(expired)"}
			continue
		}
		sc.buf = fmt.Appendf(sc.buf[:0], "%d.%02d", o.TotalCents/100, o.TotalCents%100)
		lines[i] = reportLine{ID: o.ID, Total: string(sc.buf), Text: orderSummary(o)}
	}
	db.mu.Unlock()

	writeJSON(w, http.StatusOK, map[string]any{"customer": customer, "orders": lines})
}

// handleStats: GET /api/stats, totals per customer and per route.
func handleStats(w http.ResponseWriter, r *http.Request) {
	db.count("stats")
	db.mu.Lock()
	// Storing ints into interface{} values: each one (>= 256) is boxed on the heap.
	revenue := make(map[string]any, len(db.revenue))
	customers := make([]string, 0, len(db.revenue))
	for c, cents := range db.revenue {
		revenue[c] = cents
		customers = append(customers, c)
	}
	requests := make(map[string]any, len(db.requests))
	for route, n := range db.requests {
		requests[route] = n
	}
	stored := len(db.orders)
	db.mu.Unlock()

	sort.Slice(customers, func(i, j int) bool {
		return revenue[customers[i]].(int64) > revenue[customers[j]].(int64)
	})
	writeJSON(w, http.StatusOK, map[string]any{
		"orders_stored":  stored,
		"orders_created": orderSeq.Load(),
		"revenue_cents":  revenue,
		"top_customers":  customers,
		"requests":       requests,
		"audited_bytes":  auditedBytes.Load(),
	})
}

// ---------------------------------------------------------------------------

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	rps := flag.Int("rps", 3000, "requests per second generated by the built-in load generator (0: none)")
	workers := flag.Int("workers", 4, "load generator goroutines")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("demo: ")

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/orders", handleOrders)
	mux.HandleFunc("/api/report", handleReport)
	mux.HandleFunc("/api/stats", handleStats)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go auditor()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	url := "http://" + ln.Addr().String()
	fmt.Printf("demo listening on %s\n", url)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var lg *loadGen
	if *rps > 0 {
		lg = startLoad(ctx, url, *rps, *workers)
		log.Printf("load generator: %d requests/s from %d goroutines", *rps, *workers)
	}

	<-ctx.Done()
	log.Printf("shutting down")
	if lg != nil {
		lg.wait()
		log.Printf("load generator: %d requests, %d errors", lg.requests.Load(), lg.errors.Load())
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v", err)
	}
	revenueWG.Wait()
}
