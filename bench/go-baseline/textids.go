package main

// Plain-text lines: trace and span ids written logfmt style (`trace_id=<id>`, `span_id: <id>`,
// quoted keys or values, the camel-case keys, `trace.id`, `dd.trace_id` decimal,
// `traceparent=00-...`), with tailship's priority among keys (pipelines/trace.py
// extract_text); and the stack-trace lines that inherit the ids of the record before them
// (is_continuation).

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// textKeys in the regex's alternation order (the first that matches at a position wins).
var textKeys = [...]struct {
	key   string
	trace bool
	rank  int
}{
	{"dd.trace_id", true, 4}, {"dd.span_id", false, 4}, {"trace_id", true, 0}, {"span_id", false, 0},
	{"traceparent", true, 3}, {"traceId", true, 1}, {"traceID", true, 1}, {"TraceId", true, 1},
	{"spanId", false, 1}, {"spanID", false, 1}, {"SpanId", false, 1}, {"trace.id", true, 2},
	{"span.id", false, 2},
}

func isValByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-'
}

// matchKV: `key["']?[ \t]*[=:][ \t]*["']?value` at msg[i:], value a maximal run of
// [0-9A-Za-z_-] not followed by `=` or `:`. Returns the key's index, the value and the end.
func matchKV(msg string, i int) (int, string, int, bool) {
	for k, tk := range textKeys {
		if !strings.HasPrefix(msg[i:], tk.key) {
			continue
		}
		j := i + len(tk.key)
		// the regex backtracks over the optional quotes; try with and without
		for _, q1 := range [2]bool{true, false} {
			p := j
			if q1 {
				if p < len(msg) && (msg[p] == '"' || msg[p] == '\'') {
					p++
				} else {
					continue
				}
			}
			for p < len(msg) && (msg[p] == ' ' || msg[p] == '\t') {
				p++
			}
			if p >= len(msg) || (msg[p] != '=' && msg[p] != ':') {
				continue
			}
			p++
			for p < len(msg) && (msg[p] == ' ' || msg[p] == '\t') {
				p++
			}
			for _, q2 := range [2]bool{true, false} {
				v := p
				if q2 {
					if v < len(msg) && (msg[v] == '"' || msg[v] == '\'') {
						v++
					} else {
						continue
					}
				}
				e := v
				for e < len(msg) && isValByte(msg[e]) {
					e++
				}
				if e == v || (e < len(msg) && (msg[e] == '=' || msg[e] == ':')) {
					continue
				}
				return k, msg[v:e], e, true
			}
		}
		// another alternative may still match here (e.g. none shares a prefix that matters)
	}
	return 0, "", 0, false
}

func inWord(msg string, start int) bool {
	r, _ := utf8.DecodeLastRuneInString(msg[:start])
	return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_' || r == '.' || r == '-'
}

// textIDs: the trace and span ids written into a plain-text line.
func textIDs(msg string, id *ids) {
	id.hasT, id.hasS = false, false
	a, b := strings.Index(msg, "race"), strings.Index(msg, "pan")
	if a < 0 && b < 0 {
		return
	}
	trank, srank := 99, 99
	floor := 0
	for a >= 0 || b >= 0 {
		i := a
		if a < 0 || (b >= 0 && b < a) {
			i = b
		}
		at := i
		matched := false
		var k, end int
		var val string
		if i-4 >= floor && strings.HasPrefix(msg[i-4:], "dd.") {
			k, val, end, matched = matchKV(msg, i-4)
			if matched {
				i -= 4
			}
		}
		if !matched && i-1 >= floor {
			k, val, end, matched = matchKV(msg, i-1)
			if matched {
				i--
			}
		}
		start := i
		if matched {
			floor = end
			if !(start > 0 && inWord(msg, start)) {
				tk := textKeys[k]
				if tk.key == "traceparent" {
					var tr [32]byte
					var sp [16]byte
					if traceparent(val, tr[:], sp[:]) {
						if 3 < trank {
							copy(id.t[:], tr[:])
							id.hasT, trank = true, 3
						}
						if 3 < srank {
							copy(id.s[:16], sp[:])
							id.hasS, srank = true, 3
						}
					}
				} else if tk.trace && tk.rank < trank {
					ok := false
					if tk.key == "dd.trace_id" {
						ok = decimal(val, 32, id.scratch[:32]) || (len(val) == 32 && hexTrace(val, id.scratch[:32]))
					} else {
						ok = normTrace(val, id.scratch[:32])
					}
					if ok {
						copy(id.t[:], id.scratch[:32])
						id.hasT, trank = true, tk.rank
					}
				} else if !tk.trace && tk.rank < srank {
					ok := false
					if tk.key == "dd.span_id" {
						ok = decimal(val, 16, id.scratch[:16])
					} else {
						ok = normSpan(val, id.scratch[:16])
					}
					if ok {
						copy(id.s[:16], id.scratch[:16])
						id.hasS, srank = true, tk.rank
					}
				}
			}
		}
		resume := max(floor, at+1)
		if a >= 0 && a < resume {
			a = indexFrom(msg, "race", resume)
		}
		if b >= 0 && b < resume {
			b = indexFrom(msg, "pan", resume)
		}
	}
}

func indexFrom(s, sub string, from int) int {
	if from > len(s) {
		return -1
	}
	i := strings.Index(s[from:], sub)
	if i < 0 {
		return -1
	}
	return i + from
}

// -- continuation lines ------------------------------------------------------------------------

var contPrefixes = []string{"Caused by:", "Suppressed:", "Traceback (most recent call last):", "File \"",
	"During handling of the above exception", "The above exception was the direct cause",
	"created by ", "panic: ", "[signal "}

const w = `[\p{L}\p{N}_]`

var (
	exceptionLine = regexp.MustCompile(`^(?:[\p{L}_$][\p{L}\p{N}_$]*\.)*` +
		`(?:[\p{L}_$][\p{L}\p{N}_$]*(?:Error|Exception|Throwable|Interrupt|Exit|Warning|Fault)|Exception|Throwable)` +
		`(?::.*)?$`)
	goFrame   = regexp.MustCompile(`^(?:` + w[:len(w)-1] + `./~\[\]-]+)(?:\(\*?[^()]*\)\.(?:` + w[:len(w)-1] + `.\[\]]+))?\(.*\)$`)
	atFrame   = regexp.MustCompile(`^at (?:(?:async |new )?(?:` + w[:len(w)-1] + `$.<>\[\]/-]+) ?\(|(?:[^\s:()]*[./][^\s:()]*):\d+:\d+)`)
	goroutine = regexp.MustCompile(`^goroutine \d+ (?:[^\[]* )?\[[^\]]*\]:`)
	ellipsis  = regexp.MustCompile(`^\.\.\. ?\d+ (?:more|common frames omitted)`)
)

func isGoFrame(line string) bool {
	if !strings.HasSuffix(line, ")") || !goFrame.MatchString(line) {
		return false
	}
	callee, _, _ := strings.Cut(line, "(")
	return strings.Contains(callee, ".") || strings.HasPrefix(line, "panic(")
}

// isContinuation: a plain-text line that continues the record before it (a stack-trace line).
func isContinuation(msg string) bool {
	if msg == "" {
		return false
	}
	c := msg[0]
	if c == ' ' || c == '\t' {
		return strings.TrimFunc(msg, unicode.IsSpace) != ""
	}
	for _, p := range contPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	if c == '.' {
		return ellipsis.MatchString(msg)
	}
	if (c == 'a' && atFrame.MatchString(msg)) || (c == 'g' && goroutine.MatchString(msg)) {
		return true
	}
	r, _ := utf8.DecodeRuneInString(msg)
	if unicode.IsLetter(r) || c == '_' || c == '$' {
		sp := strings.IndexByte(msg, ' ')
		if sp != -1 && msg[sp-1] != ':' && !strings.Contains(msg[:sp], "(") {
			return false // "INFO ...": a class name or callee has no space in it
		}
		return exceptionLine.MatchString(msg) || isGoFrame(msg)
	}
	return false
}
