// Command bench measures the Go client's Retrieve against a running server: sequential calls (one in
// flight) of N keys × the given features of one feature group, each result read into float32 columns
// (what a model server does), for each N. It prints one JSON object per N: latency percentiles, calls
// per second and the client's own CPU time per call (user + system, from getrusage, GC included).
//
// bench/go_client_bench.py builds and runs it next to the Python Client; by hand:
//
//	go run ./bench -addr 127.0.0.1:8089 -entity user -group fg0 -features 64 -keys 1,100,500 -seconds 3
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/online-feature-store/online-feature-store/clients/go/client"
)

// result is one line of output; field names match bench/go_client_bench.py's Python side.
type result struct {
	Client       string  `json:"client"`
	Keys         int     `json:"keys"`
	Calls        int     `json:"calls"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	MeanMs       float64 `json:"mean_ms"`
	CallsPerSec  float64 `json:"calls_per_s"`
	CPUusPerCall float64 `json:"cpu_us_per_call"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "server address")
	entity := flag.String("entity", "user", "entity label")
	group := flag.String("group", "fg0", "feature group label")
	nFeatures := flag.Int("features", 64, "features f0..f<n-1> of the group")
	keyFormat := flag.String("key-format", "u%06d", "the i-th key (fmt verb)")
	keysSchema := flag.String("keys-schema", "user_id", "the key column's label (empty: none sent)")
	keyCounts := flag.String("keys", "1,100,500", "comma-separated key counts")
	seconds := flag.Float64("seconds", 3, "measured seconds per key count")
	warmup := flag.Int("warmup", 50, "unmeasured calls before each key count")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the measured calls here")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var counts []int
	for _, s := range strings.Split(*keyCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("-keys: %q is not a positive count", s)
		}
		counts = append(counts, n)
	}
	features := make([]string, *nFeatures)
	for i := range features {
		features[i] = fmt.Sprintf("f%d", i)
	}
	var opts []client.Option
	if token := os.Getenv("OFS_READER_TOKEN"); token != "" {
		opts = append(opts, client.WithReader(os.Getenv("OFS_READER_ID"), token))
	}
	ctx := context.Background()
	c, err := client.New(ctx, *addr, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, n := range counts {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf(*keyFormat, i)
		}
		var schema []string
		if *keysSchema != "" {
			schema = []string{*keysSchema}
		}
		req := client.RetrieveRequest{Entity: *entity, KeysSchema: schema, Keys: client.Keys(keys...),
			FeatureGroups: []client.FeatureGroup{{Label: *group, Features: features}}}
		r, err := measure(ctx, c, req, *warmup, time.Duration(*seconds*float64(time.Second)))
		if err != nil {
			log.Printf("%d keys: %v", n, err)
			return // (not log.Fatal: the deferred profile is written)
		}
		out, _ := json.Marshal(r)
		fmt.Println(string(out))
	}
}

// call is one measured unit: a Retrieve whose every feature is read as float32 and checked found.
func call(ctx context.Context, c *client.Client, req client.RetrieveRequest) error {
	res, err := c.Retrieve(ctx, req)
	if err != nil {
		return err
	}
	g := res.Groups[0]
	for _, col := range g.Columns {
		v, err := col.Float32s()
		if err != nil {
			return err
		}
		if len(v) != len(req.Keys) {
			return fmt.Errorf("%d values for %d keys", len(v), len(req.Keys))
		}
	}
	for i, s := range g.Status {
		if s != client.Found {
			return fmt.Errorf("key %v: %s (load the data first)", req.Keys[i], s)
		}
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(ctx context.Context, c *client.Client, req client.RetrieveRequest, warmup int, span time.Duration) (result, error) {
	for range warmup {
		if err := call(ctx, c, req); err != nil {
			return result{}, err
		}
	}
	var lat []time.Duration
	cpu0, start := cpuTime(), time.Now()
	for time.Since(start) < span {
		t := time.Now()
		if err := call(ctx, c, req); err != nil {
			return result{}, err
		}
		lat = append(lat, time.Since(t))
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	if len(lat) == 0 {
		return result{}, errors.New("no call completed")
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	pct := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	return result{
		Client: "go", Keys: len(req.Keys), Calls: len(lat),
		P50ms: pct(0.50), P99ms: pct(0.99), MeanMs: ms(wall) / float64(len(lat)),
		CallsPerSec:  float64(len(lat)) / wall.Seconds(),
		CPUusPerCall: float64(cpu.Microseconds()) / float64(len(lat)),
	}, nil
}
