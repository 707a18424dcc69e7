package consumer

import (
	"slices"
	"strings"
)

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag (the text between the first '{' and the next
// '}', when not empty), modulo 16384. It is what CLUSTER KEYSLOT answers.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % Slots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// of the Redis Cluster specification.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^s[i]]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// BySlot splits keys into groups of one hash slot each (a multi-key command
// in a cluster may only name keys of one slot). Groups come in slot order,
// keys in their given order within a group.
func BySlot(keys []string) [][]string {
	idx := map[int]int{}
	var slots []int
	var groups [][]string
	for _, k := range keys {
		s := Slot(k)
		i, ok := idx[s]
		if !ok {
			i = len(groups)
			idx[s] = i
			slots = append(slots, s)
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], k)
	}
	order := make([]int, len(groups))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return slots[a] - slots[b] })
	out := make([][]string, len(groups))
	for i, o := range order {
		out[i] = groups[o]
	}
	return out
}
