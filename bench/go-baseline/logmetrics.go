package main

// tailship's built-in log metrics (pipelines/logmetrics.py, on by default): lines by namespace
// and normalized level (`level`, `severity`, `lvl`, else `log.level`), and lines with and
// without trace context. Counted per file as records are built (the file's namespace is the
// same for all its records), merged at exit; label values cut at 128 bytes, at most 1000 series
// (the rest under __overflow__).

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/valyala/fastjson"
)

const (
	maxLabelBytes = 128
	cutMark       = "...[cut]"
	maxSeries     = 1000
	levelCache    = 1000
)

var levelAliases = map[string]string{"warn": "warning", "err": "error", "eror": "error", "dbug": "debug",
	"dbg": "debug", "information": "info", "informational": "info", "notice": "info", "trce": "trace",
	"crit": "critical", "alert": "critical", "fatal": "fatal", "panic": "fatal", "emerg": "fatal"}

var numericLevels = map[string]string{"10": "trace", "20": "debug", "30": "info", "40": "warning", "50": "error", "60": "fatal"}

type lineKey struct{ ns, level string }

type logMetrics struct {
	lines          map[lineKey]int64
	traced, untrac int64
	levels         map[string]string  // raw level -> normalized and bounded
	ptrs           map[lineKey]*int64 // a file's counts
	lastK          lineKey
	lastN          *int64
}

func newLogMetrics() *logMetrics {
	return &logMetrics{lines: map[lineKey]int64{}, levels: map[string]string{}, ptrs: map[lineKey]*int64{}}
}

func bound(v string) string {
	if len(v) <= maxLabelBytes {
		return v
	}
	return strings.ToValidUTF8(v[:maxLabelBytes-len(cutMark)], "") + cutMark
}

func normLevel(raw string) string {
	low := strings.ToLower(raw)
	if a, ok := levelAliases[low]; ok {
		return a
	}
	return low
}

// levelOf: the record's normalized level from the values of its level keys (nil: absent).
func (lm *logMetrics) levelOf(level, severity, lvl, logLevel *fastjson.Value) string {
	// `rec.get("level") or rec.get("severity") or rec.get("lvl")`: the first truthy value
	for _, v := range [3]*fastjson.Value{level, severity, lvl} {
		if v == nil || !truthy(v) {
			continue
		}
		if v.Type() == fastjson.TypeString {
			raw := v.GetStringBytes()
			if l, ok := lm.levels[string(raw)]; ok {
				return l
			}
			l := bound(normLevel(bound(string(raw))))
			if len(lm.levels) < levelCache && len(raw) <= maxLabelBytes {
				lm.levels[string(raw)] = l
			}
			return l
		}
		break // not a string: normalize_level over every key
	}
	for _, v := range [3]*fastjson.Value{level, severity, lvl} {
		if v == nil {
			continue
		}
		if v.Type() == fastjson.TypeString && len(v.GetStringBytes()) > 0 {
			return bound(normLevel(string(v.GetStringBytes())))
		}
		if v.Type() == fastjson.TypeNumber {
			if l, ok := numericLevels[v.String()]; ok {
				return l
			}
		}
	}
	if logLevel != nil && logLevel.Type() == fastjson.TypeString && len(logLevel.GetStringBytes()) > 0 {
		return bound(normLevel(string(logLevel.GetStringBytes())))
	}
	return "unknown"
}

func truthy(v *fastjson.Value) bool {
	switch v.Type() {
	case fastjson.TypeNull, fastjson.TypeFalse:
		return false
	case fastjson.TypeString:
		return len(v.GetStringBytes()) > 0
	case fastjson.TypeNumber:
		f, _ := v.Float64()
		return f != 0
	case fastjson.TypeArray:
		a, _ := v.Array()
		return len(a) > 0
	case fastjson.TypeObject:
		o, _ := v.Object()
		return o.Len() > 0
	}
	return true
}

func (lm *logMetrics) count(ns, level string, traced bool) {
	if lm.lastN != nil && lm.lastK.level == level && lm.lastK.ns == ns {
		*lm.lastN++ // the same series as the record before (one string compare, no hashing)
	} else {
		k := lineKey{ns, level}
		n := lm.ptrs[k]
		if n == nil {
			n = new(int64)
			lm.ptrs[k] = n
		}
		*n++
		lm.lastK, lm.lastN = k, n
	}
	if traced {
		lm.traced++
	} else {
		lm.untrac++
	}
}

var (
	allMetricsMu sync.Mutex
	allMetrics   = newLogMetrics()
)

// merge a file's counts into the process's (when its reader lets go).
func (lm *logMetrics) merge() {
	allMetricsMu.Lock()
	defer allMetricsMu.Unlock()
	for k, n := range lm.ptrs {
		if _, ok := allMetrics.lines[k]; !ok && len(allMetrics.lines) >= maxSeries {
			k = lineKey{"__overflow__", "__overflow__"}
		}
		allMetrics.lines[k] += *n
	}
	allMetrics.traced += lm.traced
	allMetrics.untrac += lm.untrac
}

func printLogMetrics() {
	allMetricsMu.Lock()
	defer allMetricsMu.Unlock()
	keys := make([]lineKey, 0, len(allMetrics.lines))
	for k := range allMetrics.lines {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return allMetrics.lines[keys[i]] > allMetrics.lines[keys[j]] })
	fmt.Fprintf(os.Stderr, "go-baseline: log metrics: %d lines_total series, trace_context_lines_total true=%d false=%d",
		len(keys), allMetrics.traced, allMetrics.untrac)
	for i, k := range keys {
		if i == 3 {
			break
		}
		fmt.Fprintf(os.Stderr, "; {namespace=%q,level=%q} %d", k.ns, k.level, allMetrics.lines[k])
	}
	fmt.Fprintln(os.Stderr)
}
