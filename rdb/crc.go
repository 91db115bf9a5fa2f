package rdb

// CRC64 continues Redis' CRC-64 (Jones polynomial, reflected, no final
// XOR) over p; start with 0. An RDB file of version 5 or later ends with the
// CRC-64 of everything before it, as 8 little-endian bytes.
func CRC64(crc uint64, p []byte) uint64 { return redisCRC(crc, p) }
