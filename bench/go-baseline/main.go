// Command go-baseline does tailship's job in Go, for the benchmark: tail container log files
// (docker json-file, CRI or plain text; split lines joined), parse the JSON payload once, find
// and normalize trace and span ids, keep app keys apart from the agent's, add kubernetes
// metadata from the kubelet file names, batch, ship to Kafka (franz-go: zstd, acks=all,
// idempotent, key = trace id, tailship's headers), stdout or null, and move per-file
// checkpoints only past acknowledged records (-data DIR). See README.md.
//
// Design: one goroutine per file reads 1 MiB chunks into one reused buffer, decodes and builds
// the chunk's records into one arena (proc.go) and hands them, in order, through a bounded
// queue to the batcher, which hands batches to the sink; acknowledgements move checkpoints in
// hand-over order (checkpoint.go). Files are followed with fsnotify, polling as the fallback.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

const chunkSize = 1 << 20

type stats struct {
	lines, records, bytesRead, acked, failed atomic.Int64
}

var st stats

var readBufs = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

type config struct {
	includes   string
	once       bool
	batch      int
	batchBytes int
	linger     time.Duration
	poll       time.Duration
	maxLine    int
	window     float64
	logMetrics bool
}

// chunkOut: a chunk's records and the checkpoint they allow once acknowledged.
type chunkOut struct {
	recs   []rec
	commit *commit
}

type agent struct {
	cfg     config
	ck      *checkpoints
	emit    chan chunkOut
	stop    chan struct{}
	rescan  chan struct{}
	watcher *fsnotify.Watcher
	wakeMu  sync.Mutex
	wakes   map[string]chan struct{} // real path -> its reader's wake-up
	watched map[string]bool
}

func main() {
	var cfg config
	var to, dataDir, memlimit string
	var ks kafkaSettings
	var ckInterval time.Duration
	flag.StringVar(&cfg.includes, "include", "", "comma-separated glob patterns")
	flag.StringVar(&to, "to", "null", "null | stdout | kafka://HOST:PORT[,HOST:PORT]/TOPIC")
	flag.BoolVar(&cfg.once, "once", false, "read the files to their end, ship, exit")
	flag.IntVar(&cfg.batch, "batch", 2000, "records handed to the output at once (tailship's batch.max_records)")
	flag.IntVar(&cfg.batchBytes, "batch-bytes", 2<<20, "bytes handed to the output at once (tailship's batch.max_bytes)")
	flag.DurationVar(&cfg.linger, "linger", 200*time.Millisecond, "longest wait before a partial batch is handed over")
	flag.DurationVar(&cfg.poll, "poll", 250*time.Millisecond, "wait at end of file before looking again when fsnotify says nothing")
	flag.IntVar(&cfg.maxLine, "max-line-bytes", 1<<20, "longer joined lines are truncated (tailship's source.max_line_bytes)")
	flag.Float64Var(&cfg.window, "inherit-window", 1.0, "seconds within which a stack-trace line inherits the ids before it")
	flag.BoolVar(&cfg.logMetrics, "log-metrics", true, "tailship's built-in log metrics (lines by namespace and level, lines with trace context)")
	flag.StringVar(&dataDir, "data", "", "checkpoint directory (none: no checkpoints)")
	flag.DurationVar(&ckInterval, "checkpoint-interval", 200*time.Millisecond, "checkpoints are persisted after acks, at most this often")
	flag.StringVar(&memlimit, "memlimit", "256MiB", "Go soft memory limit (GOMEMLIMIT), e.g. 256MiB; 0: none; ignored when GOMEMLIMIT is set")
	flag.DurationVar(&ks.linger, "kafka-linger", 5*time.Millisecond, "producer linger (tailship's Kafka linger_ms)")
	flag.IntVar(&ks.batchBytes, "kafka-batch-bytes", 1<<20, "largest record batch (tailship's Kafka max_batch_bytes)")
	flag.IntVar(&ks.level, "compression-level", 1, "zstd level (tailship's Kafka compression_level)")
	flag.IntVar(&ks.maxInflight, "max-inflight", 0, "produce requests in flight per broker; 0: franz-go's idempotent default (5); N>0 turns idempotence off")
	flag.IntVar(&ks.maxBuffered, "kafka-max-buffered-records", 100000, "records the producer buffers before Produce blocks")
	flag.IntVar(&ks.bufferBytes, "kafka-max-buffered-bytes", 64<<20, "bytes the producer buffers before Produce blocks (tailship's batch.memory_limit_bytes)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile (pprof) to this file")
	flag.Parse()
	if *cpuprofile != "" {
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	if os.Getenv("GOMEMLIMIT") == "" && memlimit != "0" {
		n, err := parseSize(memlimit)
		if err != nil {
			fatal(fmt.Errorf("-memlimit: %w", err))
		}
		debug.SetMemoryLimit(n)
	}
	var out output = nullOut{}
	summaryTo := os.Stdout
	switch {
	case to == "stdout":
		out = stdoutOut{bufio.NewWriterSize(os.Stdout, 1<<20)}
		summaryTo = os.Stderr
	case strings.HasPrefix(to, "kafka://"):
		k, err := newKafka(to, ks)
		if err != nil {
			fatal(err)
		}
		out = k
	case to != "null":
		fatal(fmt.Errorf("-to: expected null, stdout or kafka://HOST:PORT/TOPIC, got %q", to))
	}
	a := &agent{cfg: cfg, emit: make(chan chunkOut, 4), stop: make(chan struct{}),
		rescan: make(chan struct{}, 1), wakes: map[string]chan struct{}{}, watched: map[string]bool{}}
	tr := &tracker{}
	ckDone := make(chan struct{})
	ckStop := make(chan struct{})
	if dataDir != "" {
		ck, err := openCheckpoints(dataDir, ckInterval)
		if err != nil {
			fatal(fmt.Errorf("-data %s: %w", dataDir, err))
		}
		a.ck, tr.ck = ck, ck
		go ck.run(ckStop, ckDone)
	} else {
		close(ckDone)
	}
	start := time.Now()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; close(a.stop) }()

	batcherDone := make(chan struct{})
	go a.batcher(out, tr, batcherDone)

	if !cfg.once {
		a.startWatcher()
	}
	var wg sync.WaitGroup
	type fileID struct{ dev, ino uint64 }
	var seenMu sync.Mutex
	seen := map[fileID]bool{} // files being read; an inode is forgotten when its reader lets go
	scan := func() {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, pat := range strings.Split(cfg.includes, ",") {
			matches, _ := filepath.Glob(pat)
			for _, path := range matches {
				f, err := os.Open(path)
				if err != nil {
					continue
				}
				fi, err := f.Stat()
				var sys *syscall.Stat_t
				if err == nil {
					sys, _ = fi.Sys().(*syscall.Stat_t)
				}
				if sys == nil || seen[fileID{uint64(sys.Dev), sys.Ino}] || !fi.Mode().IsRegular() {
					f.Close()
					continue
				}
				id := fileID{uint64(sys.Dev), sys.Ino}
				seen[id] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					a.read(path, f, uint64(sys.Dev), sys.Ino)
					seenMu.Lock()
					delete(seen, id)
					seenMu.Unlock()
				}()
			}
		}
	}
	scan()
	if !cfg.once {
		tick := time.NewTicker(time.Second)
	loop:
		for {
			select {
			case <-a.stop:
				break loop
			case <-tick.C:
				scan()
			case <-a.rescan:
				scan()
			}
		}
		tick.Stop()
	}
	wg.Wait()
	close(a.emit)
	<-batcherDone
	out.close()
	close(ckStop)
	<-ckDone
	summary, _ := json.Marshal(map[string]any{
		"lines": st.lines.Load(), "records": st.records.Load(), "bytes": st.bytesRead.Load(),
		"acked": st.acked.Load(), "failed": st.failed.Load(), "elapsed_s": time.Since(start).Seconds(),
	})
	fmt.Fprintln(summaryTo, string(summary))
	if cfg.logMetrics {
		printLogMetrics()
	}
	if os.Getenv("GOBASE_MEMSTATS") != "" { // heap allocations per record, for the README's claim
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		recs := max(st.records.Load(), 1)
		fmt.Fprintf(os.Stderr, "go-baseline: %d heap allocations (%.2f per record), %.0f bytes allocated per record, %d GCs\n",
			ms.Mallocs, float64(ms.Mallocs)/float64(recs), float64(ms.TotalAlloc)/float64(recs), ms.NumGC)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "go-baseline:", err)
	os.Exit(3)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("expected a size like 256MiB, got %q", s)
	}
	return n * mult, nil
}

// batcher: batches close at -batch records, -batch-bytes bytes, or -linger after their first
// record (tailship's [batch] max_records, max_bytes, linger_ms); each goes to the sink whole.
func (a *agent) batcher(out output, tr *tracker, done chan<- struct{}) {
	defer close(done)
	var pending []rec
	var commits []commit
	nbytes := 0
	var deadline <-chan time.Time
	var timer *time.Timer
	flush := func() {
		if len(pending) > 0 || len(commits) > 0 {
			b := &batch{recs: pending, commits: commits}
			tr.add(b)
			out.send(b)
			pending, commits, nbytes = nil, nil, 0
		}
		deadline = nil
	}
	arm := func() {
		if deadline == nil {
			if timer == nil {
				timer = time.NewTimer(a.cfg.linger)
			} else {
				timer.Reset(a.cfg.linger)
			}
			deadline = timer.C
		}
	}
	for {
		select {
		case c, ok := <-a.emit:
			if !ok {
				flush()
				return
			}
			st.records.Add(int64(len(c.recs)))
			for _, r := range c.recs {
				if pending == nil {
					pending = make([]rec, 0, a.cfg.batch)
				}
				pending = append(pending, r)
				nbytes += len(r.value)
				arm()
				if len(pending) >= a.cfg.batch || nbytes >= a.cfg.batchBytes {
					flush()
				}
			}
			if c.commit != nil {
				commits = append(commits, *c.commit) // rides with the batch of the chunk's last record, or the next
				arm()
			}
		case <-deadline:
			deadline = nil
			flush()
		}
	}
}

// -- following files ---------------------------------------------------------------------------

func (a *agent) startWatcher() {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-baseline: fsnotify unavailable, polling:", err)
		return
	}
	a.watcher = w
	for _, pat := range strings.Split(a.cfg.includes, ",") {
		a.watch(filepath.Dir(pat))
	}
	go func() {
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
					select {
					case a.rescan <- struct{}{}:
					default:
					}
				}
				a.wakeMu.Lock()
				ch := a.wakes[ev.Name]
				a.wakeMu.Unlock()
				if ch != nil {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
}

func (a *agent) watch(path string) {
	if a.watcher == nil {
		return
	}
	a.wakeMu.Lock()
	defer a.wakeMu.Unlock()
	if a.watched[path] {
		return
	}
	if a.watcher.Add(path) == nil {
		a.watched[path] = true
	}
}

// follow registers a reader's wake-up for writes to its real file (and watches its directory
// for the file that replaces it at rotation).
func (a *agent) follow(real string, ch chan struct{}) {
	if a.watcher == nil {
		return
	}
	a.watch(filepath.Dir(real))
	a.wakeMu.Lock()
	a.wakes[real] = ch
	a.wakeMu.Unlock()
}

// unfollow removes a reader's wake-up, only if it is still its own: after a rotation the reader
// of the new file registers under the same path while the old one drains, and must keep it.
func (a *agent) unfollow(real string, ch chan struct{}) {
	if a.watcher == nil {
		return
	}
	a.wakeMu.Lock()
	if a.wakes[real] == ch {
		delete(a.wakes, real)
	}
	a.wakeMu.Unlock()
}

// read tails one file: reads chunks into one reused buffer (the tail of a chunk, an unfinished
// line, is moved to its front), decodes them into records and hands them on in order. At end of
// file, following, it checks whether the path still names the open file: after a rotation
// (rename + create) or a delete it reads the old file to its end after one more poll interval,
// emits what it holds and lets go; the rescan it asks for picks up the new file.
func (a *agent) read(path string, f *os.File, dev, ino uint64) {
	defer f.Close()
	opened, _ := f.Stat()
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		real = path
	}
	m := newFileMeta(path, real)
	p := newProc(m, a.cfg.maxLine, a.cfg.window)
	if a.cfg.logMetrics {
		p.lm = newLogMetrics()
		defer p.lm.merge()
	}
	var off int64
	key := ""
	if a.ck != nil {
		if fp, ok := fingerprint(f); ok {
			key = fmt.Sprintf("%d:%d:%s", dev, ino, fp)
			if saved, ok := a.ck.get(key); ok && saved <= opened.Size() {
				if _, err := f.Seek(saved, io.SeekStart); err == nil {
					off = saved
				}
			}
		}
	}
	wake := make(chan struct{}, 1)
	if !a.cfg.once {
		a.follow(real, wake)
		defer a.unfollow(real, wake)
	}
	bufp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bufp)
	buf := *bufp
	fill := 0
	draining := false
	var timer *time.Timer
	hand := func(safeEnd int64) {
		if a.ck != nil && key == "" { // opened before its first line was complete
			if fp, ok := fingerprint(f); ok {
				key = fmt.Sprintf("%d:%d:%s", dev, ino, fp)
			}
		}
		c := chunkOut{recs: p.recs}
		if key != "" {
			safe := safeEnd
			if h := p.heldOffset(); h >= 0 && h < safe {
				safe = h
			}
			c.commit = &commit{key: key, path: path, offset: safe}
		}
		if len(c.recs) > 0 || c.commit != nil {
			a.emit <- c
		}
		p.recs, p.arena = nil, nil
	}
	begin := func(n int) {
		p.arena = make([]byte, 0, n+n/2+64<<10)
		p.recs = make([]rec, 0, n/256+16)
	}
	finish := func() { // end of file (once, or the rotated file drained): emit what is held
		begin(fill)
		if fill > 0 {
			st.lines.Add(int64(p.lines(buf[:fill], off)))
			off += int64(fill)
			fill = 0
		}
		p.flushJoins()
		hand(off)
	}
	for {
		if fill == len(buf) { // a line longer than the buffer
			nb := make([]byte, 2*len(buf))
			copy(nb, buf)
			buf = nb
		}
		n, err := f.Read(buf[fill:])
		if n > 0 {
			st.bytesRead.Add(int64(n))
			data := buf[:fill+n]
			end := strings.LastIndexByte(b2s(data), '\n') + 1
			if end == 0 {
				fill += n
				continue
			}
			begin(end)
			st.lines.Add(int64(p.lines(data[:end], off)))
			off += int64(end)
			fill = copy(buf, data[end:])
			hand(off)
			continue
		}
		if err != nil && err != io.EOF {
			fmt.Fprintln(os.Stderr, "go-baseline:", path, err)
			return
		}
		if a.cfg.once {
			finish()
			return
		}
		if draining {
			finish()
			return
		}
		if now, err := os.Stat(path); err != nil || !os.SameFile(opened, now) {
			draining = true // one more pass to the end of the old file after a poll interval
			select {
			case a.rescan <- struct{}{}:
			default:
			}
		}
		if timer == nil {
			timer = time.NewTimer(a.cfg.poll)
		} else {
			timer.Reset(a.cfg.poll)
		}
		select {
		case <-a.stop:
			timer.Stop()
			return
		case <-wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}
