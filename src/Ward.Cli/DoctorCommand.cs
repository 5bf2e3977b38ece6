using System.CommandLine;
using Spectre.Console;
using Ward.Core.Audit;
using Ward.Core.Backup;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Cli;

/// <summary><c>ward doctor</c>: what an operator should fix on a node, before an incident shows it.</summary>
internal static partial class Commands
{
    private static Command Doctor()
    {
        var data = DataOption();
        var cmd = new Command("doctor", "Check the node's setup: key permissions, database, audit checkpoints (and that the database did not lose data or roll back: "
            + "its audit log extends the node's high-water mark), recovery key kept offline, backups configured and recent. "
            + "Exit status 0 when nothing needs attention, 1 otherwise.") { data };
        cmd.SetAction(pr => Run(() =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            // Ok null: a notice, which needs no attention.
            var findings = new List<(bool? Ok, string Text)>();
            void Check(bool? ok, string text) => findings.Add((ok, text));

            var keys = config.Resolve("keys");
            if (!OperatingSystem.IsWindows())
            {
                var mode = File.GetUnixFileMode(keys);
                Check((mode & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute)) == 0,
                    $"key folder {keys} is private to its owner (0700)");
            }
            using (var store = RecordStore.Open(config))
            {
                Check(true, $"database {store.Location} opens with the master key (schema {store.TryGetSchemaVersion()})");
                var (size, checkpoint) = store.Read(s => (s.AuditSize(), s.AuditLatestCheckpoint()?.Size));
                Check(checkpoint == size, checkpoint == size ? $"audit log: {size:N0} entries, all under a signed checkpoint"
                    : $"audit log: {size:N0} entries, the latest checkpoint covers {checkpoint ?? 0:N0} (a running node signs every second; 'ward audit verify' checks it)");
                var nodeKey = config.Resolve(NodeKey.KeyFile);
                if (File.Exists(nodeKey))
                {
                    using var signer = SignedNote.Signer.Parse(File.ReadAllText(nodeKey).Trim());
                    var mark = store.Read(s => AuditHighWater.Of(config).Check(s, signer.Verifier));
                    Check(mark.Ok, mark.Text);
                }
                else
                {
                    Check(false, $"the node key {nodeKey} is missing: the audit checkpoints cannot be checked; restore it from the node's backup");
                }
            }
            var recovery = config.Resolve(RecoveryKey.PrivateFile);
            Check(!File.Exists(recovery), File.Exists(recovery)
                ? $"the recovery key is still on this machine ({recovery}): move it offline and delete it here; whoever holds it can open every backup"
                : "the recovery key is not on this machine");
            var recoveryPublic = RecoveryKey.TryLoadPublic(config);
            Check(recoveryPublic is not null, recoveryPublic is not null
                ? $"backups are sealed to recovery key {RecoveryKey.IdOf(recoveryPublic)}"
                : $"no recovery key: backups cannot be made. Create one with: ward keys new-recovery --data {config.DataDir}");
            if (config.Backup.Target is not { } target)
            {
                Check(false, "no scheduled backups: set backup: target: (and interval-minutes:) in ward.yaml, or run 'ward backup create' from a scheduler");
            }
            else if (!File.Exists(Path.Combine(target, BackupTarget.VerifierFile)))
            {
                Check(false, $"no backup on the target {target} yet (or it is not mounted)");
            }
            else
            {
                var t = BackupTarget.Open(target);
                var latest = t.Snapshots().LastOrDefault();
                try
                {
                    var manifest = latest is null ? null : t.ReadManifest(latest, t.Verifier()).Manifest;
                    var age = manifest is null ? (TimeSpan?)null : DateTimeOffset.UtcNow - manifest.Created;
                    Check(age is { } a && a <= TimeSpan.FromMinutes(2 * config.Backup.IntervalMinutes), age is null
                        ? $"no snapshot on the target {target} yet"
                        : $"latest backup {manifest!.Snapshot}, {age.Value.TotalHours:N1} hours ago (interval {config.Backup.IntervalMinutes} minutes)");
                }
                catch (BackupDamageException e)
                {
                    Check(false, $"the latest backup is damaged: {e.Message} Run 'ward backup verify --target {target}'.");
                }
            }
            if (config.Tls.Certificate is { } cert && File.Exists(config.Resolve(cert)))
            {
                using var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(config.Resolve(cert)));
                var days = (certificate.NotAfter.ToUniversalTime() - DateTime.UtcNow).TotalDays;
                Check(days > 30, $"TLS certificate valid for {days:N0} more days");
            }
            foreach (var (ok, text) in findings)
            {
                AnsiConsole.MarkupLine(ok switch { true => "  [green]ok[/]    ", false => "  [yellow]WARN[/]  ", null => "  note  " } + Cell(text));
            }
            var warnings = findings.Count(f => f.Ok == false);
            AnsiConsole.MarkupLine(warnings == 0 ? "[green]Nothing needs attention.[/]" : $"[yellow]{warnings} things need attention.[/]");
            return warnings == 0 ? 0 : 1;
        }));
        return cmd;
    }
}
