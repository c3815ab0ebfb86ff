// Command dlgen downloads one URL over and over with a given concurrency,
// as conda clients fetch a channel, and prints what it measured as one
// JSON object: goodput, latency percentiles and status codes. With -etag
// it first fetches the URL once and then revalidates it with
// If-None-Match, as a client with a cached index does.
//
//	dlgen -url https://127.0.0.1:8443/noarch/big-1.0-0.conda -c 8 -n 32 -ca cert.pem
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

type result struct {
	Requests int            `json:"requests"`
	Bytes    int64          `json:"bytes"`
	Seconds  float64        `json:"seconds"`
	MBps     float64        `json:"goodput_mb_s"`
	P50ms    float64        `json:"p50_ms"`
	P99ms    float64        `json:"p99_ms"`
	Codes    map[string]int `json:"codes"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("dlgen: ")
	url := flag.String("url", "", "URL to fetch")
	c := flag.Int("c", 1, "concurrent clients")
	n := flag.Int("n", 10, "requests in all")
	caFile := flag.String("ca", "", "PEM file of the CA to trust")
	etag := flag.Bool("etag", false, "revalidate with If-None-Match (expects 304)")
	flag.Parse()
	pool := x509.NewCertPool()
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		pool.AppendCertsFromPEM(b)
	}
	// HTTP/1.1 for both servers: the nginx it is compared with speaks
	// HTTP/1.1 here, and connections are reused as clients reuse them.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: *c,
		DisableCompression:  true,
	}}
	var tag string
	if *etag {
		resp, err := client.Get(*url)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if tag = resp.Header.Get("ETag"); tag == "" {
			log.Fatal("no ETag")
		}
	}
	var (
		mu    sync.Mutex
		lat   []time.Duration
		bytes int64
		codes = map[string]int{}
	)
	jobs := make(chan struct{}, *n)
	for range *n {
		jobs <- struct{}{}
	}
	close(jobs)
	start := time.Now()
	var wg sync.WaitGroup
	for range *c {
		wg.Go(func() {
			for range jobs {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, *url, nil)
				if tag != "" {
					req.Header.Set("If-None-Match", tag)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					log.Fatal(err)
				}
				got, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					log.Fatal(err)
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				bytes += got
				codes[fmt.Sprint(resp.StatusCode)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	json.NewEncoder(os.Stdout).Encode(result{Requests: len(lat), Bytes: bytes, Seconds: secs, MBps: float64(bytes) / secs / 1e6,
		P50ms: pct(0.5), P99ms: pct(0.99), Codes: codes})
}
