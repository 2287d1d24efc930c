package main

// Sinks: null (acknowledged when handed over), stdout (NDJSON, acknowledged when written) and
// Kafka (franz-go, acknowledged per record by the producer's promise). Kafka records carry
// what tailship's Kafka sink sets (pipelines/sinks/kafka/__init__.py): key = trace id (none
// without one), headers `log.file.path` always, `trace_id` and `span_id` when the record has
// them. The kgo.Records and headers of a batch live in two slices made once per batch.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type output interface {
	send(b *batch)
	close()
}

type nullOut struct{}

func (nullOut) send(b *batch) {
	st.acked.Add(int64(len(b.recs)))
	b.ack(int64(len(b.recs)) + 1)
}
func (nullOut) close() {}

type stdoutOut struct{ w *bufio.Writer }

func (o stdoutOut) send(b *batch) {
	for i := range b.recs {
		o.w.Write(b.recs[i].value)
		o.w.WriteByte('\n')
	}
	o.w.Flush() // a batch is written when it is acknowledged
	st.acked.Add(int64(len(b.recs)))
	b.ack(int64(len(b.recs)) + 1)
}
func (o stdoutOut) close() { o.w.Flush() }

type kafkaSettings struct {
	linger      time.Duration
	batchBytes  int
	level       int
	maxInflight int
	maxBuffered int
	bufferBytes int
}

type kafkaOut struct {
	cl    *kgo.Client
	topic string
}

func newKafka(url string, s kafkaSettings) (*kafkaOut, error) {
	rest := strings.TrimPrefix(url, "kafka://")
	hosts, topic, ok := strings.Cut(rest, "/")
	if !ok || topic == "" || hosts == "" {
		return nil, fmt.Errorf("kafka URL needs brokers and a topic (kafka://HOST:PORT/TOPIC): %q", url)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(hosts, ",")...),
		kgo.ClientID("go-baseline"),
		kgo.ProducerBatchCompression(kgo.ZstdCompression().WithLevel(s.level)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(s.linger),
		kgo.ProducerBatchMaxBytes(int32(s.batchBytes)),
		kgo.MaxBufferedRecords(s.maxBuffered),
		kgo.MaxBufferedBytes(s.bufferBytes),
		kgo.ProduceRequestTimeout(30 * time.Second),          // tailship's request_timeout_ms
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 of the key, like Java's
		kgo.AllowAutoTopicCreation(),
	}
	if c := newCompressor(s.level); c != nil {
		opts = append(opts, kgo.WithCompressor(c))
	}
	if s.maxInflight > 0 {
		// franz-go's idempotent producer always allows 5 requests in flight per broker; a
		// smaller number is only accepted without idempotence (see README)
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(s.maxInflight))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &kafkaOut{cl: cl, topic: topic}, nil
}

func (k *kafkaOut) send(b *batch) {
	n := len(b.recs)
	krs := make([]kgo.Record, n)
	hdrs := make([]kgo.RecordHeader, 0, 3*n)
	promise := b.promise
	ctx := context.Background()
	for i := range b.recs {
		r := &b.recs[i]
		kr := &krs[i]
		kr.Topic, kr.Value = k.topic, r.value
		h := len(hdrs)
		hdrs = append(hdrs, kgo.RecordHeader{Key: "log.file.path", Value: r.path})
		if r.hasT {
			kr.Key = r.tid[:]
			hdrs = append(hdrs, kgo.RecordHeader{Key: "trace_id", Value: r.tid[:]})
		}
		if r.hasS {
			hdrs = append(hdrs, kgo.RecordHeader{Key: "span_id", Value: r.sid[:]})
		}
		kr.Headers = hdrs[h:len(hdrs):len(hdrs)]
		k.cl.Produce(ctx, kr, promise) // blocks while the producer's buffer is full
	}
	b.ack(1)
}

func (b *batch) promise(_ *kgo.Record, err error) {
	if err != nil {
		if st.failed.Add(1) == 1 {
			fmt.Fprintln(os.Stderr, "go-baseline: produce failed:", err)
		}
		b.failed.Store(true)
	} else {
		st.acked.Add(1)
	}
	b.ack(1)
}

func (k *kafkaOut) close() {
	_ = k.cl.Flush(context.Background())
	k.cl.Close()
}
