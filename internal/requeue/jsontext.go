package requeue

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
)

// jsonText renders a stored BSON value as the JSON text JSON.stringify would
// produce for the value Chronow parsed: keys in stored order, int32/int64
// exact, doubles in JavaScript's shortest form, strings escaped like
// JSON.stringify (no HTML escaping). Dates become ISO strings, as
// JSON.stringify(new Date()) does.
func jsonText(v bson.RawValue) (string, error) {
	b, err := appendJSON(nil, v, 0)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

const maxDepth = 200

func appendJSON(dst []byte, v bson.RawValue, depth int) ([]byte, error) {
	if depth > maxDepth {
		return dst, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch v.Type {
	case bsontype.Null, bsontype.Undefined:
		return append(dst, "null"...), nil
	case bsontype.Boolean:
		return strconv.AppendBool(dst, v.Boolean()), nil
	case bsontype.Int32:
		return strconv.AppendInt(dst, int64(v.Int32()), 10), nil
	case bsontype.Int64:
		return strconv.AppendInt(dst, v.Int64(), 10), nil
	case bsontype.Double:
		return appendJSNumber(dst, v.Double()), nil
	case bsontype.Decimal128:
		return append(dst, v.Decimal128().String()...), nil
	case bsontype.String:
		return appendJSString(dst, v.StringValue()), nil
	case bsontype.DateTime:
		t := time.UnixMilli(v.DateTime()).UTC()
		return appendJSString(dst, t.Format("2006-01-02T15:04:05.000Z")), nil
	case bsontype.ObjectID:
		return appendJSString(dst, v.ObjectID().Hex()), nil
	case bsontype.EmbeddedDocument:
		elems, err := v.Document().Elements()
		if err != nil {
			return dst, err
		}
		return appendJSONList(dst, '{', '}', len(elems), func(dst []byte, i int) ([]byte, error) {
			dst = append(appendJSString(dst, elems[i].Key()), ':')
			return appendJSON(dst, elems[i].Value(), depth+1)
		})
	case bsontype.Array:
		vals, err := v.Array().Values()
		if err != nil {
			return dst, err
		}
		return appendJSONList(dst, '[', ']', len(vals), func(dst []byte, i int) ([]byte, error) {
			return appendJSON(dst, vals[i], depth+1)
		})
	}
	return dst, fmt.Errorf("BSON type %s has no JSON form", v.Type)
}

// appendJSONList appends open, the n items that item appends separated by
// commas, and close.
func appendJSONList(dst []byte, open, close byte, n int, item func(dst []byte, i int) ([]byte, error)) ([]byte, error) {
	dst = append(dst, open)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = item(dst, i); err != nil {
			return dst, err
		}
	}
	return append(dst, close), nil
}

// appendJSNumber formats f as JavaScript's Number.prototype.toString does
// (what JSON.stringify writes): the shortest round-trip digits, plain
// notation for 1e-7 < |f| < 1e21, exponent notation otherwise.
func appendJSNumber(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return append(dst, "null"...)
	case f == 0:
		return append(dst, '0')
	}
	abs := math.Abs(f)
	if abs >= 1e-6 && abs < 1e21 {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // e.g. 1e-07, 1.5e+21
	mant, exp, _ := strings.Cut(s, "e")
	sign := exp[0]
	exp = strings.TrimLeft(exp[1:], "0")
	dst = append(dst, mant...)
	dst = append(dst, 'e', sign)
	return append(dst, exp...)
}

// appendJSString quotes s as JSON.stringify does: only '"', '\\' and
// control characters are escaped; invalid UTF-8 becomes U+FFFD.
func appendJSString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\b':
				dst = append(dst, `\b`...)
			case c == '\f':
				dst = append(dst, `\f`...)
			case c == '\n':
				dst = append(dst, `\n`...)
			case c == '\r':
				dst = append(dst, `\r`...)
			case c == '\t':
				dst = append(dst, `\t`...)
			case c < 0x20:
				dst = append(dst, fmt.Sprintf(`\u%04x`, c)...)
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
