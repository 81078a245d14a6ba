package main

// The built-in load generator: a few goroutines that call the service's own
// endpoints over loopback HTTP at a fixed total rate.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

var customers = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

type loadGen struct {
	base     string
	client   *http.Client
	wg       sync.WaitGroup
	requests atomic.Int64
	errors   atomic.Int64
}

// startLoad starts `workers` goroutines that together send about rps
// requests per second to base until ctx is done.
func startLoad(ctx context.Context, base string, rps, workers int) *loadGen {
	if workers < 1 {
		workers = 1
	}
	lg := &loadGen{
		base: base,
		client: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns:        workers,
				MaxIdleConnsPerHost: workers,
				IdleConnTimeout:     30 * time.Second,
			},
		},
	}
	// Each worker sends one request per tick.
	interval := time.Duration(int64(time.Second) * int64(workers) / int64(rps))
	if interval <= 0 {
		interval = time.Microsecond
	}
	for w := 0; w < workers; w++ {
		lg.wg.Add(1)
		go lg.run(ctx, int64(w), interval)
	}
	return lg
}

func (lg *loadGen) wait() { lg.wg.Wait() }

func (lg *loadGen) run(ctx context.Context, seed int64, interval time.Duration) {
	defer lg.wg.Done()
	rng := rand.New(rand.NewSource(seed))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var err error
		switch p := rng.Intn(10); {
		case p < 6:
			err = lg.postOrder(rng)
		case p < 9:
			err = lg.getReport(rng)
		default:
			err = lg.get("/api/stats")
		}
		lg.requests.Add(1)
		if err != nil {
			lg.errors.Add(1)
		}
	}
}

// postOrder sends a random order.
func (lg *loadGen) postOrder(rng *rand.Rand) error {
	req := OrderRequest{Customer: customers[rng.Intn(len(customers))]}
	for i, n := 0, 1+rng.Intn(5); i < n; i++ {
		req.Items = append(req.Items, Item{
			SKU:        fmt.Sprintf("sku-%03d", rng.Intn(200)),
			Qty:        1 + rng.Intn(4),
			PriceCents: int64(99 + rng.Intn(9900)),
		})
	}
	body, err := json.Marshal(&req)
	if err != nil {
		return err
	}
	resp, err := lg.client.Post(lg.base+"/api/orders", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	return drain(resp, http.StatusCreated)
}

// getReport asks for a random customer's recent orders.
func (lg *loadGen) getReport(rng *rand.Rand) error {
	q := url.Values{}
	q.Set("customer", customers[rng.Intn(len(customers))])
	q.Set("limit", fmt.Sprint(1+rng.Intn(20)))
	return lg.get("/api/report?" + q.Encode())
}

func (lg *loadGen) get(path string) error {
	resp, err := lg.client.Get(lg.base + path)
	if err != nil {
		return err
	}
	return drain(resp, http.StatusOK)
}

// drain reads and closes the body so that the connection is reused.
func drain(resp *http.Response, want int) error {
	_, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
