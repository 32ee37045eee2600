package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
)

// The /data stream is the output of SplitMix64 seeded with 0, each 64-bit
// word written little-endian, cut to the requested size. Any client can
// recompute it (or run `whoami data --size=N | sha256sum`), so the server
// needs neither to hash before sending nor to trust a header: a byte
// corrupted or reordered anywhere on the path shows up as a mismatch at a
// known offset. SplitMix64 rather than a repeating pattern because a shifted
// or duplicated segment of a periodic pattern would still compare equal.
//
// Reference: the first word for seed 0 is 0xe220a8397b1dcdaf.
const dataGenerator = "splitmix64 seed=0 little-endian"

// maxDataSize bounds /data?size=N so a typo cannot keep a replica busy forever.
const maxDataSize = 64 << 30

// dataReader yields the first size bytes of the /data stream.
type dataReader struct {
	state  uint64
	word   [8]byte
	inWord int // bytes of word already handed out; 8 means "generate the next word"
	remain int64
}

func newDataReader(size int64) *dataReader {
	return &dataReader{inWord: 8, remain: size}
}

func (d *dataReader) next() uint64 {
	d.state += 0x9e3779b97f4a7c15
	z := d.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.remain {
		p = p[:d.remain]
	}
	n := 0
	// Finish a word left half-read by a previous short buffer.
	for d.inWord < 8 && n < len(p) {
		p[n] = d.word[d.inWord]
		d.inWord++
		n++
	}
	// Whole words straight into the buffer: the hot path for large streams.
	for len(p)-n >= 8 {
		binary.LittleEndian.PutUint64(p[n:], d.next())
		n += 8
	}
	if n < len(p) {
		binary.LittleEndian.PutUint64(d.word[:], d.next())
		d.inWord = 0
		for n < len(p) {
			p[n] = d.word[d.inWord]
			d.inWord++
			n++
		}
	}
	d.remain -= int64(n)
	return n, nil
}

// verifyData reads r to its end and checks it is exactly the first size
// bytes of the /data stream. The error names the first differing offset.
func verifyData(r io.Reader, size int64) error {
	want := newDataReader(size)
	got := make([]byte, 32<<10)
	exp := make([]byte, 32<<10)
	var off int64
	for {
		n, err := io.ReadFull(r, got)
		if n > 0 {
			m, _ := io.ReadFull(want, exp[:n])
			if m < n {
				return fmt.Errorf("data longer than %d bytes", size)
			}
			if !bytes.Equal(got[:n], exp[:n]) {
				i := 0
				for got[i] == exp[i] {
					i++
				}
				return fmt.Errorf("data differs at offset %d: got 0x%02x want 0x%02x", off+int64(i), got[i], exp[i])
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading data at offset %d: %w", off, err)
		}
	}
	if off != size {
		return fmt.Errorf("data truncated: got %d of %d bytes", off, size)
	}
	return nil
}

func cmdData(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whoami data", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.Int64("size", -1, "number of bytes of the /data stream ("+dataGenerator+") to write")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *size < 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "whoami data: --size=N is required")
		return 2
	}
	if _, err := io.Copy(stdout, newDataReader(*size)); err != nil {
		fmt.Fprintf(stderr, "whoami data: %v\n", err)
		return 1
	}
	return 0
}
