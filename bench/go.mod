module github.com/cachecrypt/cachecrypt/bench

go 1.26.0

replace github.com/cachecrypt/cachecrypt => ../

require (
	github.com/cachecrypt/cachecrypt v0.0.0-00010101000000-000000000000
	github.com/minio/sio v0.4.1
	github.com/tink-crypto/tink-go/v2 v2.9.0
	golang.org/x/crypto v0.58.0
)

require (
	github.com/klauspost/compress v1.20.4 // indirect
	golang.org/x/sys v0.49.0 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
