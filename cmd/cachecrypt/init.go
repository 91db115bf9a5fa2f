package main

import (
	"github.com/cachecrypt/cachecrypt"
	"github.com/spf13/cobra"
)

func (a *app) initCommand() *cobra.Command {
	var cmk, tier string
	var flashPages int64
	var prereq prereqFlags
	c := &cobra.Command{
		Use:   "init DIR",
		Short: "Create an instance directory's keyrings, as a cache does on first start",
		Long: `init creates (or opens) the instance directory DIR: its platform key, in
the platform key store outside DIR ($CACHECRYPT_PLATFORM_STORE,
/var/lib/cachecrypt for root, ~/.config/cachecrypt otherwise; or the
systemd credential cachecrypt-mmk), and one keyring per persistent disk (DIR/persistence,
DIR/os), wrapped by the platform key, or by the customer-managed key given
with --cmk; on the flash tier also the NVMe page store DIR/nvme/pages, whose
key is ephemeral (MMK only). A cache does this itself on first start; init is for
provisioning, restores and tests. An existing instance is left as it is.`,
		Example: `  cachecrypt init /var/lib/cache
  cachecrypt init --cmk https://contoso.vault.azure.net/keys/cache-cmk --client-id $ID /var/lib/cache`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			ctx := c.Context()
			dir := argv[0]
			if detectDir(dir) == kindInstance {
				return usagef("init: %s is already an instance directory (see 'cachecrypt status %s')", dir, dir)
			}
			cfg := cachecrypt.Config{ProbeInterval: -1, Logger: discardLogger()}
			tiers := map[string]cachecrypt.Tier{"memory": cachecrypt.MemoryOptimized, "balanced": cachecrypt.Balanced,
				"compute": cachecrypt.ComputeOptimized, "flash": cachecrypt.FlashOptimized}
			t, ok := tiers[tier]
			if !ok {
				return usagef("init: --tier %q: use memory, balanced, compute or flash", tier)
			}
			cfg.Tier = t
			cfg.Flash.Pages = flashPages
			if cmk != "" {
				k, err := a.keks.open(ctx, cmk, false)
				if err != nil {
					return err
				}
				check, err := a.prereqCheck(prereq, k)
				if err != nil {
					return err
				}
				cfg.Encryption = cachecrypt.Encryption{CMK: k, Check: check}
			}
			inst, err := cachecrypt.Open(ctx, dir, cfg)
			if err != nil {
				return err
			}
			rows := inst.Status()
			if err := inst.Close(); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(statusJSON(rows, nil))
			}
			return cachecrypt.WriteStatus(a.stdout, rows)
		},
	}
	c.Flags().StringVar(&cmk, "cmk", "", "customer-managed KEK URI to wrap the keyrings with (default: the platform key)")
	c.Flags().StringVar(&tier, "tier", "balanced", "service tier: memory, balanced, compute or flash (flash adds the ephemeral NVMe page store DIR/nvme/pages)")
	c.Flags().Int64Var(&flashPages, "flash-pages", 0, "flash tier: pages of 4 KiB in the NVMe page store (default 65536, a sparse 256 MiB file)")
	prereq.add(c)
	return c
}
