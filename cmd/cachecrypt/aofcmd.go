package main

import (
	"fmt"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/spf13/cobra"
)

func (a *app) aofCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "aof",
		Short: "Check and fix encrypted AOF directories, like redis-check-aof",
		Args:  args(cobra.NoArgs),
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(a.aofCheckCommand(false), a.aofCheckCommand(true))
	return c
}

func (a *app) aofCheckCommand(fix bool) *cobra.Command {
	use, short, long := "check AOFDIR", "Authenticate an encrypted AOF: manifest, part headers, every frame",
		`check authenticates the manifest, every part's header and every frame of an
encrypted AOF directory, as redis-check-aof does for a plain one, and prints
each part. A torn tail of the last incremental part (a write cut short by a
crash) is reported with the offset where the valid data ends: 'aof fix' cuts
it off. Damage anywhere else cannot be fixed: restore from a backup.
Exit code 2 when anything is damaged.`
	if fix {
		use, short, long = "fix AOFDIR", "Cut a torn tail off the last part of an encrypted AOF",
			`fix checks the directory like 'aof check' and, when the only damage is a
torn tail of the last incremental part, cuts that part at its last valid
frame, as redis-check-aof --fix does, and says how many bytes were dropped.
Damage anywhere else is left alone and exits with 2: restore from a backup.`
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			dir := argv[0]
			if k, _ := detect(dir); k == kindAOFManifest || k == kindAOFPart {
				dir = filepath.Dir(dir)
			}
			name, kr, err := a.openAOFKeys(c.Context(), dir)
			if err != nil {
				return err
			}
			defer kr.Close()
			run := aof.Check
			if fix {
				run = aof.Fix
			}
			rep, err := run(dir, kr, aof.Options{Name: name})
			r := newRecord().add("aof", dir)
			if rep != nil {
				r.add("generation", rep.Generation)
				var parts []string
				for _, p := range rep.Parts {
					parts = append(parts, fmt.Sprintf("%s seq %d type %c dek v%d: %d frames, %d bytes (%d on disk)",
						p.Name, p.Seq, p.Type, p.DEK, p.Frames, p.Bytes, p.Size))
				}
				r.add("parts", parts)
				if d := rep.Damage; d != nil {
					r.add("damaged_part", d.File).add("valid_until_offset", d.Offset).add("bad_bytes", d.Dropped).add("damage", d.Err.Error())
				}
			}
			switch {
			case err != nil:
				r.add("result", "DAMAGED: "+err.Error())
			case fix && rep.Damage != nil:
				r.add("result", fmt.Sprintf("fixed: cut %s at offset %d, %d bytes dropped", rep.Damage.File, rep.Damage.Offset, rep.Damage.Dropped))
			default:
				r.add("result", "OK: the AOF is valid")
			}
			if perr := a.printRecords([]*record{r}); perr != nil {
				return perr
			}
			if err != nil {
				if h := hint(err); h != "" && !a.json {
					fmt.Fprintf(a.stderr, "what to do: %s\n", h)
				}
				return &silentError{exitCode(err)}
			}
			return nil
		},
	}
}
