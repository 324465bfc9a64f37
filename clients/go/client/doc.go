// Package client is the Go SDK of online-feature-store: a gRPC client of `ofs serve` (and of any server
// of the same protocol, which is wire-compatible with BharatMLStack's online feature store).
//
//	c, err := client.New(ctx, "features.internal:8089",
//		client.WithReader("ranker", os.Getenv("OFS_READER_TOKEN")))
//	...
//	res, err := c.Retrieve(ctx, client.RetrieveRequest{
//		Entity:        "user",
//		Keys:          client.Keys("u1", "u2"),
//		FeatureGroups: []client.FeatureGroup{{Label: "activity", Features: []string{"ctr_7d", "sessions_7d"}}},
//	})
//	ctr, err := res.Group("activity").Float32s("ctr_7d") // one value per key, in request order
//
// Retrieve decodes every data type the server serves (the 30 reference types, FP8 and FP16 widened
// to float32, retrieval-time quantized "label@DataTypeFP16" features) into typed columns, with each
// row's status (found, missing, expired). RetrieveDecoded returns the server's string rendering
// instead and works against the reference server too. Persist writes rows of one or more feature
// groups.
//
// Every call honours its context's deadline and cancellation (WithTimeout applies when the context has
// no deadline). Key lists longer than the batch size are split into concurrent requests whose results
// come back in request order. A request answered UNAVAILABLE is retried with exponential backoff and
// full jitter within the deadline; no other status is retried. Failed calls return an *Error that
// matches a sentinel such as ErrNotFound or ErrUnauthenticated with errors.Is.
//
// See docs/go-client.md in the repository for the whole guide.
package client
