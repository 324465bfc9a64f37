// Command retrieve writes and reads features of the quick start's registry (examples/features.yaml)
// through the Go SDK: a persist of two feature groups, a typed retrieve (with a feature down-quantized
// to FP16 on the fly), the server-rendered strings, and an error matched with errors.Is.
//
//	scripts/run                                            # in another terminal: ofs serve on :8089
//	cd clients/go && go run ./examples/retrieve -addr 127.0.0.1:8089
//
// Against `ofs serve --auth`, set OFS_READER_TOKEN and OFS_WRITER_TOKEN (callers "ranker" and "ingest").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/online-feature-store/online-feature-store/clients/go/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "server address")
	reader := flag.String("reader", "ranker", "caller id sent with retrieves (token: $OFS_READER_TOKEN)")
	writer := flag.String("writer", "ingest", "caller id sent with persists (token: $OFS_WRITER_TOKEN)")
	flag.Parse()
	if err := run(*addr, *reader, *writer); err != nil {
		log.Fatal(err)
	}
}

func run(addr, reader, writer string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var opts []client.Option
	if token := os.Getenv("OFS_READER_TOKEN"); token != "" {
		opts = append(opts, client.WithReader(reader, token))
	}
	if token := os.Getenv("OFS_WRITER_TOKEN"); token != "" {
		opts = append(opts, client.WithWriter(writer, token))
	}
	c, err := client.New(ctx, addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	// One row per user of two feature groups: the group's data type picks the wire container.
	err = c.Persist(ctx, client.PersistRequest{
		Entity: "user",
		Groups: []client.PersistGroup{
			{Label: "activity", DataType: client.FP32, Features: []string{"ctr_7d", "sessions_7d"}},
			{Label: "embedding", DataType: client.FP16Vector, Features: []string{"user_emb"}},
		},
		Rows: []client.PersistRow{
			{Key: []string{"go-u1"}, Values: []client.Values{
				client.FloatValues(0.125, 7),
				client.Float32Vectors([]float32{0.5, -1, 0.25, 0, 1, 2, -0.5, 3}),
			}},
			{Key: []string{"go-u2"}, Values: []client.Values{
				client.FloatValues(0.75, 2),
				client.Float32Vectors([]float32{1, 1, 1, 1, 0, 0, 0, 0}),
			}},
		},
	})
	if err != nil {
		return fmt.Errorf("persist: %w", err)
	}

	req := client.RetrieveRequest{
		Entity: "user",
		Keys:   client.Keys("go-u1", "go-u2", "go-nobody"),
		FeatureGroups: []client.FeatureGroup{
			{Label: "activity", Features: []string{"ctr_7d", "sessions_7d@DataTypeFP16"}},
			{Label: "embedding", Features: []string{"user_emb"}},
		},
	}
	res, err := c.Retrieve(ctx, req)
	if err != nil {
		return fmt.Errorf("retrieve: %w", err)
	}
	activity, embedding := res.Group("activity"), res.Group("embedding")
	ctr, err := activity.Float32s("ctr_7d")
	if err != nil {
		return err
	}
	sessions, err := activity.Float32s("sessions_7d@DataTypeFP16")
	if err != nil {
		return err
	}
	emb, err := embedding.Float32Matrix("user_emb")
	if err != nil {
		return err
	}
	for i, key := range res.Keys {
		fmt.Printf("%s: ctr_7d=%v sessions_7d=%v (%s) user_emb=%v\n", key[0], ctr[i], sessions[i], activity.Status[i], emb[i])
	}

	decoded, err := c.RetrieveDecoded(ctx, req)
	if err != nil {
		return fmt.Errorf("retrieve decoded: %w", err)
	}
	for _, g := range decoded.Groups {
		fmt.Printf("decoded %s %v: %v\n", g.Label, g.Features, g.Rows)
	}

	_, err = c.Retrieve(ctx, client.RetrieveRequest{Entity: "user", Keys: client.Keys("go-u1"),
		FeatureGroups: []client.FeatureGroup{{Label: "no_such_group", Features: []string{"x"}}}})
	if errors.Is(err, client.ErrNotFound) {
		fmt.Println("not found, as expected:", err)
		return nil
	}
	return fmt.Errorf("retrieving an unknown feature group: %v, want an error matching client.ErrNotFound", err)
}
