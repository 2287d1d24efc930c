package main

// JSON string encoding and decoding on bytes, without reflection.

import (
	"bytes"
	"regexp"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// b2s: the bytes as a string without copying (the caller keeps b unchanged while it is used).
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

var criRe = regexp.MustCompile(
	`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) (?:stdout|stderr) [PF]`)

// needsEscape: the bytes orjson escapes in a string: '"', '\\' and control characters.
var needsEscape = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return
}()

// appendJSONString: s as a JSON string, escaped as orjson does (non-ASCII kept as UTF-8).
func appendJSONString(a []byte, s []byte) []byte {
	a = append(a, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape[c] {
			continue
		}
		a = append(a, s[start:i]...)
		switch c {
		case '"':
			a = append(a, '\\', '"')
		case '\\':
			a = append(a, '\\', '\\')
		case '\n':
			a = append(a, '\\', 'n')
		case '\r':
			a = append(a, '\\', 'r')
		case '\t':
			a = append(a, '\\', 't')
		case '\b':
			a = append(a, '\\', 'b')
		case '\f':
			a = append(a, '\\', 'f')
		default:
			a = append(a, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		}
		start = i + 1
	}
	a = append(a, s[start:]...)
	return append(a, '"')
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// unescape decodes the JSON string starting at s (after its opening quote) into dst; returns
// it, what follows the closing quote, and false on a malformed string.
func unescape(dst, s []byte) ([]byte, []byte, bool) {
	for {
		q := bytes.IndexByte(s, '"')
		if q < 0 {
			return dst, nil, false
		}
		b := bytes.IndexByte(s[:q], '\\')
		if b < 0 {
			return append(dst, s[:q]...), s[q+1:], true
		}
		dst = append(dst, s[:b]...)
		if b+1 >= len(s) {
			return dst, nil, false
		}
		s = s[b+1:]
		switch s[0] {
		case '"', '\\', '/':
			dst = append(dst, s[0])
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'u':
			r, ok := hex4(s[1:])
			if !ok {
				return dst, nil, false
			}
			s = s[4:]
			if utf16.IsSurrogate(r) {
				if len(s) >= 7 && s[1] == '\\' && s[2] == 'u' {
					if r2, ok := hex4(s[3:]); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r = d
							s = s[6:]
						} else {
							r = utf8.RuneError
						}
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, nil, false
		}
		s = s[1:]
	}
}
