package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/retention"
)

func (ra *repoApp) verifyCommand() *cobra.Command {
	var readData string
	cmd := &cobra.Command{
		Use:   "verify [BACKUP...]",
		Short: "Check the repository (or re-read the named backups' data); exit 7 when something is damaged",
	}
	cmd.Flags().StringVar(&readData, "read-data", "", "also re-read data: all packs, or a share such as 10%")
	cmd.Flags().Lookup("read-data").NoOptDefVal = "100%"
	ra.addNoLock(cmd)
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		opts := repo.VerifyOptions{}
		pct, err := parseReadData(readData)
		if err != nil {
			return err
		}
		opts.ReadDataPercent = pct
		return ra.locked(ctx, lockReading, "verify", func(r *repo.Repository) error {
			for _, spec := range args {
				m, err := resolveBackup(ctx, r, spec, repo.Filter{})
				if err != nil {
					return err
				}
				opts.Backups = append(opts.Backups, m)
			}
			prog, finish := ra.repoProgress("verify")
			opts.Progress = prog
			res, err := r.Verify(ctx, opts)
			finish()
			if err != nil {
				return err
			}
			perr := ra.print(res, func() {
				fmt.Fprintf(ra.stdout, "checked %s, %s, %s; re-read %s (%s)\n",
					plural(res.Backups, "backup", "backups"), plural(res.Packs, "pack", "packs"),
					plural(res.Blobs, "blob", "blobs"), plural(res.PacksRead, "pack", "packs"), core.FormatSize(res.BytesRead))
				for _, w := range res.Warnings {
					fmt.Fprintf(ra.stdout, "warning: %s\n", w)
				}
				for _, p := range res.Problems {
					line := "damaged: "
					if p.Object != "" {
						line += p.Object + ": "
					}
					line += p.Message
					if p.Blob != "" && !strings.Contains(p.Message, p.Blob[:16]) {
						line += " (blob " + p.Blob + ")"
					}
					fmt.Fprintln(ra.stdout, line)
					if len(p.Backups) > 0 {
						fmt.Fprintf(ra.stdout, "  needed by backups: %s\n", strings.Join(p.Backups, ", "))
					}
				}
				if res.OK() {
					fmt.Fprintln(ra.stdout, "no problems found")
				}
			})
			if perr != nil {
				return perr
			}
			if !res.OK() {
				return core.Corrupt("verify found %d problems", len(res.Problems))
			}
			return nil
		})
	})
	return cmd
}

// policyFlags are the retention flags of DESIGN 2b.
type policyFlags struct {
	last, hourly, daily, weekly, monthly, yearly int
	within                                       string
}

func (p *policyFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&p.last, "keep-last", 0, "keep the N newest backups")
	f.IntVar(&p.hourly, "keep-hourly", 0, "keep the newest backup of each of the last N hours with backups")
	f.IntVar(&p.daily, "keep-daily", 0, "keep the newest backup of each of the last N days with backups")
	f.IntVar(&p.weekly, "keep-weekly", 0, "keep the newest backup of each of the last N weeks with backups")
	f.IntVar(&p.monthly, "keep-monthly", 0, "keep the newest backup of each of the last N months with backups")
	f.IntVar(&p.yearly, "keep-yearly", 0, "keep the newest backup of each of the last N years with backups")
	f.StringVar(&p.within, "keep-within", "", "keep every backup within this time of the newest, e.g. 14d, 36h, 2w")
}

func (p *policyFlags) policy() (repo.Policy, error) {
	pol := repo.Policy{Last: p.last, Hourly: p.hourly, Daily: p.daily, Weekly: p.weekly, Monthly: p.monthly, Yearly: p.yearly}
	if err := pol.Check(); err != nil {
		return pol, err
	}
	if p.within != "" {
		d, err := retention.ParseDuration(p.within)
		if err != nil {
			return pol, err
		}
		pol.Within = d
	}
	return pol, nil
}

type forgetResult struct {
	Keep   []apitypes.Backup `json:"keep"`
	Remove []apitypes.Backup `json:"remove"`
	DryRun bool              `json:"dry_run"`
	Prune  *repo.PruneResult `json:"prune,omitempty"`
}

func (ra *repoApp) forgetCommand() *cobra.Command {
	var (
		p             policyFlags
		f             filterFlags
		dryRun, prune bool
	)
	cmd := &cobra.Command{
		Use:   "forget [BACKUP...] [--keep-* ...]",
		Short: "Remove backups, named or by a retention policy (their data stays until prune)",
	}
	p.add(cmd)
	f.add(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be removed")
	cmd.Flags().BoolVar(&prune, "prune", false, "prune right after")
	cmd.RunE = ra.run(func(ctx context.Context, args []string) error {
		pol, err := p.policy()
		if err != nil {
			return err
		}
		if len(args) > 0 && !pol.Empty() {
			return core.Invalid("give backups or --keep-* flags, not both")
		}
		if len(args) == 0 && pol.Empty() {
			return core.Invalid("nothing to forget: name backups or give --keep-* flags")
		}
		res := forgetResult{Keep: []apitypes.Backup{}, Remove: []apitypes.Backup{}, DryRun: dryRun}
		err = ra.locked(ctx, lockShared, "forget", func(r *repo.Repository) error {
			backups, err := r.Backups(ctx)
			if err != nil {
				return err
			}
			var remove []*format.Manifest
			if len(args) > 0 {
				seen := map[string]bool{}
				for _, spec := range args {
					m, err := repo.Resolve(backups, spec, repo.Filter{})
					if err != nil {
						return err
					}
					if !seen[m.ID] {
						seen[m.ID] = true
						remove = append(remove, m)
					}
				}
			} else {
				var chosen []*format.Manifest
				for _, m := range backups {
					if f.filter().Match(m) {
						chosen = append(chosen, m)
					}
				}
				for _, d := range repo.ApplyPolicy(chosen, pol) {
					if d.Keep {
						res.Keep = append(res.Keep, backupOf(d.Backup))
					} else {
						remove = append(remove, d.Backup)
					}
				}
			}
			ids := make([]string, len(remove))
			for i, m := range remove {
				ids[i] = m.ID
				res.Remove = append(res.Remove, backupOf(m))
			}
			if dryRun {
				return nil
			}
			return r.Forget(ctx, ids)
		})
		if err != nil {
			return err
		}
		if prune && !dryRun {
			pr, err := ra.prune(ctx, repo.PruneOptions{})
			if err != nil {
				return err
			}
			res.Prune = pr
		}
		return ra.print(res, func() {
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			fmt.Fprintf(ra.stdout, "keeping %s, %s %d\n", plural(len(res.Keep), "backup", "backups"), verb, len(res.Remove))
			for _, b := range res.Remove {
				fmt.Fprintf(ra.stdout, "  %s %s %s %s\n", verb, b.ID, showTime(b.CreatedAt), strings.Join(b.Paths, " "))
			}
			if res.Prune != nil {
				printPrune(ra, res.Prune, false)
			}
		})
	})
	return cmd
}

func (ra *repoApp) prune(ctx context.Context, opts repo.PruneOptions) (*repo.PruneResult, error) {
	var res *repo.PruneResult
	err := ra.locked(ctx, lockExclusive, "prune", func(r *repo.Repository) error {
		prog, finish := ra.repoProgress("prune")
		opts.Progress = prog
		var err error
		res, err = r.Prune(ctx, opts)
		finish()
		return err
	})
	return res, err
}

func printPrune(ra *repoApp, res *repo.PruneResult, dryRun bool) {
	verb := "freed"
	if dryRun {
		verb = "would free"
	}
	fmt.Fprintf(ra.stdout, "prune: %s: %d removed, %d repacked, %d left over removed; %s unused; %s %s\n",
		plural(res.Packs, "pack", "packs"), res.PacksDeleted, res.PacksRepacked, res.PacksLeftover,
		plural(res.BlobsRemoved, "blob", "blobs"), verb, core.FormatSize(res.BytesFreed))
}

func (ra *repoApp) pruneCommand() *cobra.Command {
	var (
		dryRun    bool
		maxUnused float64
	)
	cmd := &cobra.Command{Use: "prune", Short: "Remove data no backup needs (takes the exclusive lock)", Args: cobra.NoArgs}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be done")
	cmd.Flags().Float64Var(&maxUnused, "max-unused", 10, "repack packs with more than this percentage of unused bytes")
	cmd.RunE = ra.run(func(ctx context.Context, _ []string) error {
		if maxUnused <= 0 || maxUnused > 100 {
			return core.Invalid("--max-unused must be above 0 and at most 100")
		}
		res, err := ra.prune(ctx, repo.PruneOptions{DryRun: dryRun, MaxUnusedPercent: maxUnused})
		if err != nil {
			return err
		}
		return ra.print(res, func() { printPrune(ra, res, dryRun) })
	})
	return cmd
}

func (ra *repoApp) statsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "stats", Short: "Sizes: logical, stored, dedup ratio, and what each backup alone holds", Args: cobra.NoArgs}
	ra.addNoLock(cmd)
	cmd.RunE = ra.run(func(ctx context.Context, _ []string) error {
		return ra.locked(ctx, lockReading, "stats", func(r *repo.Repository) error {
			st, err := r.Stats(ctx)
			if err != nil {
				return err
			}
			return ra.print(st, func() {
				fields(ra.stdout,
					"Backups", strconv.Itoa(st.Backups),
					"Logical size", core.FormatSize(st.LogicalBytes),
					"Stored size", core.FormatSize(st.StoredBytes),
					"Unique data", core.FormatSize(st.UniqueBytes)+" in "+strconv.Itoa(st.Blobs)+" blobs",
					"Dedup ratio", fmt.Sprintf("%.2fx", st.DedupRatio),
				)
				rows := [][]string{}
				for _, b := range st.PerBackup {
					rows = append(rows, []string{shortID(b.ID), core.FormatSize(b.LogicalBytes), core.FormatSize(b.OnlyBytes)})
				}
				if len(rows) > 0 {
					fmt.Fprintln(ra.stdout)
					table(ra.stdout, []string{"BACKUP", "SIZE", "ONLY IN IT"}, rows)
				}
			})
		})
	})
	return cmd
}

// parseReadData reads --read-data: "" is 0 (structure only), "N%" or "N" a
// share of the packs above 0 and at most 100.
func parseReadData(v string) (float64, error) {
	if v == "" {
		return 0, nil
	}
	pct, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || pct <= 0 || pct > 100 {
		return 0, core.Invalid("invalid --read-data %q: give a percentage above 0 and at most 100, such as 10%%", v)
	}
	return pct, nil
}
