package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
	"github.com/stretchr/testify/require"
)

// An NVMe page store is recognised: inspect shows its layout and that its
// key was ephemeral; verify and decrypt say there is nothing to do offline.
func TestNVMePageStore(t *testing.T) {
	dir := newInstance(t)
	path := filepath.Join(dir, "nvme", "pages")
	require.NoError(t, os.Mkdir(filepath.Dir(path), 0o700))
	s, err := nvme.Open(path, &nvme.Options{Pages: 16})
	require.NoError(t, err)
	require.NoError(t, s.WritePage(3, make([]byte, s.PageSize())))
	require.NoError(t, s.Close())

	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", path)
	require.Equal(t, "nvme-pages", insp["kind"])
	require.EqualValues(t, 4096, insp["page_size"])
	require.EqualValues(t, 16, insp["pages"])
	require.Equal(t, "ephemeral (MMK only)", insp["key"])
	out := ok(t, nil, "verify", path)
	require.Contains(t, out, "not verified: ephemeral")
	r := fails(t, exitUsage, nil, "decrypt", path, "-o", filepath.Join(t.TempDir(), "x"))
	require.Contains(t, r.stderr, "ephemeral")
	out = ok(t, nil, "status", dir)
	require.Contains(t, out, "ephemeral (MMK only)", "the Flash tier's row appears with an nvme disk")

	// init --tier flash creates the page store; status lists four rows.
	flash := t.TempDir()
	out = ok(t, nil, "init", "--tier", "flash", "--flash-pages", "64", flash)
	require.Contains(t, out, "transient NVMe flash")
	var st statusJSONOut
	jsonOut(t, nil, &st, "status", flash)
	require.Len(t, st.Rows, 4)
	require.Equal(t, "ephemeral (MMK only)", st.Rows[3].Key)
	jsonOut(t, nil, &insp, "inspect", filepath.Join(flash, "nvme", "pages"))
	require.EqualValues(t, 64, insp["pages"])
	fails(t, exitUsage, nil, "init", "--tier", "gold", t.TempDir())
}
