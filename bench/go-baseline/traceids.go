package main

// Trace and span ids in a parsed JSON object, with tailship's conventions, priority and
// normalization (pipelines/trace.py): the first VALID source wins, separately for the trace id
// and the span id; ids are lowercase hex, 64-bit trace ids left-padded to 32 digits, all-zero or
// malformed ids never attached. The object is looked at in one pass (`scan` in record.go fills
// a table of the candidate keys it carries); the getters below run only for present keys.

import (
	"strings"

	"github.com/valyala/fastjson"
)

// Candidate keys, in the order of the priority tables below.
const (
	cTraceID  = iota // trace_id
	cTraceId         // traceId
	cTraceID2        // traceID
	cTraceIdP        // TraceId
	cTraceDot        // trace.id
	cTrace           // {"trace": {"id"}}
	cTraceparent
	cB3TraceID  // X-B3-TraceId
	cB3TraceIDl // x-b3-traceid
	cB3
	cGcpTrace  // logging.googleapis.com/trace
	cDDTrace   // dd.trace_id
	cDD        // {"dd": {"trace_id", "span_id"}}
	cXAmzn     // X-Amzn-Trace-Id
	cXAmznl    // x-amzn-trace-id
	cAwsXray   // AWS-XRAY-TRACE-ID
	cXrayTrace // xray_trace_id
	cSpanID    // span_id
	cSpanId    // spanId
	cSpanID2   // spanID
	cSpanIdP   // SpanId
	cSpanDot   // span.id
	cSpan      // {"span": {"id"}}
	cB3SpanID  // X-B3-SpanId
	cB3SpanIDl // x-b3-spanid
	cGcpSpan   // logging.googleapis.com/spanId
	cDDSpan    // dd.span_id
	nCand
)

// candidate: the index of a trace/span key, or -1.
func candidate(k []byte) int {
	switch string(k) {
	case "trace_id":
		return cTraceID
	case "traceId":
		return cTraceId
	case "traceID":
		return cTraceID2
	case "TraceId":
		return cTraceIdP
	case "trace.id":
		return cTraceDot
	case "trace":
		return cTrace
	case "traceparent":
		return cTraceparent
	case "X-B3-TraceId":
		return cB3TraceID
	case "x-b3-traceid":
		return cB3TraceIDl
	case "b3":
		return cB3
	case "logging.googleapis.com/trace":
		return cGcpTrace
	case "dd.trace_id":
		return cDDTrace
	case "dd":
		return cDD
	case "X-Amzn-Trace-Id":
		return cXAmzn
	case "x-amzn-trace-id":
		return cXAmznl
	case "AWS-XRAY-TRACE-ID":
		return cAwsXray
	case "xray_trace_id":
		return cXrayTrace
	case "span_id":
		return cSpanID
	case "spanId":
		return cSpanId
	case "spanID":
		return cSpanID2
	case "SpanId":
		return cSpanIdP
	case "span.id":
		return cSpanDot
	case "span":
		return cSpan
	case "X-B3-SpanId":
		return cB3SpanID
	case "x-b3-spanid":
		return cB3SpanIDl
	case "logging.googleapis.com/spanId":
		return cGcpSpan
	case "dd.span_id":
		return cDDSpan
	}
	return -1
}

type ids struct {
	t, s    [32]byte // s uses 16
	hasT    bool
	hasS    bool
	srcT    int // the candidate the trace id came from, -1: none
	srcS    int
	scratch [64]byte
}

type getter func(v *fastjson.Value, out []byte, sc []byte) bool

var traceTable = [...]struct {
	c   int
	get getter
}{
	{cTraceID, normTraceV}, {cTraceId, normTraceV}, {cTraceID2, normTraceV}, {cTraceIdP, normTraceV},
	{cTraceDot, normTraceV}, {cTrace, nested("id", normTraceV)}, {cTraceparent, tpTraceV},
	{cB3TraceID, hexTraceV}, {cB3TraceIDl, hexTraceV}, {cB3, b3TraceV}, {cGcpTrace, gcpTraceV},
	{cDDTrace, ddTraceV}, {cDD, nested("trace_id", ddTraceV)}, {cXAmzn, xrayTraceV},
	{cXAmznl, xrayTraceV}, {cAwsXray, xrayTraceV}, {cXrayTrace, xrayTraceV},
}

var spanTable = [...]struct {
	c   int
	get getter
}{
	{cSpanID, normSpanV}, {cSpanId, normSpanV}, {cSpanID2, normSpanV}, {cSpanIdP, normSpanV},
	{cSpanDot, normSpanV}, {cSpan, nested("id", normSpanV)}, {cTraceparent, tpSpanV},
	{cB3SpanID, hexSpanV}, {cB3SpanIDl, hexSpanV}, {cB3, b3SpanV}, {cGcpSpan, normSpanV},
	{cDDSpan, ddSpanV}, {cDD, nested("span_id", ddSpanV)}, {cXAmzn, xraySpanV}, {cXAmznl, xraySpanV},
}

// -- normalizers on raw strings ----------------------------------------------------------------

func hexVal(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// lowerHex copies s (hex digits only) lowercased to out; false if s is not all hex or all zero.
func lowerHex(s string, out []byte) bool {
	nz := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !hexVal(c) {
			return false
		}
		if c >= 'A' && c <= 'F' {
			c += 'a' - 'A'
		}
		if c != '0' {
			nz = true
		}
		out[i] = c
	}
	return nz
}

func hexTrace(s string, out []byte) bool {
	switch len(s) {
	case 32:
		return lowerHex(s, out)
	case 16:
		copy(out, "0000000000000000")
		return lowerHex(s, out[16:])
	}
	return false
}

func hexSpan(s string, out []byte) bool { return len(s) == 16 && lowerHex(s, out) }

func xrayID(s string, out []byte) bool {
	if len(s) != 35 || s[0] != '1' || s[1] != '-' || s[10] != '-' {
		return false
	}
	a, b := lowerHex(s[2:10], out), lowerHex(s[11:], out[8:])
	if !(allHex(s[2:10]) && allHex(s[11:])) {
		return false
	}
	return a || b
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !hexVal(s[i]) {
			return false
		}
	}
	return true
}

const max64Digits = 20

// decimal: a 64-bit unsigned id written in ASCII digits, as `width` hex digits.
func decimal(s string, width int, out []byte) bool {
	if len(s) == 0 || len(s) > max64Digits {
		return false
	}
	var d uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		n := d*10 + uint64(c-'0')
		if d > (1<<64-1)/10 || n < d*10 {
			return false // over 2**64-1
		}
		d = n
	}
	if d == 0 {
		return false
	}
	for i := width - 1; i >= 0; i-- {
		out[i] = hexDigits[d&15]
		d >>= 4
	}
	return true
}

const hexDigits = "0123456789abcdef"

func normTrace(s string, out []byte) bool {
	switch len(s) {
	case 32, 16:
		return hexTrace(s, out)
	case 35:
		return xrayID(s, out)
	}
	return decimal(s, 32, out)
}

func normSpan(s string, out []byte) bool {
	if len(s) == 16 {
		return hexSpan(s, out)
	}
	return decimal(s, 16, out)
}

// traceparent: W3C `<ver>-<32 hex>-<16 hex>-<2 hex>[-...]`; version ff, extra fields on 00 and
// zero ids make the whole header invalid.
func traceparent(s string, tr, sp []byte) bool {
	s = strings.TrimSpace(s)
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if !allHex(s[:2]) || !allHex(s[3:35]) || !allHex(s[36:52]) || !allHex(s[53:55]) {
		return false
	}
	if len(s) > 55 && s[55] != '-' {
		return false
	}
	if strings.IndexByte(s[55:], '\n') >= 0 {
		return false
	}
	ver := strings.ToLower(s[:2])
	if ver == "ff" || (ver == "00" && len(s) > 55) {
		return false
	}
	return lowerHex(s[3:35], tr) && lowerHex(s[36:52], sp)
}

func b3Parts(s string) (string, string, bool) {
	a, rest, ok := strings.Cut(s, "-")
	if !ok {
		return "", "", false
	}
	b, _, _ := strings.Cut(rest, "-")
	return a, b, true
}

func xrayField(s, name string) (string, bool) {
	found, val := false, ""
	for part := range strings.SplitSeq(s, ";") {
		k, v, _ := strings.Cut(part, "=")
		if strings.ToLower(strings.TrimSpace(k)) == name {
			found, val = true, strings.TrimSpace(v) // the last one wins, like a dict
		}
	}
	return val, found
}

// -- getters on JSON values --------------------------------------------------------------------

// str: the value as a string (no copy: fastjson's buffer), or false.
func str(v *fastjson.Value) (string, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return "", false
	}
	return b2s(v.GetStringBytes()), true
}

// intLit: the raw text of a JSON number that is a non-negative integer literal, or false.
func intLit(v *fastjson.Value, sc []byte) (string, bool) {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return "", false
	}
	raw := v.MarshalTo(sc[:0])
	for _, c := range raw {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return b2s(raw), true
}

func normTraceV(v *fastjson.Value, out, sc []byte) bool {
	if s, ok := str(v); ok {
		return normTrace(s, out)
	}
	if s, ok := intLit(v, sc); ok {
		return decimal(s, 32, out)
	}
	return false
}

func normSpanV(v *fastjson.Value, out, sc []byte) bool {
	if s, ok := str(v); ok {
		return normSpan(s, out)
	}
	if s, ok := intLit(v, sc); ok {
		return decimal(s, 16, out)
	}
	return false
}

func hexTraceV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	return ok && hexTrace(s, out)
}

func hexSpanV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	return ok && hexSpan(s, out)
}

func tpTraceV(v *fastjson.Value, out, sc []byte) bool {
	s, ok := str(v)
	return ok && traceparent(s, out, sc[:16])
}

func tpSpanV(v *fastjson.Value, out, sc []byte) bool {
	s, ok := str(v)
	return ok && traceparent(s, sc[:32], out)
}

func b3TraceV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	if !ok {
		return false
	}
	a, _, ok := b3Parts(s)
	return ok && hexTrace(a, out)
}

func b3SpanV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	if !ok {
		return false
	}
	_, b, ok := b3Parts(s)
	return ok && hexSpan(b, out)
}

func gcpTraceV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	if !ok {
		return false
	}
	if i := strings.LastIndex(s, "/traces/"); i >= 0 {
		s = s[i+len("/traces/"):]
	}
	return hexTrace(s, out)
}

func ddTraceV(v *fastjson.Value, out, sc []byte) bool {
	if s, ok := str(v); ok {
		return decimal(s, 32, out) || (len(s) == 32 && hexTrace(s, out))
	}
	if s, ok := intLit(v, sc); ok {
		return decimal(s, 32, out)
	}
	return false
}

func ddSpanV(v *fastjson.Value, out, sc []byte) bool {
	if s, ok := str(v); ok {
		return decimal(s, 16, out)
	}
	if s, ok := intLit(v, sc); ok {
		return decimal(s, 16, out)
	}
	return false
}

func xrayTraceV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	if !ok {
		return false
	}
	if strings.IndexByte(s, '=') >= 0 {
		root, found := xrayField(s, "root")
		return found && xrayID(root, out)
	}
	return xrayID(s, out)
}

func xraySpanV(v *fastjson.Value, out, _ []byte) bool {
	s, ok := str(v)
	if !ok || strings.IndexByte(s, '=') < 0 {
		return false
	}
	p, found := xrayField(s, "parent")
	return found && hexSpan(p, out)
}

func nested(key string, get getter) getter {
	return func(v *fastjson.Value, out, sc []byte) bool {
		if v == nil || v.Type() != fastjson.TypeObject {
			return false
		}
		// the last duplicate wins, as in the dict orjson builds
		var last *fastjson.Value
		o, _ := v.Object()
		o.Visit(func(k []byte, x *fastjson.Value) {
			if string(k) == key {
				last = x
			}
		})
		return last != nil && get(last, out, sc)
	}
}

// -- the object's ids --------------------------------------------------------------------------

// settle tells what the record's canonical key (`trace_id` / `span_id`) needs:
// keep (absent and nothing found, or already the normalized id), append (absent, id found),
// rewrite (present with another value: replaced by the id or removed, the old value set aside).
const (
	keep = iota
	appendID
	rewrite
)

// isNorm: s is already the normalized id of n hex digits (lowercase, not all zero).
func isNorm(s string, n int) bool {
	if len(s) != n {
		return false
	}
	nz := false
	for i := 0; i < n; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
		nz = nz || c != '0'
	}
	return nz
}

// extract finds both ids among the candidates `cand` (nil: key absent) and says what the
// canonical keys need (see settle).
func extract(cand *[nCand]*fastjson.Value, any bool, id *ids) (traceAct, spanAct int) {
	id.hasT, id.hasS, id.srcT, id.srcS = false, false, -1, -1
	if !any {
		return keep, keep
	}
	for _, e := range traceTable {
		if v := cand[e.c]; v != nil && e.get(v, id.t[:32], id.scratch[:]) {
			id.hasT, id.srcT = true, e.c
			break
		}
	}
	for _, e := range spanTable {
		if v := cand[e.c]; v != nil && e.get(v, id.s[:16], id.scratch[:]) {
			id.hasS, id.srcS = true, e.c
			break
		}
	}
	return settle(cand[cTraceID], id.hasT, id.t[:32]), settle(cand[cSpanID], id.hasS, id.s[:16])
}

func settle(canon *fastjson.Value, found bool, id []byte) int {
	if canon == nil {
		if found {
			return appendID
		}
		return keep
	}
	if s, ok := str(canon); ok && found && s == b2s(id) {
		return keep
	}
	return rewrite
}
