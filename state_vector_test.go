package cachecrypt

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

// wantStateVector is what testdata/state-v1 holds.
var wantStateVector = state{
	Seq: 5, Instance: "cc-00112233445566778899aabbccddeeff",
	Keyrings: map[string]keyringState{
		"persistence": {Generation: 7, Digest: "6a09e667f3bcc908b2fb1366ea957d3e3adec17512775099da2f590b0667322a"},
		"os":          {Generation: 3, Digest: "bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1510e527fade682d1"},
	},
	Snapshot: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	Pending:  true,
	Previous: "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100",
	AOF:      12,
}

func vectorMMK(t *testing.T) *kek.MMK {
	b, err := os.ReadFile("testdata/keyring-v1/mmk.keyset")
	require.NoError(t, err)
	m, err := kek.ParseMMK("mmk", b)
	require.NoError(t, err)
	return m
}

// TestStateVectorDecodes decodes the committed slot as FORMAT.md says,
// with nothing of state.go but the expected values.
func TestStateVectorDecodes(t *testing.T) {
	raw, err := os.ReadFile("testdata/state-v1/mmk.key.state-1")
	require.NoError(t, err)
	var w kek.Wrapped
	require.NoError(t, json.Unmarshal(raw, &w))
	plain, err := vectorMMK(t).Unwrap(context.Background(), w)
	require.NoError(t, err)
	body, ok := strings.CutPrefix(string(plain), "cachecrypt instance state v1\x00")
	require.True(t, ok, "the label comes first")
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.EqualValues(t, 5, got["seq"])
	require.Equal(t, wantStateVector.Instance, got["instance"])
	require.Equal(t, wantStateVector.Snapshot, got["snapshot"])
	require.Equal(t, true, got["pending"])
	require.Equal(t, wantStateVector.Previous, got["previous_snapshot"])
	require.EqualValues(t, 12, got["aof_generation"])
	pers := got["keyrings"].(map[string]any)["persistence"].(map[string]any)
	require.EqualValues(t, 7, pers["generation"])
	require.Equal(t, wantStateVector.Keyrings["persistence"].Digest, pers["digest"])
}

// TestStateVectorLoads: this build reads the committed slot.
func TestStateVectorLoads(t *testing.T) {
	s := &stateStore{fs: atomicfile.OS, base: "testdata/state-v1/mmk.key.state", id: wantStateVector.Instance, mmk: vectorMMK(t)}
	require.NoError(t, s.load(context.Background()))
	require.Equal(t, wantStateVector, s.cur)
	other := &stateStore{fs: atomicfile.OS, base: s.base, id: "cc-ffffffffffffffffffffffffffffffff", mmk: vectorMMK(t)}
	require.ErrorIs(t, other.load(context.Background()), ErrRollback, "another instance's record is refused")
}
