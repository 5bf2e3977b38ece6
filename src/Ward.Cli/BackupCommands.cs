using System.CommandLine;
using Spectre.Console;
using Ward.Core.Audit;
using Ward.Core.Backup;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Cli;

/// <summary><c>ward backup</c>: encrypted, signed, deduplicated snapshots on an append-only target; verification and restore.</summary>
internal static partial class Commands
{
    private static Option<string> TargetOption(bool required = true) => new("--target", "-t")
    {
        Description = "The backup target folder (ideally a mount where this node may only add files: another machine, WORM or object-locked storage).",
        Required = required,
    };

    private static Option<string?> RecoveryKeyOption() => new("--recovery-key")
    {
        Description = "The node's recovery key file (written by 'ward init' as DIR/recovery.key, then kept offline).",
    };

    private static Option<string?> NodeKeyOption() => new("--key")
    {
        Description = "The node's public key (C2SP vkey, as in keys/node.vkey) to trust instead of the one on the target; by default the recovery key file's pinned key.",
    };

    private static Command Backup()
    {
        var backup = new Command("backup", "Encrypted, signed, deduplicated backups to an append-only target; verification, restore and pruning.");
        backup.Add(BackupCreate());
        backup.Add(BackupList());
        backup.Add(BackupVerify());
        backup.Add(BackupRestore());
        backup.Add(BackupPrune());
        return backup;
    }

    private static Command BackupCreate()
    {
        var data = DataOption();
        var target = TargetOption(required: false);
        var cmd = new Command("create", "Back the node up while it serves: a consistent copy of the database cut into content-defined chunks, only new ones stored, "
            + "each sealed with AES-256-GCM; the node's keys sealed to the recovery key; a manifest signed with the node key, with the audit checkpoint. "
            + "The node only adds files to the target.") { data, target };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            var dir = pr.GetValue(target) ?? config.Backup.Target
                ?? throw new NodeException("Name the backup target: --target DIR, or backup: target: in ward.yaml.");
            using var store = RecordStore.Open(config);
            BackupResult result = null!;
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new TransferSpeedColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("Backing up", maxValue: 1);
                    var progress = new Progress<(long Done, long Total)>(p =>
                    {
                        task.MaxValue = Math.Max(1, p.Total);
                        task.Value = p.Done;
                    });
                    result = await BackupWriter.CreateAsync(config, store, dir, TimeProvider.System, progress, ct);
                    task.Value = task.MaxValue;
                });
            await AuditAdminAsync(config, "backup", 'E', $"backup/{result.Manifest.Snapshot}", open: store);
            var m = result.Manifest;
            foreach (var warning in result.Warnings)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]warning:[/] {Safe(warning)}");
            }
            AnsiConsole.MarkupLineInterpolated($"[green]Snapshot {m.Snapshot}[/] written to {Path.GetFullPath(dir)}");
            AnsiConsole.MarkupLineInterpolated($"  data       {Describe(result.SourceBytes)} (the database, schema {m.SchemaVersion}, and {m.Files.Count - 1} blob files), {m.Stats.Chunks:N0} chunks, {m.Stats.NewChunks:N0} new");
            AnsiConsole.MarkupLineInterpolated($"  added      {Describe(m.Stats.NewBytes + result.ManifestBytes)} ({(m.Stats.NewBytes + result.ManifestBytes) * 100.0 / Math.Max(1, result.SourceBytes):N1} % of the data) in {m.Stats.Seconds:N1} s ({result.SourceBytes / Math.Max(0.001, m.Stats.Seconds) / (1 << 20):N0} MiB/s)");
            AnsiConsole.MarkupLineInterpolated($"  audit log  {m.AuditEntries} entries under the checkpoint in the manifest");
            AnsiConsole.MarkupLineInterpolated($"  keys       sealed to recovery key {m.RecoveryKey}");
            return 0;
        }));
        return cmd;
    }

    private static Command BackupList()
    {
        var target = TargetOption();
        var cmd = new Command("list", "List the snapshots on a backup target (manifests whose signature verifies).") { target };
        cmd.SetAction(pr => Run(() =>
        {
            var t = BackupTarget.Open(pr.GetValue(target)!);
            var verifier = t.Verifier();
            var table = new Table().AddColumns("Snapshot", "Created (UTC)", "Database", "New bytes", "Audit entries", "Recovery key");
            foreach (var id in t.Snapshots())
            {
                try
                {
                    var (m, _) = t.ReadManifest(id, verifier);
                    table.AddRow(m.Snapshot, m.Created.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture),
                        Describe(m.Files.Sum(f => f.Size)), Describe(m.Stats.NewBytes), m.AuditEntries, m.RecoveryKey);
                }
                catch (BackupDamageException e)
                {
                    table.AddRow(Cell(id), "[red]damaged[/]", "", "", "", Cell(e.Message));
                }
            }
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLineInterpolated($"Node key {verifier.VKey}");
            return 0;
        }));
        return cmd;
    }

    private static Command BackupVerify()
    {
        var target = TargetOption();
        var deep = new Option<bool>("--deep") { Description = "Also restore the snapshot into a scratch folder with the recovery key and run every check of 'ward verify' on it." };
        var snapshot = new Option<string>("--snapshot") { Description = "With --deep: the snapshot to restore (an id, or latest).", DefaultValueFactory = _ => "latest" };
        var recoveryKey = RecoveryKeyOption();
        var key = NodeKeyOption();
        var cmd = new Command("verify", "Check a backup target: every manifest's signature and chain, the sealed keys' hashes, every pack against its hash, every chunk "
            + "inside its pack. Exit status 0 only when intact.") { target, deep, snapshot, recoveryKey, key };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var t = BackupTarget.Open(pr.GetValue(target)!);
            var (recovery, pinned) = pr.GetValue(recoveryKey) is { } file ? RecoveryKey.Read(file) : (null, null);
            pinned = pr.GetValue(key) ?? pinned;
            var problems = BackupReader.Verify(t, t.Verifier(pinned), id => AnsiConsole.MarkupLineInterpolated($"  [green]checked[/] snapshot {id}"));
            if (pr.GetValue(deep))
            {
                if (recovery is null)
                {
                    throw new NodeException("--deep restores the snapshot, which needs the recovery key: --recovery-key FILE.");
                }
                var id = t.Resolve(pr.GetValue(snapshot)!);
                try
                {
                    var report = await BackupReader.DeepVerifyAsync(t, id, recovery, pinned, ct);
                    problems.AddRange(report.Problems.Select(p => $"snapshot {id} restored: {p}"));
                    if (report.Intact)
                    {
                        AnsiConsole.MarkupLineInterpolated($"  [green]checked[/] snapshot {id} restored in full, then:");
                        foreach (var line in report.Checked)
                        {
                            AnsiConsole.MarkupLineInterpolated($"    [green]checked[/] {Safe(line)}");
                        }
                    }
                }
                catch (BackupDamageException e)
                {
                    problems.Add(e.Message);
                }
            }
            foreach (var problem in problems)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]DAMAGED[/] {Safe(problem)}");
            }
            if (problems.Count > 0)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]The backup target is damaged: {problems.Count} problems.[/]");
                return 1;
            }
            AnsiConsole.MarkupLine("[green]The backups are intact.[/]");
            return 0;
        }));
        return cmd;
    }

    private static Command BackupRestore()
    {
        var target = TargetOption();
        var snapshot = new Option<string>("--snapshot") { Description = "The snapshot to restore: an id (or a unique prefix), or latest.", DefaultValueFactory = _ => "latest" };
        var data = new Option<string>("--data", "-d") { Description = "The new node folder (must not exist, or be empty).", Required = true };
        var recoveryKey = RecoveryKeyOption();
        var key = NodeKeyOption();
        var cmd = new Command("restore", "Restore a snapshot into a new node folder with the recovery key: keys and configuration, the database rebuilt and checked chunk "
            + "by chunk, the audit log checked against the manifest's checkpoint, and every patient erased since destroyed again.") { target, snapshot, data, recoveryKey, key };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var file = pr.GetValue(recoveryKey)
                ?? throw new NodeException("A restore needs the recovery key: --recovery-key FILE. The backup target alone cannot be read, by design: "
                    + "the node's keys in it are sealed to that key, kept offline since 'ward init'.");
            var (recovery, pinned) = RecoveryKey.Read(file);
            var t = BackupTarget.Open(pr.GetValue(target)!);
            var id = t.Resolve(pr.GetValue(snapshot)!);
            RestoreResult result = null!;
            try
            {
                await AnsiConsole.Progress()
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new TransferSpeedColumn())
                    .StartAsync(async ctx =>
                    {
                        var task = ctx.AddTask($"Restoring {id}", maxValue: 1);
                        var progress = new Progress<(long Done, long Total)>(p =>
                        {
                            task.MaxValue = Math.Max(1, p.Total);
                            task.Value = p.Done;
                        });
                        result = await BackupReader.RestoreAsync(t, id, pr.GetValue(data)!, recovery, pr.GetValue(key) ?? pinned, TimeProvider.System, progress, ct,
                            finish: async restored =>
                            {
                                // In the restored node's own log, before it takes the data folder's name.
                                using var store = RecordStore.Open(restored.Config);
                                await AuditAdminAsync(restored.Config, "restore", 'C', $"backup/{id}", open: store);
                                foreach (var patient in restored.Erased)
                                {
                                    await AuditAdminAsync(restored.Config, "erase", 'D', $"Patient/{patient}", patient: patient, open: store);
                                }
                            });
                        task.Value = task.MaxValue;
                    });
            }
            catch (BackupDamageException e)
            {
                // Not a check that found damage (that is 'ward backup verify', exit 1): a restore that could not be done.
                throw new NodeException($"{e.Message} Nothing was restored.");
            }
            foreach (var warning in result.Warnings)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]warning:[/] {Safe(warning)}");
            }
            AnsiConsole.MarkupLineInterpolated($"[green]Restored snapshot {id}[/] (taken {result.Manifest.Created:u}) into {result.Config.DataDir}: {Describe(result.Bytes)} of data (the database and its blob files), audit log at the manifest's checkpoint ({result.Manifest.AuditEntries} entries).");
            if (result.Erased.Count > 0)
            {
                AnsiConsole.MarkupLineInterpolated($"{result.Erased.Count} patients erased after the snapshot were erased again.");
            }
            AnsiConsole.MarkupLineInterpolated($"Next: ward verify --data {pr.GetValue(data)}; then ward serve --read-only --data {pr.GetValue(data)} while the primary is rebuilt (docs/RECOVERY.md).");
            return 0;
        }));
        return cmd;
    }

    private static Command BackupPrune()
    {
        var target = TargetOption();
        var keep = new Option<int>("--keep") { Description = "How many of the latest snapshots to keep (1 or more).", Required = true };
        var recoveryKey = RecoveryKeyOption();
        var cmd = new Command("prune", "Delete all but the latest snapshots and the packs no kept snapshot uses. The node never deletes; this needs the recovery key "
            + "(run it from the machine that holds it, with the target's delete rights).") { target, keep, recoveryKey };
        cmd.SetAction(pr => Run(() =>
        {
            var file = pr.GetValue(recoveryKey) ?? throw new NodeException("Pruning needs the recovery key: --recovery-key FILE.");
            var (recovery, pinned) = RecoveryKey.Read(file);
            if (pr.GetValue(keep) < 1)
            {
                throw new NodeException("--keep must be 1 or more: the latest snapshot is always kept.");
            }
            var t = BackupTarget.Open(pr.GetValue(target)!);
            var result = BackupPruner.Prune(t, pr.GetValue(keep), recovery, pinned);
            AnsiConsole.MarkupLineInterpolated($"[green]Pruned[/]: {result.Snapshots:N0} snapshots and {result.Packs:N0} packs deleted ({Describe(result.Bytes)}); {result.Kept:N0} snapshots kept.");
            return 0;
        }));
        return cmd;
    }

    private static string Describe(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):N2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):N1} MiB",
        >= 1L << 10 => $"{bytes / 1024d:N1} KiB",
        _ => $"{bytes:N0} B",
    };
}
