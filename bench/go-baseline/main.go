// Command go-baseline does tailship's job in Go, for the benchmark: tail container log files
// (docker json-file or CRI, split lines joined), parse the JSON payload, find and normalize the
// trace id, add kubernetes metadata from the kubelet file name, batch, and ship to Kafka
// (franz-go: zstd, acks=all, idempotent, key = trace id) or count and discard (null).
//
// Design (see README.md): one reader goroutine per file reads 1 MiB chunks and cuts them at the
// last newline; chunks are parsed by a pool of GOMAXPROCS workers; each file's results are
// emitted in chunk order through a queue of per-chunk result channels, so a file's records
// keep their order. Buffers come from sync.Pools; parsing uses fastjson (no reflection, parser
// reuse); output records are the payload's own bytes with the agent's fields appended before
// the closing brace (no re-encoding of the app's fields).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"
)

const chunkSize = 1 << 20

// pollInterval: the wait at end of file before looking again (-poll; tailship's
// source.poll_interval_ms, 250 ms by default).
var pollInterval = 250 * time.Millisecond

type record struct {
	value   []byte
	traceID string
	// for trace inheritance by stack-trace lines, done in order by the emitter
	stream string
	ts     string
	cont   bool // a plain-text continuation line without a trace id of its own
	file   *meta
}

type stats struct {
	lines, records, bytesRead, acked, failed atomic.Int64
}

var (
	st       stats
	host, _  = os.Hostname()
	parsers  fastjson.ParserPool
	chunkBuf = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}
)

type output interface {
	send(recs []record)
	flush()
}

type nullOut struct{}

func (nullOut) send(recs []record) { st.acked.Add(int64(len(recs))) }
func (nullOut) flush()             {}

// stdoutOut writes the records as NDJSON (for comparing outputs with tailship's).
type stdoutOut struct{ w *bufio.Writer }

func (o stdoutOut) send(recs []record) {
	for _, r := range recs {
		o.w.Write(r.value)
		o.w.WriteByte('\n')
	}
	st.acked.Add(int64(len(recs)))
}
func (o stdoutOut) flush() { o.w.Flush() }

type kafkaOut struct {
	cl    *kgo.Client
	topic string
}

func newKafka(url string) (*kafkaOut, error) {
	rest := strings.TrimPrefix(url, "kafka://")
	hosts, topic, ok := strings.Cut(rest, "/")
	if !ok || topic == "" {
		return nil, fmt.Errorf("kafka URL needs brokers and a topic: %q", url)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(hosts, ",")...),
		kgo.ProducerBatchCompression(kgo.ZstdCompression().WithLevel(1)), // tailship's compression_level
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(200000),
		kgo.MaxBufferedBytes(64<<20),                         // tailship's batch.memory_limit_bytes
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 of the key, like Java's
		kgo.AllowAutoTopicCreation(),
	)
	if err != nil {
		return nil, err
	}
	return &kafkaOut{cl: cl, topic: topic}, nil
}

func (k *kafkaOut) send(recs []record) {
	for _, r := range recs {
		rec := &kgo.Record{Topic: k.topic, Value: r.value}
		if r.traceID != "" {
			rec.Key = []byte(r.traceID)
		}
		k.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			if err != nil {
				if st.failed.Add(1) == 1 {
					fmt.Fprintln(os.Stderr, "go-baseline: produce failed:", err)
				}
				return
			}
			st.acked.Add(1)
		})
	}
}

func (k *kafkaOut) flush() {
	_ = k.cl.Flush(context.Background())
	k.cl.Close()
}

// ---------------------------------------------------------------------------------------------

type meta struct {
	path    string
	k8sJSON []byte // ,"kubernetes":{...} or empty
}

// fileMeta: kubernetes fields from the kubelet's names, like tailship's: the
// /var/log/containers link name (pod, namespace, container, container id) and its target under
// /var/log/pods/<namespace>_<pod>_<uid>/<container>/N.log (the pod uid).
func fileMeta(path string) meta {
	m := meta{path: path}
	k := map[string]string{}
	name := strings.TrimSuffix(filepath.Base(path), ".log")
	parts := strings.SplitN(name, "_", 3)
	if len(parts) == 3 {
		i := strings.LastIndexByte(parts[2], '-')
		if i > 0 {
			k["namespace"], k["pod"], k["container"], k["container_id"] = parts[1], parts[0], parts[2][:i], parts[2][i+1:]
		}
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		podDir := filepath.Base(filepath.Dir(filepath.Dir(real)))
		if p := strings.SplitN(podDir, "_", 3); len(p) == 3 {
			k["pod_uid"] = p[2]
			if _, ok := k["namespace"]; !ok {
				k["namespace"], k["pod"], k["container"] = p[0], p[1], filepath.Base(filepath.Dir(real))
			}
		}
	}
	if len(k) > 0 {
		j, _ := json.Marshal(k)
		m.k8sJSON = append([]byte(`,"kubernetes":`), j...)
	}
	return m
}

// decoder holds a file's partial-line joins across chunks (docker 16 KiB splits, CRI P lines).
type decoder struct {
	format    byte // 'd' docker, 'c' cri
	partial   []byte
	partialTS string // a joined line carries its first piece's timestamp
	partialAt int64  // and offset
}

var hexDigits = "0123456789abcdef"

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func normHex(s string, n int) string {
	if len(s) == 16 && n == 32 {
		s = "0000000000000000" + s
	}
	if len(s) != n || !isHex(s) || strings.Trim(s, "0") == "" {
		return ""
	}
	return strings.ToLower(s)
}

func traceID(v *fastjson.Value) string {
	for _, k := range []string{"trace_id", "traceId", "traceID", "TraceId", "trace.id", "X-B3-TraceId"} {
		if s := v.GetStringBytes(k); s != nil {
			if t := normHex(string(s), 32); t != "" {
				return t
			}
		}
	}
	if s := v.GetStringBytes("trace", "id"); s != nil {
		if t := normHex(string(s), 32); t != "" {
			return t
		}
	}
	if s := v.GetStringBytes("traceparent"); s != nil {
		p := strings.Split(string(s), "-")
		if len(p) == 4 {
			if t := normHex(p[1], 32); t != "" {
				return t
			}
		}
	}
	if s := v.GetStringBytes("logging.googleapis.com/trace"); s != nil {
		str := string(s)
		if i := strings.LastIndexByte(str, '/'); i >= 0 {
			if t := normHex(str[i+1:], 32); t != "" {
				return t
			}
		}
	}
	for _, k := range []string{"dd.trace_id"} {
		if x := v.Get(k); x != nil {
			var d uint64
			var err error
			if x.Type() == fastjson.TypeString {
				d, err = strconv.ParseUint(string(x.GetStringBytes()), 10, 64)
			} else {
				d, err = x.Uint64()
			}
			if err == nil && d != 0 {
				b := make([]byte, 32)
				for i := range b {
					b[i] = '0'
				}
				for i := 31; d > 0; i-- {
					b[i] = hexDigits[d&15]
					d >>= 4
				}
				return string(b)
			}
		}
	}
	return ""
}

// textKeys: trace-id keys in plain text (logfmt `key=value`, `key: value`), by priority.
var textKeys = []struct {
	key  string
	rank int
}{{"trace_id", 0}, {"traceId", 1}, {"traceID", 1}, {"TraceId", 1}, {"trace.id", 2}, {"traceparent", 3}, {"dd.trace_id", 4}}

func isWordByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '.' || c == '-'
}

func isValByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-'
}

// textValue: the value after `key` at msg[i:], or "" (`key["']?\s*[=:]\s*["']?value`, not
// followed by `=`/`:`).
func textValue(msg string, j int) string {
	if j < len(msg) && (msg[j] == '"' || msg[j] == '\'') {
		j++
	}
	for j < len(msg) && (msg[j] == ' ' || msg[j] == '\t') {
		j++
	}
	if j >= len(msg) || (msg[j] != '=' && msg[j] != ':') {
		return ""
	}
	j++
	for j < len(msg) && (msg[j] == ' ' || msg[j] == '\t') {
		j++
	}
	if j < len(msg) && (msg[j] == '"' || msg[j] == '\'') {
		j++
	}
	k := j
	for k < len(msg) && isValByte(msg[k]) {
		k++
	}
	if k == j || (k < len(msg) && (msg[k] == '=' || msg[k] == ':')) {
		return ""
	}
	return msg[j:k]
}

func decimalTrace(s string) string {
	d, err := strconv.ParseUint(s, 10, 64)
	if err != nil || d == 0 {
		return ""
	}
	b := []byte("00000000000000000000000000000000")
	for i := 31; d > 0; i-- {
		b[i] = hexDigits[d&15]
		d >>= 4
	}
	return string(b)
}

// textTrace finds a trace id written into a plain-text line, as tailship's extract_text does.
func textTrace(msg string) string {
	if !strings.Contains(msg, "race") {
		return ""
	}
	best, bestRank := "", 99
	for _, tk := range textKeys {
		if tk.rank >= bestRank {
			continue
		}
		for from := 0; ; {
			i := strings.Index(msg[from:], tk.key)
			if i < 0 {
				break
			}
			i += from
			from = i + len(tk.key)
			if i > 0 && isWordByte(msg[i-1]) {
				continue
			}
			v := textValue(msg, from)
			if v == "" {
				continue
			}
			var t string
			switch tk.key {
			case "traceparent":
				if p := strings.Split(v, "-"); len(p) == 4 {
					t = normHex(p[1], 32)
				}
			case "dd.trace_id":
				t = decimalTrace(v)
			default:
				t = normHex(v, 32)
			}
			if t != "" {
				best, bestRank = t, tk.rank
				break
			}
		}
	}
	return best
}

var contPrefixes = []string{"Caused by:", "Suppressed:", "Traceback (most recent call last):", "File \"",
	"During handling of the above exception", "The above exception was the direct cause",
	"created by ", "panic: ", "[signal ", "at ", "... ", "goroutine "}

// isContinuation: a stack-trace line that belongs to the record before it (indented, or a
// Java/Python/Go frame or exception line).
func isContinuation(msg string) bool {
	if msg == "" {
		return false
	}
	if msg[0] == ' ' || msg[0] == '\t' {
		return strings.TrimSpace(msg) != ""
	}
	for _, p := range contPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	// `SomeError: msg`, `java.lang.IllegalStateException: msg`
	if i := strings.IndexAny(msg, ": "); i > 0 && msg[i] == ':' {
		head := msg[:i]
		return strings.HasSuffix(head, "Error") || strings.HasSuffix(head, "Exception")
	}
	return false
}

// process one payload (a log line's message) into a record
func build(p *fastjson.Parser, payload []byte, ts, stream string, offset int64, m *meta) record {
	var out []byte
	tid := ""
	trimmed := bytes.TrimRight(payload, " \r\n")
	if len(trimmed) > 1 && trimmed[0] == '{' {
		if v, err := p.ParseBytes(trimmed); err == nil && v.Type() == fastjson.TypeObject {
			tid = traceID(v)
			out = make([]byte, 0, len(trimmed)+256+len(m.k8sJSON))
			out = append(out, trimmed[:len(trimmed)-1]...)
			if len(trimmed) > 2 {
				out = append(out, ',')
			}
			if tid != "" && string(v.GetStringBytes("trace_id")) != tid {
				out = append(out, `"trace_id":"`...)
				out = append(out, tid...)
				out = append(out, `",`...)
			}
		}
	}
	cont := false
	if out == nil {
		text := string(trimmed)
		msg, _ := json.Marshal(text)
		out = make([]byte, 0, len(msg)+256+len(m.k8sJSON))
		out = append(out, `{"message":`...)
		out = append(out, msg...)
		out = append(out, ',')
		tid = textTrace(text)
		if tid != "" {
			out = append(out, `"trace_id":"`...)
			out = append(out, tid...)
			out = append(out, `",`...)
		} else {
			cont = isContinuation(text)
		}
	}
	out = append(out, `"@timestamp":"`...)
	out = append(out, ts...)
	out = append(out, `","stream":"`...)
	out = append(out, stream...)
	out = append(out, '"')
	out = append(out, m.k8sJSON...)
	out = append(out, `,"log":{"file":{"path":`...)
	pj, _ := json.Marshal(m.path)
	out = append(out, pj...)
	out = append(out, `},"offset":`...)
	out = strconv.AppendInt(out, offset, 10)
	out = append(out, `},"host":{"name":"`...)
	out = append(out, host...)
	out = append(out, `"}}`...)
	return record{value: out, traceID: tid, stream: stream, ts: ts, cont: cont, file: m}
}

type dockerLine struct {
	Log    string `json:"log"`
	Stream string `json:"stream"`
	Time   string `json:"time"`
}

// parse decodes the lines of one chunk. Partial joins stay in the per-file decoder, which only
// the file's emitter touches (see reader): parse workers get complete entries.
type entry struct {
	payload []byte
	ts      string
	stream  string
	offset  int64
}

func decode(d *decoder, p *fastjson.Parser, lines [][]byte, offset int64) []entry {
	out := make([]entry, 0, len(lines))
	for _, ln := range lines {
		lineOff := offset
		offset += int64(len(ln)) + 1
		if len(ln) == 0 {
			continue
		}
		if d.format == 0 {
			if ln[0] == '{' {
				d.format = 'd'
			} else {
				d.format = 'c'
			}
		}
		if d.format == 'd' {
			v, err := p.ParseBytes(ln)
			if err != nil {
				out = append(out, entry{payload: ln, offset: lineOff})
				continue
			}
			msg := v.GetStringBytes("log")
			ts, stream := string(v.GetStringBytes("time")), string(v.GetStringBytes("stream"))
			if len(msg) > 0 && msg[len(msg)-1] == '\n' {
				if d.partial != nil {
					msg = append(d.partial, msg...)
					d.partial = nil
					ts, lineOff = d.partialTS, d.partialAt
				}
				out = append(out, entry{payload: append([]byte(nil), msg...), ts: ts, stream: stream, offset: lineOff})
			} else {
				if d.partial == nil {
					d.partialTS, d.partialAt = ts, lineOff
				}
				d.partial = append(d.partial, msg...)
			}
			continue
		}
		// CRI: <ts> <stream> <P|F> <msg>
		f := bytes.SplitN(ln, []byte{' '}, 4)
		if len(f) < 4 {
			out = append(out, entry{payload: ln, offset: lineOff})
			continue
		}
		if len(f[2]) == 1 && f[2][0] == 'P' {
			if d.partial == nil {
				d.partialTS, d.partialAt = string(f[0]), lineOff
			}
			d.partial = append(d.partial, f[3]...)
			continue
		}
		msg, ts := f[3], string(f[0])
		if d.partial != nil {
			msg = append(d.partial, msg...)
			d.partial = nil
			ts, lineOff = d.partialTS, d.partialAt
		}
		out = append(out, entry{payload: msg, ts: ts, stream: string(f[1]), offset: lineOff})
	}
	return out
}

type work struct {
	entries []entry
	meta    *meta
	out     chan []record
}

func worker(jobs <-chan work) {
	for w := range jobs {
		p := parsers.Get()
		recs := make([]record, len(w.entries))
		for i, e := range w.entries {
			recs[i] = build(p, e.payload, e.ts, e.stream, e.offset, w.meta)
		}
		parsers.Put(p)
		w.out <- recs
	}
}

// reader tails one file: reads chunks, decodes envelopes (sequentially: joins span lines),
// hands payload parsing to the pool and emits results in order.
// Following, at end of file it checks whether the path still names the open file: after a
// rotation (rename + create, as the kubelet does) or a delete it reads the old file to its end,
// lets it go and asks for a rescan, which picks up the new file at once.
func reader(path string, f *os.File, follow bool, stop <-chan struct{}, rescan chan<- struct{}, jobs chan<- work, emit chan<- chan []record, wg *sync.WaitGroup, done func()) {
	defer wg.Done()
	defer done() // after the close: the inode may be reused by a new file from then on
	defer f.Close()
	opened, _ := f.Stat()
	draining := false
	m := fileMeta(path)
	d := &decoder{}
	p := parsers.Get()
	defer parsers.Put(p)
	var rest []byte
	var offset int64
	bufp := chunkBuf.Get().(*[]byte)
	defer chunkBuf.Put(bufp)
	for {
		n, err := f.Read(*bufp)
		if n > 0 {
			st.bytesRead.Add(int64(n))
			data := append(rest, (*bufp)[:n]...)
			cut := bytes.LastIndexByte(data, '\n')
			if cut < 0 {
				rest = data
				continue
			}
			lines := bytes.Split(data[:cut], []byte{'\n'})
			st.lines.Add(int64(len(lines)))
			entries := decode(d, p, lines, offset)
			offset += int64(cut + 1)
			rest = append([]byte(nil), data[cut+1:]...)
			if len(entries) > 0 {
				ch := make(chan []record, 1)
				emit <- ch
				jobs <- work{entries: entries, meta: &m, out: ch}
			}
			continue
		}
		if err != nil && err != io.EOF {
			return
		}
		if !follow || draining {
			return
		}
		if now, err := os.Stat(path); err != nil || !os.SameFile(opened, now) {
			draining = true // one more pass to the end of the old file
			select {
			case rescan <- struct{}{}:
			default:
			}
			continue
		}
		select {
		case <-stop:
			return
		case <-time.After(pollInterval):
		}
	}
}

type streamKey struct {
	file   *meta
	stream string
}

type lastTrace struct {
	traceID string
	ts      string
}

func epoch(ts string) (float64, bool) {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return 0, false
	}
	return float64(t.UnixNano()) / 1e9, true
}

// inherit gives a stack-trace line without a trace id of its own the trace id of the record
// before it in the same file and stream, written at most 1 s earlier (tailship's
// trace.inherit_window_ms), in file order (the emitter sees each file's records in order).
func inherit(recs []record, last map[streamKey]lastTrace) {
	for i := range recs {
		r := &recs[i]
		k := streamKey{r.file, r.stream}
		if r.traceID != "" || !r.cont {
			last[k] = lastTrace{r.traceID, r.ts}
			continue
		}
		prev, ok := last[k]
		if !ok || prev.traceID == "" {
			continue
		}
		t0, ok0 := epoch(prev.ts)
		t1, ok1 := epoch(r.ts)
		if !ok0 || !ok1 || t1-t0 < 0 || t1-t0 > 1 {
			continue
		}
		v := r.value[:len(r.value)-1] // before the closing brace
		v = append(v, `,"trace_id":"`...)
		v = append(v, prev.traceID...)
		r.value = append(v, `"}`...)
		r.traceID = prev.traceID
	}
}

func main() {
	var includes, to string
	var once bool
	var batch int
	flag.StringVar(&includes, "include", "", "comma-separated glob patterns")
	flag.StringVar(&to, "to", "null", "null | stdout | kafka://HOST:PORT/TOPIC")
	flag.BoolVar(&once, "once", false, "read the files to their end, ship, exit")
	flag.IntVar(&batch, "batch", 2000, "records handed to the output at once")
	flag.DurationVar(&pollInterval, "poll", pollInterval, "wait at end of file before looking again")
	var linger time.Duration
	flag.DurationVar(&linger, "linger", 200*time.Millisecond, "longest wait before a partial batch is handed over")
	flag.Parse()
	var out output = nullOut{}
	summaryTo := os.Stdout
	if to == "stdout" {
		out = stdoutOut{bufio.NewWriterSize(os.Stdout, 1<<20)}
		summaryTo = os.Stderr
	}
	if strings.HasPrefix(to, "kafka://") {
		k, err := newKafka(to)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-baseline:", err)
			os.Exit(3)
		}
		out = k
	}
	start := time.Now()
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; close(stop) }()

	jobs := make(chan work, 4*runtime.GOMAXPROCS(0))
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		go worker(jobs)
	}
	emit := make(chan chan []record, 64) // results in file-chunk order (across files: arrival order)
	done := make(chan struct{})
	go func() {
		// A batch goes out at `batch` records or `linger` after its first record, like tailship's
		// [batch] max_records / linger_ms (a following agent must not sit on a partial batch).
		pending := make([]record, 0, batch)
		last := map[streamKey]lastTrace{}
		var deadline <-chan time.Time
		flush := func() {
			if len(pending) > 0 {
				out.send(pending)
				pending = make([]record, 0, batch)
			}
			deadline = nil
		}
	emitLoop:
		for {
			select {
			case ch, ok := <-emit:
				if !ok {
					break emitLoop
				}
				recs := <-ch
				st.records.Add(int64(len(recs)))
				inherit(recs, last)
				if len(pending) == 0 && len(recs) > 0 {
					deadline = time.After(linger)
				}
				pending = append(pending, recs...)
				if len(pending) >= batch {
					flush()
				}
			case <-deadline:
				flush()
			}
		}
		flush()
		out.flush()
		close(done)
	}()

	var wg sync.WaitGroup
	type fileID struct{ dev, ino uint64 }
	var seenMu sync.Mutex
	seen := map[fileID]bool{} // files being read: a new file at a rotated path is a new file, and
	// an inode is forgotten when its reader let go, so a new file reusing it is read too
	rescan := make(chan struct{}, 1)
	scan := func() {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, pat := range strings.Split(includes, ",") {
			matches, _ := filepath.Glob(pat)
			for _, path := range matches {
				f, err := os.Open(path)
				if err != nil {
					continue
				}
				var sys *syscall.Stat_t
				fi, err := f.Stat()
				if err == nil {
					sys, _ = fi.Sys().(*syscall.Stat_t)
				}
				if sys == nil || seen[fileID{uint64(sys.Dev), sys.Ino}] {
					f.Close()
					continue
				}
				id := fileID{uint64(sys.Dev), sys.Ino}
				seen[id] = true
				wg.Add(1)
				go reader(path, f, !once, stop, rescan, jobs, emit, &wg, func() {
					seenMu.Lock()
					delete(seen, id)
					seenMu.Unlock()
				})
			}
		}
	}
	scan()
	if !once {
		tick := time.NewTicker(time.Second)
	loop:
		for {
			select {
			case <-stop:
				break loop
			case <-tick.C:
				scan()
			case <-rescan:
				scan()
			}
		}
		tick.Stop()
	}
	wg.Wait()
	close(emit)
	<-done
	summary, _ := json.Marshal(map[string]any{
		"lines": st.lines.Load(), "records": st.records.Load(), "bytes": st.bytesRead.Load(),
		"acked": st.acked.Load(), "failed": st.failed.Load(), "elapsed_s": time.Since(start).Seconds(),
	})
	fmt.Fprintln(summaryTo, string(summary))
}
