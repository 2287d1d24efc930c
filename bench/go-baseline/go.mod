module tailship/bench/go-baseline

go 1.26.0

require (
	github.com/DataDog/zstd v1.5.7
	github.com/fsnotify/fsnotify v1.10.1
	github.com/twmb/franz-go v1.22.2
	github.com/valyala/fastjson v1.6.10
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.0 // indirect
	golang.org/x/sys v0.13.0 // indirect
)
