// Package cachecrypt gives Redis-compatible caches envelope encryption at
// rest: RDB snapshots, AOF logs, export staging, OS-disk scratch files and
// ephemeral NVMe flash pages.
//
// Every disk has its own AES-256-GCM data keys (DEKs, package dek), sealed in
// a keyring file and wrapped by a pluggable key-encryption key (KEK, package
// kek): the platform-managed key (MMK, the default, zero setup), an RSA key
// in Azure Key Vault (customer-managed key, CMK, package vault), or an RSA key
// in a local HSM over PKCS#11 (package kek/pkcs11). Switching between them is
// a rewrap of a few hundred bytes per disk, done online.
//
// What is encrypted, where, and under which key:
//
//	data                                   disk                   key options
//	RDB snapshots, AOF logs (persistence)  persistence disk       MMK or CMK
//	RDB files waiting to be exported       OS disk + persistence  MMK or CMK
//	temporary files of an export           OS disk                MMK or CMK
//	keys and values of the Flash tier      transient NVMe flash   MMK only
//
// Layers, each importing only those below it:
//
//	cachecrypt            the Instance: tier + encryption config -> its disks
//	rdb aof osdisk nvme   what the cache writes
//	dek                   per-disk keyrings: DEK versions wrapped by a KEK
//	kek vault             the KEK interface, MMK, PKCS#11; Azure Key Vault
//	internal/...          wire formats, atomic file replacement
//
// The hot path (reading and writing files) makes no KEK call: a keyring is
// unwrapped once when its disk opens. Per-file keys are derived with
// HKDF-SHA256 from the DEK and a random salt, and nonces are counters, so no
// nonce repeats. FORMAT.md in the repository specifies every format.
//
// Errors are matched with errors.Is against the sentinels re-exported here
// (ErrAuthentication, ErrTruncated, ...) and in kek (ErrUnavailable,
// ErrRevoked, ErrPrerequisite, ErrUnsupported).
package cachecrypt
