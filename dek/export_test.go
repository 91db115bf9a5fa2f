package dek

// Marshal parses a keyring file and serializes it again, for the fuzz
// target's malleability check.
func Marshal(b []byte) ([]byte, error) {
	f, err := parse(b)
	if err != nil {
		return nil, err
	}
	return f.marshal(), nil
}
