//go:build cgo

package main

// Kafka record batches compressed with the C zstd library (DataDog/zstd bundles its sources),
// the library tailship's Kafka sink calls through python-zstandard. franz-go's own compressor
// uses klauspost/compress's Go encoder, which at its fastest level took ~65% of this program's
// CPU to Kafka (profile of 1M CRI lines): a Go agent tuned for CPU plugs in the C library.
// Without cgo (no C compiler) the build falls back to franz-go's compressor (zstd_nocgo.go).

import (
	"bytes"
	"sync"

	ddzstd "github.com/DataDog/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

const zstdImpl = "libzstd (cgo)"

type cZstd struct {
	level int
	ctxs  sync.Pool // one compression context per concurrent call, reused
}

func newCompressor(level int) kgo.Compressor { return &cZstd{level: level} }

func (c *cZstd) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	for _, f := range flags {
		if f == kgo.CompressDisableZstd { // a broker too old for zstd
			return src, kgo.CodecNone
		}
	}
	cx, _ := c.ctxs.Get().(ddzstd.Ctx)
	if cx == nil {
		cx = ddzstd.NewCtx()
	}
	defer c.ctxs.Put(cx)
	dst.Reset()
	dst.Grow(ddzstd.CompressBound(len(src)))
	out, err := cx.CompressLevel(dst.AvailableBuffer(), src, c.level)
	if err != nil {
		return src, kgo.CodecNone
	}
	return out, kgo.CodecZstd
}
