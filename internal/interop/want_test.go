package interop

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
)

// This file is the test's own, independent idea of what a stored value must
// be: a small JSON decoder that keeps key order and number literals (it does
// not trust the persister's transcoder), and a checker that walks the
// stored BSON, type for type.

// wDoc is an expected document. Ordered: the keys must come in this order
// (JSON objects). Partial: only the listed keys are checked.
type wDoc struct {
	ordered bool
	partial bool
	elems   []wElem
}

type wElem struct {
	key string
	val any
}

func (d *wDoc) add(key string, val any) *wDoc {
	d.elems = append(d.elems, wElem{key, val})
	return d
}

func (d *wDoc) get(key string) (any, bool) {
	for _, e := range d.elems {
		if e.key == key {
			return e.val, true
		}
	}
	return nil, false
}

// Expected values other than the JSON ones (string, int32, int64, float64,
// bool, nil, *wDoc, wArr).
type (
	wArr      []any
	wDate     int64    // a BSON date, milliseconds
	wDefects  []string // an array of exactly these strings, in any order
	wContains []string // an array of strings holding at least these
	anyDate   struct{} // a BSON date
	anyInt64  struct{} // an int64
	anyString struct{} // a non-empty string
	wAbsent   struct{} // the key must not be there (partial documents)
	anyValue  struct{} // any value (a shared_memory document's _id)
)

// jsonInfo says what the decoder saw that the persister must flag.
type jsonInfo struct {
	loneSurrogate bool // a \uD800-\uDFFF escape without its pair (or invalid UTF-8)
	escapedKeys   bool // a key starting with '$' or holding '.' or NUL
	arrayInArray  bool // an array directly inside an array (FerretDB refuses it)
}

// decodeJSON decodes one JSON text into the value the persister must store:
// objects keep their key order and have their keys escaped as documented
// ('$' first → U+FF04, '.' → U+FF0E, NUL → U+2400), integers that fit int32
// are int32, those that fit int64 are int64, other numbers are doubles, and
// a lone surrogate becomes U+FFFD.
func decodeJSON(text string) (any, jsonInfo, error) {
	d := &jdec{s: text}
	d.ws()
	v, err := d.value(false)
	if err != nil {
		return nil, jsonInfo{}, err
	}
	d.ws()
	if d.i != len(d.s) {
		return nil, jsonInfo{}, fmt.Errorf("json: trailing %q at %d", d.s[d.i:], d.i)
	}
	return v, d.info, nil
}

type jdec struct {
	s    string
	i    int
	info jsonInfo
}

func (d *jdec) ws() {
	for d.i < len(d.s) && strings.IndexByte(" \t\r\n", d.s[d.i]) >= 0 {
		d.i++
	}
}

func (d *jdec) errf(f string, a ...any) error {
	return fmt.Errorf("json at %d: %s", d.i, fmt.Sprintf(f, a...))
}

func (d *jdec) value(inArray bool) (any, error) {
	if d.i >= len(d.s) {
		return nil, d.errf("unexpected end")
	}
	switch c := d.s[d.i]; {
	case c == '{':
		d.i++
		doc := &wDoc{ordered: true}
		err := d.list('}', func() error {
			if d.i >= len(d.s) || d.s[d.i] != '"' {
				return d.errf("want a key")
			}
			k, err := d.str()
			if err != nil {
				return err
			}
			d.ws()
			if d.i >= len(d.s) || d.s[d.i] != ':' {
				return d.errf("want ':'")
			}
			d.i++
			d.ws()
			v, err := d.value(false)
			if err != nil {
				return err
			}
			doc.add(d.escapeKey(k), v)
			return nil
		})
		if err != nil {
			return nil, err
		}
		return doc, nil
	case c == '[':
		if inArray {
			d.info.arrayInArray = true
		}
		d.i++
		arr := wArr{}
		err := d.list(']', func() error {
			v, err := d.value(true)
			arr = append(arr, v)
			return err
		})
		if err != nil {
			return nil, err
		}
		return arr, nil
	case c == '"':
		return d.str()
	case c == 't' && strings.HasPrefix(d.s[d.i:], "true"):
		d.i += 4
		return true, nil
	case c == 'f' && strings.HasPrefix(d.s[d.i:], "false"):
		d.i += 5
		return false, nil
	case c == 'n' && strings.HasPrefix(d.s[d.i:], "null"):
		d.i += 4
		return nil, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return nil, d.errf("unexpected %q", d.s[d.i])
}

// list reads the items of an object or array whose opening bracket was
// just read, up to and including close: item reads one (white space before
// it is skipped), commas separate them.
func (d *jdec) list(close byte, item func() error) error {
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == close {
		d.i++
		return nil
	}
	for {
		d.ws()
		if err := item(); err != nil {
			return err
		}
		d.ws()
		if d.i < len(d.s) && d.s[d.i] == ',' {
			d.i++
			continue
		}
		if d.i < len(d.s) && d.s[d.i] == close {
			d.i++
			return nil
		}
		return d.errf("want ',' or '%c'", close)
	}
}

func (d *jdec) number() (any, error) {
	start := d.i
	isInt := true
	for d.i < len(d.s) && strings.IndexByte("+-0123456789.eE", d.s[d.i]) >= 0 {
		if strings.IndexByte(".eE", d.s[d.i]) >= 0 {
			isInt = false
		}
		d.i++
	}
	lit := d.s[start:d.i]
	if isInt {
		if n, err := strconv.ParseInt(lit, 10, 64); err == nil {
			if n >= math.MinInt32 && n <= math.MaxInt32 {
				return int32(n), nil
			}
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return nil, d.errf("number %q: %v", lit, err)
	}
	return f, nil
}

func (d *jdec) str() (string, error) {
	d.i++ // opening quote
	var b strings.Builder
	for {
		if d.i >= len(d.s) {
			return "", d.errf("unterminated string")
		}
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return b.String(), nil
		case c == '\\':
			if d.i+1 >= len(d.s) {
				return "", d.errf("unterminated escape")
			}
			e := d.s[d.i+1]
			d.i += 2
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := d.hex4()
				if err != nil {
					return "", err
				}
				if utf16.IsSurrogate(r) {
					if r < 0xDC00 && strings.HasPrefix(d.s[d.i:], `\u`) {
						save := d.i
						d.i += 2
						r2, err := d.hex4()
						if err == nil && r2 >= 0xDC00 && r2 <= 0xDFFF {
							b.WriteRune(utf16.DecodeRune(r, r2))
							continue
						}
						d.i = save
					}
					d.info.loneSurrogate = true
					r = utf8.RuneError
				}
				b.WriteRune(r)
			default:
				return "", d.errf("bad escape \\%c", e)
			}
		case c < 0x20:
			return "", d.errf("control character in a string")
		case c >= 0x80:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			if r == utf8.RuneError && size <= 1 {
				d.info.loneSurrogate = true
			}
			b.WriteRune(r)
			d.i += size
		default:
			b.WriteByte(c)
			d.i++
		}
	}
}

func (d *jdec) hex4() (rune, error) {
	if d.i+4 > len(d.s) {
		return 0, d.errf("short \\u escape")
	}
	n, err := strconv.ParseUint(d.s[d.i:d.i+4], 16, 16)
	if err != nil {
		return 0, d.errf("bad \\u escape %q", d.s[d.i:d.i+4])
	}
	d.i += 4
	return rune(n), nil
}

func (d *jdec) escapeKey(k string) string {
	if !strings.HasPrefix(k, "$") && !strings.ContainsAny(k, ".\x00") {
		return k
	}
	d.info.escapedKeys = true
	if strings.HasPrefix(k, "$") {
		k = "\uFF04" + k[1:]
	}
	k = strings.ReplaceAll(k, ".", "\uFF0E")
	return strings.ReplaceAll(k, "\x00", "\u2400")
}

// check compares a stored value with the expectation and appends what
// differs (with its path) to errs.
func check(errs *[]string, path string, want any, got bson.RawValue) {
	bad := func(f string, a ...any) {
		*errs = append(*errs, path+": "+fmt.Sprintf(f, a...))
	}
	typ := func(t bsontype.Type) bool {
		if got.Type != t {
			bad("type %s, want %s (stored %s)", got.Type, t, short(got))
			return false
		}
		return true
	}
	switch w := want.(type) {
	case *wDoc:
		if !typ(bsontype.EmbeddedDocument) {
			return
		}
		checkDoc(errs, path, w, got.Document())
	case wArr:
		if !typ(bsontype.Array) {
			return
		}
		vals, err := got.Array().Values()
		if err != nil {
			bad("corrupt array: %v", err)
			return
		}
		if len(vals) != len(w) {
			bad("array of %d values, want %d (stored %s)", len(vals), len(w), short(got))
			return
		}
		for i := range w {
			check(errs, fmt.Sprintf("%s[%d]", path, i), w[i], vals[i])
		}
	case string:
		if typ(bsontype.String) && got.StringValue() != w {
			bad("%q, want %q", got.StringValue(), w)
		}
	case int32:
		if typ(bsontype.Int32) && got.Int32() != w {
			bad("%d, want %d", got.Int32(), w)
		}
	case int64:
		if typ(bsontype.Int64) && got.Int64() != w {
			bad("%d, want %d", got.Int64(), w)
		}
	case float64:
		if typ(bsontype.Double) && math.Float64bits(got.Double()) != math.Float64bits(w) {
			bad("%v, want %v", got.Double(), w)
		}
	case bool:
		if typ(bsontype.Boolean) && got.Boolean() != w {
			bad("%v, want %v", got.Boolean(), w)
		}
	case nil:
		typ(bsontype.Null)
	case wDate:
		if typ(bsontype.DateTime) && got.DateTime() != int64(w) {
			bad("date %d ms, want %d ms", got.DateTime(), int64(w))
		}
	case anyDate:
		typ(bsontype.DateTime)
	case anyValue:
	case anyInt64:
		typ(bsontype.Int64)
	case anyString:
		if typ(bsontype.String) && got.StringValue() == "" {
			bad("empty string")
		}
	case wDefects, wContains:
		if !typ(bsontype.Array) {
			return
		}
		vals, _ := got.Array().Values()
		var have []string
		for _, v := range vals {
			s, ok := v.StringValueOK()
			if !ok {
				bad("defect %s is not a string", short(v))
				return
			}
			have = append(have, s)
		}
		sort.Strings(have)
		if exact, ok := w.(wDefects); ok {
			want := append([]string(nil), exact...)
			sort.Strings(want)
			if strings.Join(have, ",") != strings.Join(want, ",") {
				bad("defects %v, want %v", have, want)
			}
			return
		}
		for _, s := range w.(wContains) {
			if !slices.Contains(have, s) {
				bad("defects %v, want them to include %q", have, s)
			}
		}
	default:
		bad("test bug: cannot check a %T", want)
	}
}

func checkDoc(errs *[]string, path string, w *wDoc, got bson.Raw) {
	bad := func(f string, a ...any) {
		*errs = append(*errs, path+": "+fmt.Sprintf(f, a...))
	}
	elems, err := got.Elements()
	if err != nil {
		bad("corrupt document: %v", err)
		return
	}
	if w.ordered {
		var gk, wk []string
		for _, e := range elems {
			gk = append(gk, e.Key())
		}
		for _, e := range w.elems {
			wk = append(wk, e.key)
		}
		if strings.Join(gk, "\x00") != strings.Join(wk, "\x00") {
			bad("keys %q, want %q (in this order)", gk, wk)
			return
		}
		for i, e := range w.elems {
			check(errs, path+"."+e.key, e.val, elems[i].Value())
		}
		return
	}
	byKey := map[string]bson.RawValue{}
	for _, e := range elems {
		byKey[e.Key()] = e.Value()
	}
	for _, e := range w.elems {
		v, ok := byKey[e.key]
		if _, absent := e.val.(wAbsent); absent {
			if ok {
				bad("has %s = %s, want no such field", e.key, short(v))
			}
			continue
		}
		if !ok {
			bad("no field %s (want %s)", e.key, describe(e.val))
			continue
		}
		check(errs, path+"."+e.key, e.val, v)
	}
	if !w.partial {
		for _, e := range elems {
			if _, ok := w.get(e.Key()); !ok {
				bad("unexpected field %s = %s", e.Key(), short(e.Value()))
			}
		}
	}
}

// short renders a stored value for a message, cut to a readable length.
func short(v bson.RawValue) string {
	s := v.String()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func describe(w any) string {
	switch w := w.(type) {
	case *wDoc:
		var b bytes.Buffer
		b.WriteString("{")
		for i, e := range w.elems {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s: %s", e.key, describe(e.val))
		}
		b.WriteString("}")
		return b.String()
	case string:
		return strconv.Quote(w)
	default:
		return fmt.Sprintf("%v (%T)", w, w)
	}
}
