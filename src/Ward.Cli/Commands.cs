using System.CommandLine;
using Spectre.Console;
using Ward.Core.Audit;
using Ward.Core.Crypto;
using Ward.Core.Fhir;
using Ward.Core.Search;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Core.Transfer;
using Ward.Server;
using Ward.Server.Identity;

namespace Ward.Cli;

/// <summary>The <c>ward</c> command line.</summary>
internal static partial class Commands
{
    private static Option<string> DataOption(bool required = true) => new("--data", "-d")
    {
        Description = "The node's data folder (configuration, keys, database).",
        Required = required,
    };

    public static RootCommand Build()
    {
        var root = new RootCommand("Ward: a sovereign, security-by-design health data node (FHIR R4).");
        root.Add(Init());
        root.Add(Serve());
        root.Add(Import());
        root.Add(Export());
        root.Add(Demo());
        root.Add(Keys());
        root.Add(Patient());
        root.Add(Deid());
        root.Add(Users());
        root.Add(Clients());
        root.Add(Token());
        root.Add(Verify());
        root.Add(Audit());
        root.Add(Backup());
        root.Add(Doctor());
        root.Add(PolicyCommand());
        root.Add(DicomCommand());
        root.Add(BreakGlassCommand());
        root.Add(ResearchCommand());
        return root;
    }

    private static Command Keys()
    {
        var data = DataOption();
        var rotate = new Command("rotate-master", "Replace the master key: re-wrap every data key under a new one, safely while the node serves. "
            + "The old key file is replaced only after the database has switched; an interrupted rotation is resolved at the next start.") { data };
        rotate.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var result = await KeyAdmin.RotateMasterAsync(store, ct);
            await AuditAdminAsync(config, "key-rotate", 'U', $"master-key/{result.NewKeyId}", open: store);
            AnsiConsole.MarkupLineInterpolated($"[green]Master key rotated[/]: {result.OldKeyId} -> {result.NewKeyId}; {result.DataKeys:N0} data keys re-wrapped.");
            AnsiConsole.MarkupLineInterpolated($"New key in {config.MasterKeyPath}; the old key is gone from this node. Replace your offline copy now.");
            return 0;
        }));
        var recoveryData = DataOption();
        var recovery = new Command("new-recovery", "Create a new recovery key (DIR/recovery.key, to move offline at once) for a node that has none or has lost it. "
            + "Later backups are sealed to it; earlier ones still need the key they were sealed to.") { recoveryData };
        recovery.SetAction(pr => Run(() =>
        {
            var config = NodeConfig.Load(pr.GetValue(recoveryData)!);
            if (File.Exists(config.Resolve(Ward.Core.Backup.RecoveryKey.PrivateFile)))
            {
                throw new NodeException($"{config.Resolve(Ward.Core.Backup.RecoveryKey.PrivateFile)} is still here: move the current recovery key offline first (it opens the backups made so far).");
            }
            using var store = RecordStore.Open(config);
            using var signer = NodeKey.LoadOrCreate(config, store);
            var previous = config.Resolve(Ward.Core.Backup.RecoveryKey.PublicFile);
            if (File.Exists(previous))
            {
                File.Move(previous, previous + ".replaced-" + DateTimeOffset.UtcNow.ToString("yyyyMMddTHHmmssZ", System.Globalization.CultureInfo.InvariantCulture));
            }
            var path = Ward.Core.Backup.RecoveryKey.Create(config, signer.Verifier.VKey);
            AuditAdminAsync(config, "key-recovery", 'C', "recovery-key", open: store).GetAwaiter().GetResult();
            PrintRecoveryKey(path);
            return 0;
        }));
        return new Command("keys", "Manage the node's keys.") { rotate, recovery };
    }

    private static Command Deid()
    {
        var input = new Option<string>("--input") { Description = "The table to release: CSV with a header line.", Required = true };
        var sep = new Option<string>("--sep") { Description = "Field separator (one character) of the table and the hierarchies.", DefaultValueFactory = _ => ";" };
        sep.Validators.Add(r => { if (r.GetValueOrDefault<string>() is not { Length: 1 }) r.AddError("--sep takes one character, such as ';' or ','."); });
        var hierarchies = new Option<string>("--hierarchies") { Description = "Folder of generalisation hierarchies, <prefix>_hierarchy_<column>.csv (one row per value, one column per level).", Required = true };
        var qi = new Option<string>("--qi") { Description = "Quasi-identifying columns, comma-separated.", Required = true };
        var k = new Option<int>("--k") { Description = "Every released record shares its quasi-identifiers with at least k-1 others.", Required = true };
        var l = new Option<int>("--l") { Description = "Distinct l-diversity of the sensitive column in every class.", DefaultValueFactory = _ => 1 };
        var t = new Option<double?>("--t") { Description = "t-closeness (earth mover's distance, equal ground distance) of the sensitive column in every class." };
        var sensitive = new Option<string?>("--sensitive") { Description = "The sensitive column (for --l and --t)." };
        var suppression = new Option<double>("--suppression") { Description = "Largest fraction of records that may be suppressed (0 to 1).", DefaultValueFactory = _ => 0d };
        var metric = new Option<string>("--metric") { Description = "Information loss to minimise: loss (ARX's default), entropy, dm, aecs, height, precision.", DefaultValueFactory = _ => "loss" };
        metric.AcceptOnlyFromAmong("loss", "entropy", "dm", "aecs", "height", "precision");
        var output = new Option<string>("--out") { Description = "Where to write the released table.", Required = true };
        var report = new Option<string>("--report") { Description = "Where to write the JSON report (levels, loss, suppression, classes, risk before and after).", Required = true };
        var kanon = new Command("kanon", "Release a table under k-anonymity (optionally l-diversity, t-closeness) with the optimal full-domain generalisation "
            + "and record suppression, and report the re-identification risk before and after.")
            { input, sep, hierarchies, qi, k, l, t, sensitive, suppression, metric, output, report };
        kanon.SetAction(pr => Run(() =>
        {
            // A batch computation: throughput over pause times (no background GC).
            System.Runtime.GCSettings.LatencyMode = System.Runtime.GCLatencyMode.Batch;
            var settings = new Ward.Core.Privacy.TableSettings(pr.GetValue(input)!, pr.GetValue(sep)![0], pr.GetValue(hierarchies)!,
                pr.GetValue(qi)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                new Ward.Core.Privacy.PrivacyModel(pr.GetValue(k), pr.GetValue(suppression), pr.GetValue(l), pr.GetValue(t)),
                Enum.Parse<Ward.Core.Privacy.LossMetric>(pr.GetValue(metric)!, ignoreCase: true), pr.GetValue(output)!, pr.GetValue(report)!, pr.GetValue(sensitive));
            var o = Ward.Core.Privacy.TableAnonymization.Run(settings);
            AnsiConsole.MarkupLineInterpolated($"[green]Released[/] {settings.Output}: levels {string.Join(", ", o.Columns.Select((c, i) => $"{c} {o.Best.Levels[i]}"))}");
            AnsiConsole.MarkupLineInterpolated($"{settings.Metric.ToString().ToLowerInvariant()} = {o.Best.Value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}; {o.Best.Suppressed:N0} records suppressed; {o.Best.ClassSizes.Length:N0} classes; highest prosecutor risk {o.Before.HighestProsecutor:P1} -> {o.After.HighestProsecutor:P1}");
            AnsiConsole.MarkupLineInterpolated($"{o.Evaluated:N0} of {o.LatticeSize:N0} transformations evaluated ({(o.Optimal ? "proven optimum" : "heuristic: lattice too large to search exhaustively")}); report in {settings.Report}");
            return 0;
        }));
        return new Command("deid", "De-identification for research.") { kanon };
    }

    private static Command Patient()
    {
        var data = DataOption();
        var patient = new Option<string>("--patient") { Description = "The patient to erase, as Patient/ID.", Required = true };
        var reason = new Option<string>("--reason") { Description = "Why (for example the reference of the patient's request); kept with the erasure record.", Required = true };
        var erase = new Command("erase", "Crypto-shredding: destroy the patient's data key and index entries. Every version of the patient's records becomes unreadable, for good; "
            + "reads answer 410 and searches no longer find them. Safe while the node serves.") { data, patient, reason };
        erase.SetAction((pr, ct) => RunAsync(async () =>
        {
            var reference = pr.GetValue(patient)!;
            if (!ReferenceParser.TryParseLocal(reference, out var type, out var id) || type != "Patient")
            {
                throw new NodeException($"--patient must name a patient as Patient/ID, not '{reference}'.");
            }
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var tag = Ward.Core.Backup.BackupKeys.LoadOrCreate(config).ErasureTag(id);
            var result = await KeyAdmin.EraseAsync(store, id, pr.GetValue(reason)!, TimeProvider.System, ct, tag);
            await AuditAdminAsync(config, "erase", 'D', $"Patient/{id}", patient: id, open: store);
            RecordErasureOnTarget(config, store, tag);
            AnsiConsole.MarkupLineInterpolated($"[green]Patient/{id} erased[/]: data key {result.Kid} destroyed; {result.Resources:N0} resources ({result.Versions:N0} versions) can no longer be read.");
            AnsiConsole.MarkupLineInterpolated($"The erasure is listed in {KeyAdmin.ErasureLedgerPath(store.Keys)} (no patient identifier); a restore from an older backup erases the patient again (docs/RECOVERY.md).");
            if (store.Engine == StoreEngine.Postgres)
            {
                AnsiConsole.MarkupLine("[yellow]PostgreSQL keeps copies of the destroyed (wrapped) key in its write-ahead log, WAL archives and base backups until they are recycled. "
                    + "Run 'ward keys rotate-master' now: it makes every such copy useless.[/]");
            }
            return 0;
        }));
        return new Command("patient", "Patient rights operations.") { erase };
    }

    /// <summary>Tells the backup target at once (when one is configured), so that a restore of an older snapshot erases the patient again.</summary>
    private static void RecordErasureOnTarget(NodeConfig config, RecordStore store, string tag)
    {
        if (config.Backup.Target is not { } target)
        {
            return;
        }
        try
        {
            using var signer = NodeKey.LoadOrCreate(config, store);
            Ward.Core.Backup.BackupTarget.OpenFor(target, signer.Verifier).RecordErasure(signer, tag, DateTimeOffset.UtcNow);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NodeException)
        {
            AnsiConsole.MarkupLineInterpolated($"[yellow]The backup target could not be told of the erasure ({Safe(e.Message)}); the next backup will carry it.[/]");
        }
    }

    private static void PrintRecoveryKey(string path)
    {
        AnsiConsole.MarkupLineInterpolated($"  recovery key   {path}");
        AnsiConsole.MarkupLine("  [yellow]Move the recovery key offline NOW (a safe, a vault, a USB key in a locked drawer) and delete it from this machine: "
            + "it opens every backup of this node, and a restore on a new machine needs it. The node never needs it to run; 'ward doctor' warns while it is here.[/]");
    }

    private static Command Init()
    {
        var data = DataOption();
        var name = new Option<string>("--name") { Description = "Node name (used in audit checkpoints and certificates).", DefaultValueFactory = _ => "ward" };
        var database = new Option<string?>("--database")
        {
            Description = "Keep the records in PostgreSQL instead of the embedded SQLite file: an Npgsql connection string such as "
                + "\"Host=db.example;Database=ward;Username=ward\". No password in it: PGPASSWORD, or a password file (Passfile=..., PGPASSFILE, ~/.pgpass). "
                + "The database must exist and be empty.",
        };
        var cmd = new Command("init", "Create a node: configuration file, key folder (0700) with a development TLS certificate, and an empty database.") { data, name, database };
        cmd.SetAction(pr => Run(() =>
        {
            var dir = pr.GetValue(data)!;
            var fresh = !Directory.Exists(dir) || !Directory.EnumerateFileSystemEntries(dir).Any();
            var config = NodeConfig.Init(dir, pr.GetValue(name)!, pr.GetValue(database));
            string location;
            try
            {
                using var store = RecordStore.Open(config, create: true);
                location = store.Location;
                Ward.Server.Identity.OidcKeys.Load(config);
            }
            catch when (fresh)
            {
                // Leave nothing half-made behind: the operator fixes the database and runs the same command again.
                Directory.Delete(config.DataDir, recursive: true);
                throw;
            }
            AnsiConsole.MarkupLineInterpolated($"[green]Created a Ward node in[/] {config.DataDir}");
            AnsiConsole.MarkupLineInterpolated($"  configuration  {Path.Combine(config.DataDir, NodeConfig.FileName)}");
            AnsiConsole.MarkupLineInterpolated($"  database       {location} (records encrypted per patient)");
            AnsiConsole.MarkupLineInterpolated($"  master key     {config.MasterKeyPath}");
            AnsiConsole.MarkupLine("  [yellow]Keep an offline copy of the master key: without it the records cannot be read.[/]");
            PrintRecoveryKey(config.Resolve(Ward.Core.Backup.RecoveryKey.PrivateFile));
            AnsiConsole.MarkupLineInterpolated($"  TLS            {config.Resolve(config.Tls.Certificate!)} (self-signed, for development)");
            AnsiConsole.MarkupLineInterpolated($"  token keys     {config.Resolve("keys")}/oidc-signing.pem, oidc-encryption.key");
            AnsiConsole.MarkupLine("Add people with 'ward users add' and applications with 'ward clients add'; every FHIR request needs an access token.");
            AnsiConsole.MarkupLineInterpolated($"Next: ward serve --data {pr.GetValue(data)}");
            return 0;
        }));
        return cmd;
    }

    private static Command Import()
    {
        var data = DataOption();
        var paths = new Argument<string[]>("paths") { Description = "FHIR Bundle JSON files, NDJSON files, or folders (searched recursively).", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("import", "Load FHIR Bundles (batch/transaction) and NDJSON into the node, through the same transaction code as the API. Safe while 'ward serve' runs.") { data, paths };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var summary = await ImportAsync(config, store, pr.GetValue(paths)!, ct);
            return summary.Errors.Count == 0 ? 0 : 1;
        }));
        return cmd;
    }

    internal static async Task<ImportSummary> ImportAsync(NodeConfig config, RecordStore store, IEnumerable<string> paths, CancellationToken ct)
    {
        await using var audit = AuditLog.Open(config, store);
        var files = Importer.Expand(paths);
        ImportSummary summary = null!;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask($"Importing {files.Count} files", maxValue: Math.Max(1, files.Count));
                var watch = System.Diagnostics.Stopwatch.StartNew();
                var progress = new Progress<ImportProgress>(p =>
                {
                    task.MaxValue = p.FilesTotal;
                    task.Value = p.FilesDone;
                    var rate = p.Resources / Math.Max(0.001, watch.Elapsed.TotalSeconds);
                    task.Description = $"{p.Resources:N0} resources, {rate:N0}/s";
                });
                summary = await new Importer(new FhirEngine(store, audit, TimeProvider.System)).ImportAsync(files, progress, ct);
                await audit.CheckpointAsync(ct);
                task.Value = task.MaxValue;
            });
        var table = new Table().AddColumns("Resource type", "Created", "Updated", "Already present", "Failed");
        foreach (var (type, (created, updated, present, failed)) in summary.ByType)
        {
            table.AddRow(Cell(type), created.ToString("N0"), updated.ToString("N0"), present.ToString("N0"), failed.ToString("N0"));
        }
        AnsiConsole.Write(table);
        var rate = summary.Resources / Math.Max(0.001, summary.Elapsed.TotalSeconds);
        AnsiConsole.MarkupLineInterpolated($"Imported {summary.Resources:N0} resources from {files.Count} files in {summary.Elapsed.TotalSeconds:N1} s ({rate:N0} resources/s); {summary.AlreadyPresent:N0} already present.");
        foreach (var error in summary.Errors.Take(20))
        {
            AnsiConsole.MarkupLineInterpolated($"[red]error[/] {Safe(error)}");
        }
        if (summary.Errors.Count > 20)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]... and {summary.Errors.Count - 20} more errors.[/]");
        }
        return summary;
    }

    private static Command Export()
    {
        var data = DataOption();
        var output = new Option<string>("--out", "-o") { Description = "Folder for the NDJSON files (one per resource type).", Required = true };
        var cmd = new Command("export", "Write the current version of every resource as NDJSON, one file per type (Bulk Data layout).") { data, output };
        cmd.SetAction(pr => Run(() =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var counts = Exporter.Export(store, pr.GetValue(output)!);
            var table = new Table().AddColumns("File", "Resources");
            foreach (var (type, n) in counts)
            {
                table.AddRow(Cell(type + ".ndjson"), n.ToString("N0"));
            }
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLineInterpolated($"Exported {counts.Values.Sum():N0} resources to {Path.GetFullPath(pr.GetValue(output)!)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Text from a caller or from the data as a table cell: terminal controls escaped (<see cref="TerminalText"/>), then Spectre's markup.</summary>
    private static string Cell(string? text) => Markup.Escape(TerminalText.Escape(text));

    /// <summary>Text from a caller or from the data in an interpolated line (Spectre escapes the markup of interpolated values itself).</summary>
    private static string Safe(string? text) => TerminalText.Escape(text);

    /// <summary>An error message (several lines at times, caller text inside) for the terminal: see <see cref="TerminalText.EscapeLines"/>.</summary>
    private static string SafeLines(string? text) => TerminalText.EscapeLines(text);

    /// <summary>A file the operator named as input: a folder, or nothing, at that path is refused with what was expected.</summary>
    private static string InputFile(string path, string what) => File.Exists(path) ? path
        : throw new NodeException(Directory.Exists(path) ? $"{path} is a folder: give the {what} file." : $"No {what} file at {path}.");
}
