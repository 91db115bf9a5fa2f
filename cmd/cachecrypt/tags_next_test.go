//go:build cachecrypt_next

package main

func init() { buildTags = "cachecrypt_next" }
