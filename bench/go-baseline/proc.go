package main

// One file's processing, as tailship's chain does it (pipelines/formats.py, pipelines/chain.py):
// container envelopes decoded (docker json-file, CRI, plain text), split lines joined per
// stream, JSON payloads parsed once, trace and span ids found, agent keys kept apart from the
// app's, and the record encoded: the payload's own bytes with the agent's fields spliced in
// before its closing brace, or rebuilt member by member when the payload needs changes (an
// invalid id to set aside or normalize in place, an app key that collides with an agent key).
// Every record of a chunk is written into one arena: no allocation per record.

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

const (
	fTruncated   = 1
	fMalformed   = 2
	fPartial     = 4
	fInvalidUTF8 = 8
	fInherited   = 16
)

var flagNames = [...]string{"truncated", "malformed", "partial", "invalid_utf8", "trace_inherited"}

const (
	stdout = iota
	stderr
	noStream
)

var streamJSON = [...]string{`"stream":"stdout",`, `"stream":"stderr",`, ``}

// rec: one encoded record and its ids (the Kafka key and headers point into it).
type rec struct {
	value      []byte
	path       []byte // the file's path (Kafka header), shared by its records
	tid        [32]byte
	sid        [16]byte
	hasT, hasS bool
}

type join struct {
	active bool
	off    int64
	ts     []byte
	buf    []byte
	flags  int
}

type lastIDs struct {
	set        bool
	t          [32]byte
	s          [16]byte
	hasT, hasS bool
	ts         []byte
	epoch      float64 // of ts, parsed once when a continuation line needs it
	epochOK    int8    // 0 not parsed, 1 ok, -1 invalid
}

type proc struct {
	meta     *fileMeta
	format   byte // 0 undetected, 'd' docker, 'c' cri, 't' text
	maxLine  int
	window   float64
	p        fastjson.Parser
	pEnv     fastjson.Parser // docker envelopes the fast path does not take
	scratch  []byte          // a docker payload, unescaped
	scratch2 []byte          // a line with invalid UTF-8 replaced
	joins    [3]join
	last     [3]lastIDs
	nowTS    []byte
	cand     [nCand]*fastjson.Value
	id       ids
	arena    []byte
	recs     []rec
	lm       *logMetrics // nil: log metrics off
	nbytes   int64
}

func newProc(m *fileMeta, maxLine int, window float64) *proc {
	return &proc{meta: m, maxLine: maxLine, window: window}
}

// lines decodes the complete lines of `data` (each ending in '\n'), which start at file offset
// `off`, appending records to p.recs. Returns the number of lines.
func (p *proc) lines(data []byte, off int64) int {
	p.nowTS = time.Now().UTC().AppendFormat(p.nowTS[:0], "2006-01-02T15:04:05.000000Z07:00")
	n := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			i = len(data) // the unterminated last line (flushed at end of file)
		}
		line := data[:i]
		n++
		p.line(line, off)
		off += int64(i) + 1
		if i == len(data) {
			break
		}
		data = data[i+1:]
	}
	return n
}

func (p *proc) line(line []byte, off int64) {
	if p.format == 0 {
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		p.format = detect(line)
	}
	switch p.format {
	case 'd':
		p.docker(line, off)
	case 'c':
		p.cri(line, off)
	default:
		if len(line) == 0 {
			return
		}
		flags := 0
		if !utf8.Valid(line) {
			line, flags = p.replaceInvalid(line), fInvalidUTF8
		}
		if line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		p.emitWhole(off, noStream, p.nowTS, line, flags)
	}
}

func detect(line []byte) byte {
	if bytes.HasPrefix(line, []byte(`{"log":`)) {
		return 'd'
	}
	if criRe.Match(line) {
		return 'c'
	}
	return 't'
}

// replaceInvalid: the line with each invalid UTF-8 byte replaced by U+FFFD.
func (p *proc) replaceInvalid(b []byte) []byte {
	out := p.scratch2[:0]
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	p.scratch2 = out
	return out
}

func (p *proc) docker(line []byte, off int64) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	msg, st, ts, ok := p.envelope(line)
	flags := 0
	if !ok {
		src := line
		if !utf8.Valid(line) {
			src, flags = p.replaceInvalid(line), fInvalidUTF8
		}
		msg, st, ts, ok = p.envelopeSlow(src)
		if !ok {
			p.emitWhole(off, noStream, p.nowTS, src, flags|fMalformed)
			return
		}
	} else if !utf8.Valid(msg) {
		// invalid bytes in the raw line: tailship decodes it with replacement, then the envelope
		msg, flags = p.replaceInvalid(msg), fInvalidUTF8
	}
	last := len(msg) > 0 && msg[len(msg)-1] == '\n'
	if last {
		msg = msg[:len(msg)-1]
	}
	p.piece(st, off, ts, msg, flags, last)
}

// envelope: the fast path for what dockerd writes, `{"log":"...","stream":"...","time":"..."}`;
// `log` is unescaped into p.scratch. Anything else goes to envelopeSlow.
func (p *proc) envelope(line []byte) (msg []byte, st int, ts []byte, ok bool) {
	const head = `{"log":"`
	if !bytes.HasPrefix(line, []byte(head)) {
		return nil, 0, nil, false
	}
	msg, rest, ok := unescape(p.scratch[:0], line[len(head):])
	p.scratch = msg[:0]
	if !ok {
		return nil, 0, nil, false
	}
	switch {
	case bytes.HasPrefix(rest, []byte(`,"stream":"stdout","time":"`)):
		st = stdout
	case bytes.HasPrefix(rest, []byte(`,"stream":"stderr","time":"`)):
		st = stderr
	default:
		return nil, 0, nil, false
	}
	rest = rest[len(`,"stream":"stdout","time":"`):]
	q := bytes.IndexByte(rest, '"')
	if q < 0 || bytes.IndexByte(rest[:q], '\\') >= 0 {
		return nil, 0, nil, false
	}
	ts = rest[:q]
	if len(bytes.TrimRight(rest[q+1:], " \t\r\n")) != 1 || rest[q+1] != '}' {
		return nil, 0, nil, false
	}
	return msg, st, ts, true
}

func (p *proc) envelopeSlow(line []byte) (msg []byte, st int, ts []byte, ok bool) {
	v, err := p.pEnv.ParseBytes(line)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, 0, nil, false
	}
	lv, sv, tv := v.Get("log"), v.Get("stream"), v.Get("time")
	if lv == nil || tv == nil || sv == nil || lv.Type() != fastjson.TypeString ||
		tv.Type() != fastjson.TypeString || sv.Type() != fastjson.TypeString {
		return nil, 0, nil, false
	}
	switch string(sv.GetStringBytes()) {
	case "stdout":
		st = stdout
	case "stderr":
		st = stderr
	default:
		return nil, 0, nil, false
	}
	p.scratch = append(p.scratch[:0], lv.GetStringBytes()...)
	return p.scratch, st, tv.GetStringBytes(), true
}

func (p *proc) cri(line []byte, off int64) {
	if len(line) == 0 {
		return
	}
	flags := 0
	if !utf8.Valid(line) {
		line, flags = p.replaceInvalid(line), fInvalidUTF8
	}
	s1 := bytes.IndexByte(line, ' ')
	var ts, stream, tag, msg []byte
	if s1 >= 0 {
		ts = line[:s1]
		r := line[s1+1:]
		if s2 := bytes.IndexByte(r, ' '); s2 >= 0 {
			stream, r = r[:s2], r[s2+1:]
			if s3 := bytes.IndexByte(r, ' '); s3 >= 0 {
				tag, msg = r[:s3], r[s3+1:]
			} else {
				tag = r
			}
		}
	}
	st := -1
	switch string(stream) {
	case "stdout":
		st = stdout
	case "stderr":
		st = stderr
	}
	if st < 0 || len(tag) == 0 || (tag[0] != 'P' && tag[0] != 'F') || len(ts) < 20 || ts[4] != '-' {
		p.emitWhole(off, noStream, p.nowTS, line, flags|fMalformed)
		return
	}
	p.piece(st, off, ts, msg, flags, tag[0] == 'F')
}

// cut: at most n bytes of b, not splitting a UTF-8 sequence.
func cut(b []byte, n int) []byte {
	if n <= 0 {
		return b[:0]
	}
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// piece: one piece of a possibly split record; the record is emitted with its last piece.
func (p *proc) piece(st int, off int64, ts, text []byte, flags int, last bool) {
	j := &p.joins[st]
	if !j.active {
		if last {
			p.emitWhole(off, st, ts, text, flags)
			return
		}
		j.active, j.off, j.flags = true, off, flags
		j.ts = append(j.ts[:0], ts...)
		j.buf = j.buf[:0]
	}
	j.flags |= flags
	if room := p.maxLine - len(j.buf); len(text) > room {
		text = cut(text, room)
		j.flags |= fTruncated
	}
	j.buf = append(j.buf, text...)
	if last {
		j.active = false
		p.emit(j.off, st, j.ts, j.buf, j.flags)
	}
}

func (p *proc) emitWhole(off int64, st int, ts, text []byte, flags int) {
	if len(text) > p.maxLine {
		text = cut(text, p.maxLine)
		flags |= fTruncated
	}
	p.emit(off, st, ts, text, flags)
}

// flushJoins emits unfinished joins, flagged partial (file over).
func (p *proc) flushJoins() {
	for {
		best := -1
		for i := range p.joins {
			if p.joins[i].active && (best < 0 || p.joins[i].off < p.joins[best].off) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		j := &p.joins[best]
		j.active = false
		p.emit(j.off, best, j.ts, j.buf, j.flags|fPartial)
	}
}

// heldOffset: where the oldest unfinished join starts, or -1.
func (p *proc) heldOffset() int64 {
	h := int64(-1)
	for i := range p.joins {
		if p.joins[i].active && (h < 0 || p.joins[i].off < h) {
			h = p.joins[i].off
		}
	}
	return h
}

// -- records -----------------------------------------------------------------------------------

func (p *proc) emit(off int64, st int, ts, payload []byte, flags int) {
	if len(payload) > 1 && payload[0] == '{' {
		if v, err := p.p.ParseBytes(payload); err == nil && v.Type() == fastjson.TypeObject {
			p.object(v, payload, off, st, ts, flags)
			return
		}
	}
	p.text(off, st, ts, payload, flags)
}

// agent keys an app field may collide with (tailship's AGENT_KEYS) and the keys that tell
// where a renamed or set-aside value goes
const (
	kTimestamp = 1 << iota
	kStream
	kKubernetes
	kLog
	kHost
	kTimestampApp
	kStreamApp
	kKubernetesApp
	kLogApp
	kHostApp
	kTraceOriginal
	kSpanOriginal
)

var agentKeyNames = [...]string{"@timestamp", "stream", "kubernetes", "log", "host"}

func agentKey(k []byte) int {
	switch string(k) {
	case "@timestamp":
		return kTimestamp
	case "stream":
		return kStream
	case "kubernetes":
		return kKubernetes
	case "log":
		return kLog
	case "host":
		return kHost
	case "@timestamp_app":
		return kTimestampApp
	case "stream_app":
		return kStreamApp
	case "kubernetes_app":
		return kKubernetesApp
	case "log_app":
		return kLogApp
	case "host_app":
		return kHostApp
	case "trace_id_original":
		return kTraceOriginal
	case "span_id_original":
		return kSpanOriginal
	}
	return 0
}

func (p *proc) startRec() int { return len(p.arena) }

func (p *proc) endRec(start int) {
	r := rec{value: p.arena[start:len(p.arena):len(p.arena)], path: p.meta.pathHeader, hasT: p.id.hasT, hasS: p.id.hasS}
	if p.id.hasT {
		r.tid = p.id.t
	}
	if p.id.hasS {
		copy(r.sid[:], p.id.s[:16])
	}
	p.recs = append(p.recs, r)
	p.nbytes += int64(len(r.value))
}

func (p *proc) object(v *fastjson.Value, payload []byte, off int64, st int, ts []byte, flags int) {
	o, _ := v.Object()
	for i := range p.cand {
		p.cand[i] = nil
	}
	anyCand, keys, objects := false, 0, 0
	var level, severity, lvl, appLog, appK8s *fastjson.Value
	o.Visit(func(k []byte, x *fastjson.Value) {
		if c := candidate(k); c >= 0 {
			p.cand[c], anyCand = x, true
			return
		}
		switch string(k) {
		case "level":
			level = x
			return
		case "severity":
			severity = x
			return
		case "lvl":
			lvl = x
			return
		}
		if a := agentKey(k); a != 0 {
			keys |= a
			if x.Type() == fastjson.TypeObject {
				objects |= a
			} else {
				objects &^= a
			}
			if a == kLog {
				appLog = x
			} else if a == kKubernetes {
				appK8s = x
			}
		}
	})
	ta, sa := extract(&p.cand, anyCand, &p.id)
	if p.lm != nil {
		var logLevel *fastjson.Value
		if objects&kLog != 0 {
			logLevel = appLog.Get("level")
		}
		p.lm.count(p.namespace(objects&kKubernetes != 0, appK8s), p.lm.levelOf(level, severity, lvl, logLevel), p.id.hasT)
	}
	p.remember(st, ts)
	start := p.startRec()
	if ta == rewrite || sa == rewrite || keys&(kTimestamp|kStream|kKubernetes|kLog|kHost) != 0 {
		p.rebuild(o, ta, sa, keys, objects, off, st, ts, flags)
		p.endRec(start)
		return
	}
	end := len(bytes.TrimRight(payload, " \t\r\n")) - 1 // the closing brace
	a := append(p.arena, payload[:end]...)
	if o.Len() > 0 {
		a = append(a, ',')
	}
	if ta == appendID {
		a = appendIDMember(a, "trace_id", p.id.t[:32])
	}
	if sa == appendID {
		a = appendIDMember(a, "span_id", p.id.s[:16])
	}
	p.arena = p.agentFields(a, off, st, ts, flags)
	p.endRec(start)
}

// agentFields: `"@timestamp":..,"stream":..,"log":{..},"host":{..},"kubernetes":{..}}`.
func (p *proc) agentFields(a []byte, off int64, st int, ts []byte, flags int) []byte {
	a = append(a, `"@timestamp":`...)
	a = appendJSONString(a, ts)
	a = append(a, ',')
	a = append(a, streamJSON[st]...)
	a = append(a, p.meta.logHead...) // "log":{"file":{"path":"..."},"offset":
	a = appendLogRest(a, off, flags)
	a = append(a, p.meta.tail...) // ,"host":{...},"kubernetes":{...}}
	return a
}

func appendLogRest(a []byte, off int64, flags int) []byte {
	a = appendInt(a, off)
	if flags != 0 {
		a = appendFlags(a, flags)
	}
	return append(a, '}')
}

func appendFlags(a []byte, flags int) []byte {
	a = append(a, `,"flags":[`...)
	first := true
	for bit, name := range flagNames {
		if flags>>bit&1 == 1 {
			if !first {
				a = append(a, ',')
			}
			first = false
			a = append(a, '"')
			a = append(a, name...)
			a = append(a, '"')
		}
	}
	return append(a, ']')
}

func appendInt(a []byte, n int64) []byte {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return append(a, '0')
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return append(a, b[i:]...)
}

// remember the ids of a record that is not a continuation line (stack lines inherit them).
func (p *proc) remember(st int, ts []byte) {
	l := &p.last[st]
	l.set, l.hasT, l.hasS = true, p.id.hasT, p.id.hasS
	if p.id.hasT {
		l.t = p.id.t
	}
	if p.id.hasS {
		copy(l.s[:], p.id.s[:16])
	}
	if (p.id.hasT || p.id.hasS) && !bytes.Equal(l.ts, ts) {
		l.ts = append(l.ts[:0], ts...) // only needed while it carries ids
		l.epochOK = 0
	}
}

// rebuild: the payload re-encoded member by member with what tailship's dict path changes
// (trace.extract_fields' settle and set_aside, chain._merge_agent_keys), then the agent's
// fields with the app's objects merged in (the agent's keys win inside).
func (p *proc) rebuild(o *fastjson.Object, ta, sa, keys, objects int, off int64, st int, ts []byte, flags int) {
	a := append(p.arena, '{')
	renamed := keys&(kTimestamp|kStream) | keys&(kKubernetes|kLog|kHost)&^objects
	var appObj [5]*fastjson.Value // kubernetes, log, host objects to merge
	var oldT, oldS *fastjson.Value
	member := func(k []byte, x *fastjson.Value) {
		a = appendJSONString(a, k)
		a = append(a, ':')
		a = x.MarshalTo(a)
		a = append(a, ',')
	}
	o.Visit(func(k []byte, x *fastjson.Value) {
		switch string(k) {
		case "trace_id":
			if ta == rewrite {
				if p.id.srcT != cTraceID {
					oldT = x
				}
				if p.id.hasT {
					a = appendIDMember(a, "trace_id", p.id.t[:32])
				}
				return
			}
		case "span_id":
			if sa == rewrite {
				if p.id.srcS != cSpanID {
					oldS = x
				}
				if p.id.hasS {
					a = appendIDMember(a, "span_id", p.id.s[:16])
				}
				return
			}
		}
		if ak := agentKey(k); ak != 0 {
			switch {
			case ak <= kHost:
				if objects&ak != 0 && ak >= kKubernetes {
					appObj[bitIndex(ak)] = x
				}
				return // renamed ones are appended below
			case ak <= kHostApp && renamed&(ak>>5) != 0:
				return // overwritten by the renamed value, as the dict assignment does
			}
		}
		member(k, x)
	})
	if ta == appendID {
		a = appendIDMember(a, "trace_id", p.id.t[:32])
	}
	if sa == appendID {
		a = appendIDMember(a, "span_id", p.id.s[:16])
	}
	// an invalid id set aside: to <key>_original, else to log.original.<key> when the app's log
	// is absent or an object without "original"; else dropped (trace.set_aside)
	var orig []byte
	logOK := keys&kLog == 0 || (appObj[3] != nil && appObj[3].Get("original") == nil)
	setAside := func(old *fastjson.Value, taken int, canon string) {
		if old == nil || old.Type() == fastjson.TypeNull ||
			(old.Type() == fastjson.TypeString && len(old.GetStringBytes()) == 0) {
			return
		}
		if keys&taken == 0 {
			member([]byte(canon+"_original"), old)
		} else if logOK {
			orig = appendJSONString(orig, []byte(canon))
			orig = append(orig, ':')
			orig = old.MarshalTo(orig)
			orig = append(orig, ',')
		}
	}
	setAside(oldT, kTraceOriginal, "trace_id")
	setAside(oldS, kSpanOriginal, "span_id")
	for i, name := range agentKeyNames {
		if renamed&(1<<i) != 0 {
			// the value as the app wrote it, under <key>_app
			var x *fastjson.Value
			o.Visit(func(k []byte, v *fastjson.Value) {
				if string(k) == name {
					x = v
				}
			})
			if x != nil {
				a = append(a, '"')
				a = append(a, name...)
				a = append(a, `_app":`...)
				a = x.MarshalTo(a)
				a = append(a, ',')
			}
		}
	}
	a = append(a, `"@timestamp":`...)
	a = appendJSONString(a, ts)
	a = append(a, ',')
	a = append(a, streamJSON[st]...)
	m := p.meta
	// log: the app's members the agent does not set, then the agent's
	a = append(a, `"log":{`...)
	if lg := appObj[3]; lg != nil {
		a = mergeMembers(a, lg, func(k string) bool { return k == "file" || k == "offset" || (flags != 0 && k == "flags") })
	}
	if len(orig) > 0 {
		a = append(a, `"original":{`...)
		a = append(a, orig[:len(orig)-1]...)
		a = append(a, `},`...)
	}
	a = append(a, `"file":{"path":`...)
	a = append(a, m.pathJSON...)
	a = append(a, `},"offset":`...)
	a = appendLogRest(a, off, flags)
	if m.host != "" || appObj[4] != nil {
		a = append(a, `,"host":{`...)
		if h := appObj[4]; h != nil {
			a = mergeMembers(a, h, func(k string) bool { return m.host != "" && k == "name" })
		}
		if m.host != "" {
			a = append(a, m.hostMembers...)
		} else if a[len(a)-1] == ',' {
			a = a[:len(a)-1]
		}
		a = append(a, '}')
	}
	if len(m.k8sMembers) > 0 || appObj[2] != nil {
		a = append(a, `,"kubernetes":{`...)
		if k := appObj[2]; k != nil {
			a = mergeMembers(a, k, func(key string) bool { return m.k8sHas(key) })
		}
		if len(m.k8sMembers) > 0 {
			a = append(a, m.k8sMembers...)
		} else if a[len(a)-1] == ',' {
			a = a[:len(a)-1]
		}
		a = append(a, '}')
	}
	p.arena = append(a, '}')
}

func bitIndex(b int) int {
	i := 0
	for b > 1 {
		b >>= 1
		i++
	}
	return i
}

// mergeMembers: the members of object v whose key the agent does not set, each followed by ','.
func mergeMembers(a []byte, v *fastjson.Value, agentSets func(string) bool) []byte {
	o, _ := v.Object()
	o.Visit(func(k []byte, x *fastjson.Value) {
		if agentSets(string(k)) {
			return
		}
		a = appendJSONString(a, k)
		a = append(a, ':')
		a = x.MarshalTo(a)
		a = append(a, ',')
	})
	return a
}

// text: a plain-text (or non-object) payload: `{"message": ...}` with the ids found in it; a
// stack-trace line without ids of its own inherits those of the record before it in the same
// stream, written at most `window` seconds earlier.
func (p *proc) text(off int64, st int, ts, payload []byte, flags int) {
	msg := b2s(payload)
	textIDs(msg, &p.id)
	if !p.id.hasT && !p.id.hasS && isContinuation(msg) {
		if p.inherit(st, ts) {
			flags |= fInherited
		}
	} else {
		p.remember(st, ts)
	}
	if p.lm != nil {
		p.lm.count(p.namespace(false, nil), "unknown", p.id.hasT)
	}
	start := p.startRec()
	a := append(p.arena, `{"message":`...)
	a = appendJSONString(a, payload)
	a = append(a, ',')
	if p.id.hasT {
		a = appendIDMember(a, "trace_id", p.id.t[:32])
	}
	if p.id.hasS {
		a = appendIDMember(a, "span_id", p.id.s[:16])
	}
	p.arena = p.agentFields(a, off, st, ts, flags)
	p.endRec(start)
}

func (p *proc) inherit(st int, ts []byte) bool {
	l := &p.last[st]
	if !l.set || (!l.hasT && !l.hasS) {
		return false
	}
	if l.epochOK == 0 {
		l.epochOK = -1
		if e, ok := epochOf(l.ts); ok {
			l.epoch, l.epochOK = e, 1
		}
	}
	t1, ok := epochOf(ts)
	if l.epochOK < 0 || !ok || t1-l.epoch < 0 || t1-l.epoch > p.window {
		return false
	}
	p.id.hasT, p.id.hasS = l.hasT, l.hasS
	p.id.t = l.t
	copy(p.id.s[:16], l.s[:])
	return true
}

// epochOf: seconds since the epoch of an RFC 3339 timestamp, to the microsecond (as tailship).
func epochOf(ts []byte) (float64, bool) {
	t, err := time.Parse(time.RFC3339Nano, b2s(ts))
	if err != nil {
		return 0, false
	}
	t = t.Truncate(time.Microsecond)
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9, true
}

// namespace: the label of the record's kubernetes.namespace (the file's, else the app's own).
func (p *proc) namespace(appObj bool, appK8s *fastjson.Value) string {
	if p.meta.hasNS || !appObj {
		return p.meta.ns
	}
	v := appK8s.Get("namespace")
	if v == nil {
		return ""
	}
	if v.Type() == fastjson.TypeString {
		return bound(string(v.GetStringBytes()))
	}
	switch v.Type() {
	case fastjson.TypeTrue:
		return "true"
	case fastjson.TypeFalse:
		return "false"
	case fastjson.TypeNumber:
		return bound(v.String())
	}
	return ""
}

// appendIDMember: `"<name>":"<id>",` (ids are hex: nothing to escape).
func appendIDMember(a []byte, name string, id []byte) []byte {
	a = append(a, '"')
	a = append(a, name...)
	a = append(a, `":"`...)
	a = append(a, id...)
	return append(a, `",`...)
}
