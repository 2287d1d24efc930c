package main

// Checkpoints as tailship keeps them (agent/filesource/checkpoints.py, agent/runtime.py):
// per-file offsets, keyed by device:inode:fingerprint, moved only past records the sink
// acknowledged (batches are committed in the order they were handed over, so a later batch
// acknowledged first never moves an offset past an earlier one still in flight), and persisted
// right after acknowledgements, at most once per interval (200 ms, tailship's
// checkpoint_interval_secs): a temp file written and fsynced, renamed over the old one, and the
// directory fsynced. On exit they are persisted once more.

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

const checkpointFile = "checkpoints.json"

type ckEntry struct {
	Offset  int64  `json:"offset"`
	Path    string `json:"path,omitempty"`
	Updated int64  `json:"updated,omitempty"`
}

type checkpoints struct {
	dir      string
	interval time.Duration
	mu       sync.Mutex
	entries  map[string]ckEntry
	dirty    bool
	kick     chan struct{}
	writes   atomic.Int64
}

func openCheckpoints(dir string, interval time.Duration) (*checkpoints, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &checkpoints{dir: dir, interval: interval, entries: map[string]ckEntry{}, kick: make(chan struct{}, 1)}
	raw, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err == nil {
		var d struct {
			Version int                `json:"version"`
			Files   map[string]ckEntry `json:"files"`
		}
		if json.Unmarshal(raw, &d) != nil || d.Version != 1 || d.Files == nil {
			aside := filepath.Join(dir, fmt.Sprintf("%s.corrupt-%d", checkpointFile, time.Now().Unix()))
			_ = os.Rename(filepath.Join(dir, checkpointFile), aside)
			fmt.Fprintln(os.Stderr, "go-baseline: corrupt checkpoint file set aside as", aside)
		} else {
			c.entries = d.Files
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	return c, nil
}

func (c *checkpoints) get(key string) (int64, bool) {
	if c == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e.Offset, ok
}

// put: the sink acknowledged file `key` up to `offset`.
func (c *checkpoints) put(key string, offset int64, path string) {
	c.entries[key] = ckEntry{offset, path, time.Now().Unix()}
	c.dirty = true
}

// run persists after acknowledgements, at most once per interval, until stop; then once more.
func (c *checkpoints) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-c.kick:
		case <-stop:
			c.persist()
			return
		}
		c.persist()
		select {
		case <-time.After(c.interval):
		case <-stop:
			c.persist()
			return
		}
	}
}

func (c *checkpoints) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpoints) persist() {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return
	}
	data, _ := json.Marshal(map[string]any{"version": 1, "files": c.entries})
	c.dirty = false
	c.mu.Unlock()
	if err := writeDurable(c.dir, checkpointFile, data); err != nil {
		fmt.Fprintln(os.Stderr, "go-baseline: cannot write checkpoints:", err)
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		return
	}
	c.writes.Add(1)
}

// writeDurable: temp file written and fsynced, renamed over `name`, directory fsynced.
func writeDurable(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fingerprint: a hash of the file's first line (or first 256 bytes), as tailship's identity
// (it uses blake2b-64; FNV-64a here: same size, the standard library's).
func fingerprint(f *os.File) (string, bool) {
	var head [256]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return "", false
	}
	b := head[:n]
	for i, c := range b {
		if c == '\n' {
			b = b[:i+1]
			break
		}
	}
	if len(b) == 0 {
		return "", false
	}
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64()), true
}

// -- acknowledgement tracking ------------------------------------------------------------------

// commit: a file's safe offset (past its last complete record, not past a held join) once the
// records before it are acknowledged.
type commit struct {
	key    string
	path   string
	offset int64
}

// batch: records handed to the sink at once, and the commits they carry.
type batch struct {
	recs    []rec
	commits []commit
	pending atomic.Int64
	failed  atomic.Bool
	done    bool
	tr      *tracker
}

// tracker commits batches in hand-over order.
type tracker struct {
	mu    sync.Mutex
	queue []*batch
	ck    *checkpoints
}

func (t *tracker) add(b *batch) {
	b.tr = t
	b.pending.Store(int64(len(b.recs)) + 1) // +1: released when the hand-over is complete
	t.mu.Lock()
	t.queue = append(t.queue, b)
	t.mu.Unlock()
}

// ack: n records of b were acknowledged (or failed).
func (b *batch) ack(n int64) {
	if b.pending.Add(-n) != 0 {
		return
	}
	t := b.tr
	t.mu.Lock()
	b.done = true
	moved := false
	for len(t.queue) > 0 && t.queue[0].done {
		head := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		if head.failed.Load() {
			// records lost: no checkpoint moves past them from now on
			t.ck = nil
		}
		if t.ck != nil && len(head.commits) > 0 {
			t.ck.mu.Lock()
			for _, c := range head.commits {
				t.ck.put(c.key, c.offset, c.path)
			}
			t.ck.mu.Unlock()
			moved = true
		}
		head.recs = nil
	}
	ck := t.ck
	t.mu.Unlock()
	if moved && ck != nil {
		ck.signal()
	}
}
