// Package bsonjson transcodes JSON text straight into BSON elements, exactly:
// object key order is kept, integers stay integers, and keys MongoDB cannot
// store are escaped in one deterministic way.
//
// Numbers: an integer literal that fits int32 becomes int32, one that fits
// int64 becomes int64 (so 9007199254740993 survives exactly), anything else
// (fractions, exponents, larger integers) becomes a double, as JSON.parse in
// Chronow would have it.
//
// Keys: a key that starts with '$', contains '.', or contains NUL cannot be
// stored in every MongoDB-compatible server (FerretDB refuses them, MongoDB
// accepts some on insert and refuses them on update). Such a key is escaped by
// replacing '$' with U+FF04 (＄), '.' with U+FF0E (．) and NUL with U+2400 (␀),
// and the caller is told, so it can keep the raw text beside the document.
package bsonjson

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting accepted, leaving room below MongoDB's limit
// of 100 levels for the enclosing document.
const MaxDepth = 90

// ErrTooDeep is returned for JSON nested deeper than MaxDepth.
var ErrTooDeep = errors.New("json nested too deep")

// SyntaxError reports invalid JSON and where it was found.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid json at byte %d: %s", e.Offset, e.Msg)
}

// Result tells what AppendElement had to change to make the value storable.
type Result struct {
	// EscapedKeys is true when at least one key was escaped.
	EscapedKeys bool
	// Replaced is true when a string (or key) held text with no exact
	// UTF-8 form, a lone UTF-16 surrogate escape such as \ud83c or bytes
	// that are not UTF-8, and U+FFFD was stored in its place.
	Replaced bool
}

// BSON element types used here.
const (
	typeDouble   = 0x01
	typeString   = 0x02
	typeDocument = 0x03
	typeArray    = 0x04
	typeBool     = 0x08
	typeNull     = 0x0A
	typeInt32    = 0x10
	typeInt64    = 0x12
)

// AppendElement parses src as one JSON value and appends it to dst as a BSON
// element named key. On error dst is returned unchanged (truncated back).
func AppendElement(dst []byte, key string, src []byte) ([]byte, Result, error) {
	e := encoder{src: src, dst: dst}
	start := len(dst)
	e.skipWS()
	if err := e.value(key, 0); err != nil {
		return dst[:start], Result{}, err
	}
	e.skipWS()
	if e.pos != len(e.src) {
		return dst[:start], Result{}, e.errorf("unexpected %q after the value", e.src[e.pos])
	}
	return e.dst, Result{EscapedKeys: e.escaped, Replaced: e.replaced}, nil
}

// Valid reports whether src is one well-formed JSON value (and nothing else).
func Valid(src []byte) bool {
	_, _, err := AppendElement(nil, "v", src)
	return err == nil
}

type encoder struct {
	src      []byte
	pos      int
	dst      []byte
	escaped  bool
	replaced bool
	scratch  []byte
}

func (e *encoder) errorf(format string, a ...any) error {
	return &SyntaxError{Offset: e.pos, Msg: fmt.Sprintf(format, a...)}
}

func (e *encoder) skipWS() {
	for e.pos < len(e.src) {
		switch e.src[e.pos] {
		case ' ', '\t', '\n', '\r':
			e.pos++
		default:
			return
		}
	}
}

// skipDigits advances past ASCII digits and returns how many there were.
func (e *encoder) skipDigits() int {
	start := e.pos
	for e.pos < len(e.src) && e.src[e.pos] >= '0' && e.src[e.pos] <= '9' {
		e.pos++
	}
	return e.pos - start
}

func (e *encoder) header(t byte, key string) {
	e.dst = append(e.dst, t)
	e.dst = append(e.dst, key...)
	e.dst = append(e.dst, 0)
}

// value parses one JSON value at e.pos and appends it as element key.
func (e *encoder) value(key string, depth int) error {
	if e.pos >= len(e.src) {
		return e.errorf("unexpected end of input")
	}
	switch c := e.src[e.pos]; {
	case c == '{':
		e.header(typeDocument, key)
		return e.object(depth + 1)
	case c == '[':
		e.header(typeArray, key)
		return e.array(depth + 1)
	case c == '"':
		e.header(typeString, key)
		return e.stringValue()
	case c == 't':
		return e.literal("true", func() { e.header(typeBool, key); e.dst = append(e.dst, 1) })
	case c == 'f':
		return e.literal("false", func() { e.header(typeBool, key); e.dst = append(e.dst, 0) })
	case c == 'n':
		return e.literal("null", func() { e.header(typeNull, key) })
	case c == '-' || (c >= '0' && c <= '9'):
		return e.number(key)
	default:
		return e.errorf("unexpected %q", c)
	}
}

func (e *encoder) literal(word string, emit func()) error {
	if len(e.src)-e.pos < len(word) || string(e.src[e.pos:e.pos+len(word)]) != word {
		return e.errorf("invalid literal, want %s", word)
	}
	e.pos += len(word)
	emit()
	return nil
}

func (e *encoder) object(depth int) error { return e.container(depth, true) }

func (e *encoder) array(depth int) error { return e.container(depth, false) }

// container encodes the object or array that starts at e.pos as an embedded
// document: its members, separated by ',', up to the closing '}' or ']'.
// An array's members get the keys "0", "1", ...
func (e *encoder) container(depth int, object bool) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w (more than %d levels at byte %d)", ErrTooDeep, MaxDepth, e.pos)
	}
	closing, what := byte(']'), "array"
	if object {
		closing, what = '}', "object"
	}
	e.pos++ // { or [
	lenAt := len(e.dst)
	e.dst = append(e.dst, 0, 0, 0, 0)
	e.skipWS()
	if e.pos < len(e.src) && e.src[e.pos] == closing {
		e.pos++
		return e.closeDoc(lenAt)
	}
	var idx [20]byte
	for i := 0; ; i++ {
		e.skipWS()
		var err error
		if object {
			err = e.member(depth)
		} else {
			err = e.value(string(strconv.AppendInt(idx[:0], int64(i), 10)), depth)
		}
		if err != nil {
			return err
		}
		e.skipWS()
		if e.pos >= len(e.src) {
			return e.errorf("unexpected end of input in an %s", what)
		}
		switch e.src[e.pos] {
		case ',':
			e.pos++
		case closing:
			e.pos++
			return e.closeDoc(lenAt)
		default:
			return e.errorf("want ',' or '%c' in an %s, got %q", closing, what, e.src[e.pos])
		}
	}
}

// member encodes one "key": value of an object.
func (e *encoder) member(depth int) error {
	if e.pos >= len(e.src) || e.src[e.pos] != '"' {
		return e.errorf("want a string key")
	}
	k, err := e.decodeString(e.scratch[:0])
	if err != nil {
		return err
	}
	k = e.escapeKey(k)
	e.scratch = k
	e.skipWS()
	if e.pos >= len(e.src) || e.src[e.pos] != ':' {
		return e.errorf("want ':' after a key")
	}
	e.pos++
	e.skipWS()
	// The key lives in scratch, which nested values reuse: copy it.
	return e.value(string(k), depth)
}

func (e *encoder) closeDoc(lenAt int) error {
	e.dst = append(e.dst, 0)
	n := len(e.dst) - lenAt
	if n > math.MaxInt32 {
		return e.errorf("document too large")
	}
	e.dst[lenAt] = byte(n)
	e.dst[lenAt+1] = byte(n >> 8)
	e.dst[lenAt+2] = byte(n >> 16)
	e.dst[lenAt+3] = byte(n >> 24)
	return nil
}

func (e *encoder) stringValue() error {
	lenAt := len(e.dst)
	e.dst = append(e.dst, 0, 0, 0, 0)
	s, err := e.decodeString(e.dst)
	if err != nil {
		return err
	}
	e.dst = append(s, 0)
	n := len(e.dst) - lenAt - 4
	e.dst[lenAt] = byte(n)
	e.dst[lenAt+1] = byte(n >> 8)
	e.dst[lenAt+2] = byte(n >> 16)
	e.dst[lenAt+3] = byte(n >> 24)
	return nil
}

// decodeString parses the JSON string at e.pos and appends its UTF-8 bytes
// to buf. Invalid UTF-8 and lone surrogates become U+FFFD (the closest
// UTF-8 text; BSON strings must be UTF-8), and the encoder notes it in
// Result.Replaced so that the caller keeps the exact text beside the value.
func (e *encoder) decodeString(buf []byte) ([]byte, error) {
	e.pos++ // opening quote
	for {
		// Fast path: copy a run of plain bytes.
		start := e.pos
		e.pos += plainRun(e.src[e.pos:])
		buf = append(buf, e.src[start:e.pos]...)
		if e.pos >= len(e.src) {
			return nil, e.errorf("unterminated string")
		}
		c := e.src[e.pos]
		switch {
		case c == '"':
			e.pos++
			return buf, nil
		case c < 0x20:
			return nil, e.errorf("control character %#x in a string", c)
		case c >= 0x80:
			r, size := utf8.DecodeRune(e.src[e.pos:])
			if r == utf8.RuneError && size <= 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
				e.replaced = true
				e.pos++
				continue
			}
			buf = append(buf, e.src[e.pos:e.pos+size]...)
			e.pos += size
		default: // backslash
			if e.pos+1 >= len(e.src) {
				return nil, e.errorf("unterminated escape")
			}
			esc := e.src[e.pos+1]
			e.pos += 2
			switch esc {
			case '"', '\\', '/':
				buf = append(buf, esc)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, err := e.hex4()
				if err != nil {
					return nil, err
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if e.pos+1 < len(e.src) && e.src[e.pos] == '\\' && e.src[e.pos+1] == 'u' {
						save := e.pos
						e.pos += 2
						if v, err := e.hex4(); err == nil {
							r2 = v
						} else {
							e.pos = save
						}
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
					} else {
						if r2 >= 0 {
							// Not a pair: keep the second escape for the next turn.
							e.pos -= 6
						}
						r = utf8.RuneError
						e.replaced = true
					}
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return nil, e.errorf("invalid escape \\%c", esc)
			}
		}
	}
}

// plainRun returns how many bytes at the start of b a JSON string copies
// as they are: up to the first '"', '\\', control character (< 0x20) or
// non-ASCII byte. It tests eight bytes at a time (SWAR) and finishes byte
// by byte; a word that might hold such a byte is always rechecked byte by
// byte, so the result is exactly that of the plain loop.
func plainRun(b []byte) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	// hasZero reports whether some byte of x is 0 (exact as a whole).
	hasZero := func(x uint64) bool { return (x-ones)&^x&highs != 0 }
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if x&highs != 0 || // a byte >= 0x80
			(x-0x20*ones)&^x&highs != 0 || // a byte < 0x20 (all bytes < 0x80 here)
			hasZero(x^('"'*ones)) || hasZero(x^('\\'*ones)) {
			break
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
			break
		}
	}
	return i
}

func (e *encoder) hex4() (rune, error) {
	if len(e.src)-e.pos < 4 {
		return 0, e.errorf("short \\u escape")
	}
	var r rune
	for _, c := range e.src[e.pos : e.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, e.errorf("invalid \\u escape")
		}
	}
	e.pos += 4
	return r, nil
}

// escapeKey rewrites a key MongoDB cannot store; see the package comment.
func (e *encoder) escapeKey(k []byte) []byte {
	needs := len(k) > 0 && k[0] == '$'
	for _, c := range k {
		if c == '.' || c == 0 {
			needs = true
			break
		}
	}
	if !needs {
		return k
	}
	e.escaped = true
	out := make([]byte, 0, len(k)+8)
	for i, c := range k {
		switch {
		case c == '$' && i == 0:
			out = append(out, "\uFF04"...)
		case c == '.':
			out = append(out, "\uFF0E"...)
		case c == 0:
			out = append(out, "\u2400"...)
		default:
			out = append(out, c)
		}
	}
	return out
}

func (e *encoder) number(key string) error {
	start := e.pos
	isInt := true
	if e.src[e.pos] == '-' {
		e.pos++
	}
	if e.pos >= len(e.src) {
		return e.errorf("truncated number")
	}
	switch c := e.src[e.pos]; {
	case c == '0':
		e.pos++
	case c >= '1' && c <= '9':
		e.skipDigits()
	default:
		return e.errorf("invalid number")
	}
	if e.pos < len(e.src) && e.src[e.pos] == '.' {
		isInt = false
		e.pos++
		if e.skipDigits() == 0 {
			return e.errorf("invalid number: no digits after '.'")
		}
	}
	if e.pos < len(e.src) && (e.src[e.pos] == 'e' || e.src[e.pos] == 'E') {
		isInt = false
		e.pos++
		if e.pos < len(e.src) && (e.src[e.pos] == '+' || e.src[e.pos] == '-') {
			e.pos++
		}
		if e.skipDigits() == 0 {
			return e.errorf("invalid number: no digits in exponent")
		}
	}
	lit := e.src[start:e.pos]
	if isInt {
		if v, ok := parseInt64(lit); ok {
			if v >= math.MinInt32 && v <= math.MaxInt32 {
				e.header(typeInt32, key)
				u := uint32(int32(v))
				e.dst = append(e.dst, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
				return nil
			}
			e.header(typeInt64, key)
			u := uint64(v)
			e.dst = append(e.dst, byte(u), byte(u>>8), byte(u>>16), byte(u>>24), byte(u>>32), byte(u>>40), byte(u>>48), byte(u>>56))
			return nil
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return e.errorf("invalid number %q", lit)
	}
	e.header(typeDouble, key)
	u := math.Float64bits(f)
	e.dst = append(e.dst, byte(u), byte(u>>8), byte(u>>16), byte(u>>24), byte(u>>32), byte(u>>40), byte(u>>48), byte(u>>56))
	return nil
}

// parseInt64 parses a JSON integer literal without allocating.
func parseInt64(b []byte) (int64, bool) {
	neg := false
	if b[0] == '-' {
		neg = true
		b = b[1:]
	}
	if len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}
