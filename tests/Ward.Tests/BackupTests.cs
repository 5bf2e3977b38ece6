using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server;
using Ward.Server.Identity;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// A node loaded by <c>ward import</c> with 12 Synthea patients, backed up, given 4 more, backed up again. The tests
/// work on copies of its folder and of its target.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackedUpNode : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "ward-backup-" + Guid.NewGuid().ToString("N")[..8]);
    public string Node => Path.Combine(Root, "node");
    public string Target => Path.Combine(Root, "target");
    public string Sources => Path.Combine(Root, "synthea");

    /// <summary>The target's files after the first backup, with their SHA-256.</summary>
    public Dictionary<string, string> FirstBackupFiles { get; private set; } = [];

    /// <summary>Every stored version at the second snapshot: type/id/_history/version to SHA-256 of its stored bytes.</summary>
    public Dictionary<string, string> VersionsAtSecondSnapshot { get; private set; } = [];

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Sources);
        using (var tar = Process.Start(new ProcessStartInfo("tar", ["--zstd", "-xf", Path.Combine(TestData.Root, "synthea", "synthea-r4-small-blaze100.tar.zst"), "-C", Sources]) { RedirectStandardError = true })!)
        {
            await tar.WaitForExitAsync();
            Assert.True(tar.ExitCode == 0, "tar --zstd failed (install zstd): " + await tar.StandardError.ReadToEndAsync());
        }
        var files = Directory.EnumerateFiles(Sources, "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        var info = files.Where(f => Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)).ToList();
        var patients = files.Except(info).ToList();
        await Ok("init", "--data", Node, "--name", "drill");
        await Ok(["import", "--data", Node, .. info, .. patients.Take(12)]);
        await Ok("backup", "create", "--data", Node, "--target", Target);
        FirstBackupFiles = Hashes(Target);
        // With a scanned document too large for its row: the snapshot carries the blob files beside the database.
        await Ok(["import", "--data", Node, .. patients.Skip(12).Take(4), TestData.LargeDocumentBundle(Path.Combine(Root, "documents"))]);
        await Ok("backup", "create", "--data", Node, "--target", Target);
        VersionsAtSecondSnapshot = Versions(Path.Combine(Node, "ward.db"));
    }

    public static async Task<string> Ok(params string[] args)
    {
        var (code, output) = await WardProcess.OutputAsync(args);
        Assert.True(code == 0, $"ward {string.Join(' ', args.Take(3))}: exit {code}\n{output}");
        return output;
    }

    public static Dictionary<string, string> Hashes(string dir) => Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
        .ToDictionary(f => Path.GetRelativePath(dir, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    public static Dictionary<string, string> Versions(string db)
    {
        using var connection = new SqliteConnection($"Data Source={db};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT r.type, r.id, v.version, v.data FROM version v JOIN resource r ON r.rid = v.rid";
        using var reader = cmd.ExecuteReader();
        var versions = new Dictionary<string, string>();
        while (reader.Read())
        {
            var data = reader.IsDBNull(3) ? [] : (byte[])reader.GetValue(3);
            versions[$"{reader.GetString(0)}/{reader.GetString(1)}/_history/{reader.GetInt32(2)}"] = Convert.ToHexString(SHA256.HashData(data));
        }
        return versions;
    }

    /// <summary>A copy of the node folder and of the target, deleted with the returned scope.</summary>
    public Scratch Copy()
    {
        var scratch = new Scratch(Path.Combine(Path.GetTempPath(), "ward-backup-copy-" + Guid.NewGuid().ToString("N")[..8]));
        CopyDir(Node, scratch.Node);
        CopyDir(Target, scratch.Target);
        return scratch;
    }

    public static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)), File.GetUnixFileMode(dir));
        }
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var copy = Path.Combine(to, Path.GetRelativePath(from, file));
            File.Copy(file, copy);
            File.SetUnixFileMode(copy, File.GetUnixFileMode(file));
        }
    }

    public sealed class Scratch(string root) : IDisposable
    {
        public string Root { get; } = root;
        public string Node => Path.Combine(Root, "node");
        public string Target => Path.Combine(Root, "target");
        public string Restored => Path.Combine(Root, "restored");
        public string RecoveryKey => Path.Combine(Node, "recovery.key");

        /// <summary>Names the copied target in the copied node's ward.yaml (backup: target:).</summary>
        internal NodeConfig ConfigureTarget()
        {
            var config = NodeConfig.Load(Node);
            config.Backup.Target = Target;
            config.Save();
            return config;
        }

        public void Dispose()
        {
            if (Directory.Exists(Root))
            {
                Directory.Delete(Root, recursive: true);
            }
        }
    }

    public Task DisposeAsync()
    {
        Directory.Delete(Root, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>
/// Backups an attacker on the node can neither read, alter nor delete, and a restore that is proven: the recovery drill
/// of issue 9, with ransomware that overwrites every file of the node.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackupTests(BackedUpNode node) : IClassFixture<BackedUpNode>
{
    private static Task<string> Ok(params string[] args) => BackedUpNode.Ok(args);

    private static async Task<string> Fails(int expected, params string[] args)
    {
        var (code, output) = await WardProcess.OutputAsync(args);
        Assert.True(code == expected, $"ward {string.Join(' ', args.Take(3))}: exit {code}, expected {expected}\n{output}");
        return output;
    }

    [Fact]
    public async Task The_drill_restores_a_node_wiped_by_ransomware()
    {
        using var s = node.Copy();
        // Ransomware: every file of the node's folder overwritten with random bytes (the recovery key was kept offline).
        var offline = Path.Combine(s.Root, "offline-recovery.key");
        File.Move(s.RecoveryKey, offline);
        foreach (var file in Directory.EnumerateFiles(s.Node, "*", SearchOption.AllDirectories))
        {
            File.WriteAllBytes(file, RandomNumberGenerator.GetBytes((int)Math.Max(1, new FileInfo(file).Length)));
        }
        var wiped = await WardProcess.OutputAsync(["verify", "--data", s.Node]);
        Assert.NotEqual(0, wiped.Code);
        Assert.Contains("error", wiped.Output);

        var restore = await Ok("backup", "restore", "--target", s.Target, "--snapshot", "latest", "--data", s.Restored, "--recovery-key", offline);
        Assert.Contains("Restored snapshot", restore);
        Assert.Contains("The records and the audit log are intact.", await Ok("verify", "--data", s.Restored));
        await Ok("audit", "verify", "--data", s.Restored);
        Assert.True(new FileInfo(Path.Combine(s.Restored, "blobs", "00000001.blob")).Length > 100_000, "The blob file was not restored.");

        // Every resource and version up to the snapshot, by content hash.
        var restored = BackedUpNode.Versions(Path.Combine(s.Restored, "ward.db"));
        Assert.True(node.VersionsAtSecondSnapshot.Count > 5_000, $"{node.VersionsAtSecondSnapshot.Count} versions");
        Assert.Equal(node.VersionsAtSecondSnapshot, restored);

        // The restored log holds the checkpoint the manifest signed, at the snapshot's exact size.
        var manifest = Manifest(s.Target, "latest");
        var checkpoint = manifest.GetProperty("checkpoint").GetString()!;
        using var db = new SqliteConnection($"Data Source={Path.Combine(s.Restored, "ward.db")};Mode=ReadOnly;Pooling=False");
        db.Open();
        var size = long.Parse(checkpoint.Split('\n')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(checkpoint, TestNode.Scalar(db, "SELECT note FROM audit_checkpoint WHERE size = @s", ("@s", size)));
    }

    [Fact]
    public async Task An_incremental_backup_after_a_small_change_stores_under_5_percent_new_bytes()
    {
        using var s = node.Copy();
        var observation = Path.Combine(s.Root, "obs.json");
        File.WriteAllText(observation, """{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"valueQuantity":{"value":170,"unit":"cm"}}""");
        await Ok("import", "--data", s.Node, observation);
        var before = Size(s.Target);
        var output = await Ok("backup", "create", "--data", s.Node, "--target", s.Target);
        var added = Size(s.Target) - before;
        var database = new FileInfo(Path.Combine(s.Node, "ward.db")).Length;
        Assert.True(added < database * 0.05, $"{added:N0} new bytes for a {database:N0}-byte database\n{output}");
        Assert.True(added > 0);
    }

    private static long Size(string dir) => Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    [Fact]
    public void The_target_alone_reveals_nothing_and_only_ever_grows()
    {
        // What the first backup wrote is still there, byte for byte, after the second.
        var now = BackedUpNode.Hashes(node.Target);
        foreach (var (file, hash) in node.FirstBackupFiles)
        {
            Assert.True(now.TryGetValue(file, out var current) && current == hash, $"{file} was changed or removed");
        }
        Assert.True(now.Count > node.FirstBackupFiles.Count);

        // No plaintext of the database nor of the patients: names, identifiers and the SQLite structure are all sealed.
        var patient = JsonDocument.Parse(File.ReadAllBytes(Directory.EnumerateFiles(node.Sources, "*.json", SearchOption.AllDirectories)
            .Order(StringComparer.Ordinal).First(f => !Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal))));
        var resource = patient.RootElement.GetProperty("entry")[0].GetProperty("resource");
        var needles = new List<string> { "SQLite format 3", "CREATE TABLE", "resourceType", "Patient", "ward-master-key", "PRIVATE+KEY",
            resource.GetProperty("name")[0].GetProperty("family").GetString()!, resource.GetProperty("identifier")[1].GetProperty("value").GetString()! };
        foreach (var file in Directory.EnumerateFiles(node.Target, "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".manifest", StringComparison.Ordinal)))
        {
            var bytes = File.ReadAllBytes(file);
            foreach (var needle in needles.Where(n => Path.GetFileName(file) != "node.vkey"))
            {
                Assert.True(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(needle)) < 0, $"{needle} in clear in {Path.GetRelativePath(node.Target, file)}");
            }
        }
        Assert.All(Directory.EnumerateFiles(node.Target, "*.manifest", SearchOption.AllDirectories), m =>
            Assert.DoesNotContain(needles[^1], File.ReadAllText(m)));
    }

    private static JsonElement Manifest(string target, string which)
    {
        var manifests = Directory.EnumerateFiles(Path.Combine(target, "snapshots"), "*.manifest").Order(StringComparer.Ordinal).ToList();
        var note = File.ReadAllText(which == "latest" ? manifests[^1] : manifests[0]);
        return JsonDocument.Parse(note[..note.IndexOf("\n\n", StringComparison.Ordinal)]).RootElement;
    }

    public static TheoryData<string> Damages => ["a flipped byte in a pack", "a missing pack", "an edited manifest", "a forged manifest", "altered sealed keys", "a removed snapshot"];

    [Theory]
    [MemberData(nameof(Damages))]
    public async Task Verify_detects_and_names_damage_to_the_target(string damage)
    {
        using var s = node.Copy();
        var packs = Directory.EnumerateFiles(Path.Combine(s.Target, "packs"), "*.pack", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        var manifests = Directory.EnumerateFiles(Path.Combine(s.Target, "snapshots"), "*.manifest").Order(StringComparer.Ordinal).ToList();
        string expected;
        switch (damage)
        {
            case "a flipped byte in a pack":
                var bytes = File.ReadAllBytes(packs[0]);
                bytes[bytes.Length / 2] ^= 0x40;
                File.SetUnixFileMode(packs[0], UnixFileMode.UserRead | UnixFileMode.UserWrite);
                File.WriteAllBytes(packs[0], bytes);
                expected = $"pack packs/{Path.GetFileName(Path.GetDirectoryName(packs[0]))}/{Path.GetFileName(packs[0])} is corrupt";
                break;
            case "a missing pack":
                File.Delete(packs[^1]);
                expected = $"pack packs/{Path.GetFileName(Path.GetDirectoryName(packs[^1]))}/{Path.GetFileName(packs[^1])} is missing";
                break;
            case "an edited manifest":
                File.SetUnixFileMode(manifests[^1], UnixFileMode.UserRead | UnixFileMode.UserWrite);
                File.WriteAllText(manifests[^1], File.ReadAllText(manifests[^1]).Replace("\"schemaVersion\":", "\"schemaVersion\":9"));
                expected = "the manifest's signature does not verify";
                break;
            case "a forged manifest":
                // Signed, but by a key that is not the node's: an attacker's own.
                using (var forger = Ward.Core.Audit.SignedNote.Signer.Create("ward/drill"))
                {
                    var text = File.ReadAllText(manifests[^1]);
                    File.SetUnixFileMode(manifests[^1], UnixFileMode.UserRead | UnixFileMode.UserWrite);
                    File.WriteAllText(manifests[^1], Ward.Core.Audit.SignedNote.Sign(text[..(text.IndexOf("\n\n", StringComparison.Ordinal) + 1)], forger));
                }
                expected = "the manifest's signature does not verify";
                break;
            case "altered sealed keys":
                var keys = Path.ChangeExtension(manifests[0], ".keys");
                File.SetUnixFileMode(keys, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                File.AppendAllText(keys, "x");
                expected = "its sealed keys (snapshots/" + Path.GetFileName(keys) + ") were altered";
                break;
            default:
                // A third snapshot, then the second removed: the third no longer follows the first.
                await Ok("backup", "create", "--data", s.Node, "--target", s.Target);
                File.Delete(manifests[^1]);
                expected = "does not follow the snapshot before it";
                break;
        }
        var output = await Fails(1, "backup", "verify", "--target", s.Target);
        Assert.Contains(expected, output);
        Assert.Contains("The backup target is damaged", output);
    }

    [Fact]
    public async Task A_restore_of_a_damaged_snapshot_fails_and_names_the_pack()
    {
        using var s = node.Copy();
        var first = Manifest(s.Target, "first");
        var hash = first.GetProperty("packs")[0].GetString()!;
        var pack = Path.Combine(s.Target, "packs", hash[..2], hash + ".pack");
        var bytes = File.ReadAllBytes(pack);
        bytes[100] ^= 1;
        File.SetUnixFileMode(pack, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllBytes(pack, bytes);
        var output = await Fails(2, "backup", "restore", "--target", s.Target, "--snapshot", first.GetProperty("snapshot").GetString()!,
            "--data", s.Restored, "--recovery-key", s.RecoveryKey);
        Assert.Contains($"{Path.GetFileName(pack)} is corrupt", output);
        // Nothing left behind (no keys, no half database), beside the folder either: the same command runs again once the pack is repaired.
        Assert.False(Directory.Exists(s.Restored), "The failed restore left " + s.Restored);
        Assert.Equal(["node", "target"], Directory.GetFileSystemEntries(s.Root).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        bytes[100] ^= 1;
        File.WriteAllBytes(pack, bytes);
        // What a restore killed before it could clean up leaves beside the folder (never in it): the next one clears it.
        var killed = Path.Combine(s.Root, ".restored.restoring");
        Directory.CreateDirectory(Path.Combine(killed, "keys"));
        File.WriteAllText(Path.Combine(killed, "keys", "master.key"), "left by a killed restore\n");
        Assert.Contains("Restored snapshot", await Ok("backup", "restore", "--target", s.Target, "--snapshot", first.GetProperty("snapshot").GetString()!,
            "--data", s.Restored, "--recovery-key", s.RecoveryKey));
        Assert.False(Directory.Exists(killed));
    }

    [Fact]
    public async Task A_restore_without_the_recovery_key_or_with_another_one_is_refused()
    {
        using var s = node.Copy();
        var without = await Fails(2, "backup", "restore", "--target", s.Target, "--data", s.Restored);
        Assert.Contains("A restore needs the recovery key: --recovery-key FILE", without);

        // A newer recovery key of the same node does not open the snapshots sealed to the one before.
        File.Move(s.RecoveryKey, Path.Combine(s.Root, "old-recovery.key"));
        Assert.Contains("recovery key", await Ok("keys", "new-recovery", "--data", s.Node));
        var wrong = await Fails(2, "backup", "restore", "--target", s.Target, "--data", s.Restored, "--recovery-key", s.RecoveryKey);
        Assert.Matches("This recovery key \\(id [0-9a-f]{16}\\) does not open snapshot .*: it is sealed to recovery key [0-9a-f]{16}", wrong);
        Assert.False(Directory.Exists(s.Restored) && Directory.EnumerateFileSystemEntries(s.Restored).Any());

        // Another node's recovery key names its own node: refused before anything is opened.
        var other = Path.Combine(s.Root, "other");
        await Ok("init", "--data", other);
        var foreign = await Fails(2, "backup", "restore", "--target", s.Target, "--data", s.Restored, "--recovery-key", Path.Combine(other, "recovery.key"));
        Assert.Contains("is not the node key you trust", foreign);

        // Nor can another node's backups be mixed into this target.
        var mixed = await Fails(2, "backup", "create", "--data", other, "--target", s.Target);
        Assert.Contains("holds the backups of another node", mixed);
    }

    [Fact]
    public async Task A_patient_erased_after_a_snapshot_stays_erased_when_it_is_restored()
    {
        using var s = node.Copy();
        s.ConfigureTarget();
        var patient = FirstPatientId(Path.Combine(s.Node, "ward.db"));
        var erase = await Ok("patient", "erase", "--data", s.Node, "--patient", "Patient/" + patient, "--reason", "GDPR art. 17 request 2026-118");
        Assert.Contains("erased", erase);
        Assert.Single(Directory.EnumerateFiles(Path.Combine(s.Target, "erasures")));
        Assert.DoesNotContain(patient, File.ReadAllText(Path.Combine(s.Node, "keys", "erasures.log")));

        var first = Manifest(s.Target, "first").GetProperty("snapshot").GetString()!;
        var output = await Ok("backup", "restore", "--target", s.Target, "--snapshot", first, "--data", s.Restored, "--recovery-key", s.RecoveryKey);
        Assert.Contains("1 patients erased after the snapshot were erased again", output);
        using (var db = new SqliteConnection($"Data Source={Path.Combine(s.Restored, "ward.db")};Pooling=False"))
        {
            db.Open();
            Assert.Equal(0L, TestNode.Scalar(db, "SELECT count(*) FROM data_key WHERE owner = @o AND wrapped IS NOT NULL", ("@o", patient)));
            Assert.Equal(1L, TestNode.Scalar(db, "SELECT count(*) FROM data_key WHERE owner = @o", ("@o", patient)));
        }
        await Ok("verify", "--data", s.Restored);
    }

    private static string FirstPatientId(string db)
    {
        using var connection = new SqliteConnection($"Data Source={db};Mode=ReadOnly;Pooling=False");
        connection.Open();
        return (string)TestNode.Scalar(connection, "SELECT owner FROM data_key WHERE kind = 'patient' ORDER BY kid LIMIT 1")!;
    }

    [Fact]
    public async Task Prune_needs_the_recovery_key_and_keeps_what_the_latest_snapshots_use()
    {
        using var s = node.Copy();
        Assert.Contains("Pruning needs the recovery key", await Fails(2, "backup", "prune", "--target", s.Target, "--keep", "1"));
        File.Move(s.RecoveryKey, Path.Combine(s.Root, "old-recovery.key"));
        await Ok("keys", "new-recovery", "--data", s.Node);
        Assert.Contains("does not open snapshot", await Fails(2, "backup", "prune", "--target", s.Target, "--keep", "1", "--recovery-key", s.RecoveryKey));

        var output = await Ok("backup", "prune", "--target", s.Target, "--keep", "1", "--recovery-key", Path.Combine(s.Root, "old-recovery.key"));
        Assert.Contains("1 snapshots and", output);
        Assert.Single(Directory.EnumerateFiles(Path.Combine(s.Target, "snapshots"), "*.manifest"));
        await Ok("backup", "verify", "--target", s.Target, "--deep", "--recovery-key", Path.Combine(s.Root, "old-recovery.key"));
    }

    [Fact]
    public async Task Deep_verify_restores_in_full_and_runs_ward_verify()
    {
        using var s = node.Copy();
        var output = await Ok("backup", "verify", "--target", s.Target, "--deep", "--recovery-key", s.RecoveryKey);
        Assert.Contains("restored in full", output);
        Assert.Matches(@"[\d,]+ stored versions checked against [\d,]+ logged digests", output);
        Assert.Contains("The backups are intact.", output);
        Assert.Contains("--deep restores the snapshot, which needs the recovery key", await Fails(2, "backup", "verify", "--target", s.Target, "--deep"));
    }

    [Fact]
    public async Task List_shows_each_snapshot_with_its_audit_checkpoint()
    {
        var output = await Ok("backup", "list", "--target", node.Target);
        Assert.Equal(2, output.Split('\n').Count(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"\d{8}T\d{6}Z-[0-9a-f]{8}")));
        Assert.Contains("Node key ward/drill+", output);
    }

    [Fact]
    public async Task Doctor_warns_while_the_recovery_key_is_on_the_node()
    {
        using var s = node.Copy();
        s.ConfigureTarget();
        var warned = await Fails(1, "doctor", "--data", s.Node);
        Assert.Contains("the recovery key is still on this machine", warned);
        File.Move(s.RecoveryKey, Path.Combine(s.Root, "offline.key"));
        var output = await Ok("doctor", "--data", s.Node);
        Assert.Contains("the recovery key is not on this machine", output);
        Assert.Contains("Nothing needs attention.", output);
    }

    [Fact]
    public async Task A_restored_node_serves_reads_with_audit_and_refuses_writes_when_read_only()
    {
        using var s = node.Copy();
        await Ok("backup", "restore", "--target", s.Target, "--data", s.Restored, "--recovery-key", s.RecoveryKey);
        var config = NodeConfig.Load(s.Restored);
        using var store = RecordStore.Open(config);
        await using var app = WardServer.Build(config, "http://127.0.0.1:0", store, logging => { }, readOnly: true);
        await app.StartAsync();
        try
        {
            var origin = Origin(app);
            using var http = new HttpClient();
            var grant = new AccessGrant("clinician-1", "ehr", "clinician", SmartScopes.Parse("user/*.cruds"), null, null);
            http.DefaultRequestHeaders.Authorization = new("Bearer", app.Services.GetRequiredService<AccessTokens>().Issue(grant, TimeSpan.FromMinutes(5), "urn:ward:test"));
            var entries = store.Read(x => x.AuditSize());

            using var read = await http.GetAsync($"{origin}/fhir/Patient?_count=3");
            Assert.Equal(HttpStatusCode.OK, read.StatusCode);
            Assert.True(store.Read(x => x.AuditSize()) > entries, "the read was not audited");

            using var create = await http.PostAsync($"{origin}/fhir/Observation", Json("""{"resourceType":"Observation","status":"final","code":{"text":"x"}}"""));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, create.StatusCode);
            var outcome = await create.Content.ReadAsStringAsync();
            Assert.Contains("OperationOutcome", outcome);
            Assert.Contains("serves a restored backup read-only", outcome);

            using var transaction = await http.PostAsync($"{origin}/fhir", Json("""{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}]}"""));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, transaction.StatusCode);

            using var health = await http.GetAsync($"{origin}/health");
            Assert.Contains("\"readOnly\":true", await health.Content.ReadAsStringAsync());
            Assert.Equal(node.VersionsAtSecondSnapshot.Count, BackedUpNode.Versions(Path.Combine(s.Restored, "ward.db")).Count);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    private static string Origin(Microsoft.AspNetCore.Builder.WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/fhir+json");

    [Fact]
    public async Task Scheduled_backups_run_while_serving_and_report_their_outcome_at_health()
    {
        using var s = node.Copy();
        var config = s.ConfigureTarget();
        using var store = RecordStore.Open(config);
        await using var app = WardServer.Build(config, "http://127.0.0.1:0", store, logging => { });
        await app.StartAsync();
        try
        {
            var origin = Origin(app);
            using var http = new HttpClient();
            var scheduler = app.Services.GetRequiredService<ScheduledBackups>();
            await scheduler.RunOnceAsync(TimeSpan.FromHours(6), CancellationToken.None);
            var health = JsonDocument.Parse(await http.GetStringAsync($"{origin}/health")).RootElement.GetProperty("backup");
            var snapshot = health.GetProperty("lastSnapshot").GetString()!;
            Assert.Equal(JsonValueKind.Null, health.GetProperty("lastError").ValueKind);
            Assert.True(File.Exists(Path.Combine(s.Target, "snapshots", snapshot + ".manifest")));

            // A target that disappears: the node keeps serving, /health says what failed.
            Directory.Move(s.Target, s.Target + ".gone");
            File.WriteAllText(s.Target, "not a folder");
            await scheduler.RunOnceAsync(TimeSpan.FromHours(6), CancellationToken.None);
            health = JsonDocument.Parse(await http.GetStringAsync($"{origin}/health")).RootElement.GetProperty("backup");
            Assert.Equal(snapshot, health.GetProperty("lastSnapshot").GetString());
            Assert.NotEqual(JsonValueKind.Null, health.GetProperty("lastError").ValueKind);
        }
        finally
        {
            await app.StopAsync();
        }
    }
}

/// <summary>A backup taken while the node serves writes is a consistent snapshot: it restores and verifies.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackupWhileServingTests : IAsyncLifetime
{
    private readonly TestNode _node = new();

    public Task InitializeAsync() => _node.InitializeAsync();

    public async Task DisposeAsync()
    {
        await _node.DisposeAsync();
        _node.Dispose();
    }

    [Fact]
    public async Task A_backup_under_concurrent_writes_restores_and_verifies()
    {
        var target = Path.Combine(_node.DataDir, "..", Path.GetFileName(_node.DataDir) + "-target");
        var restored = target + "-restored";
        try
        {
            using var stop = new CancellationTokenSource();
            var written = 0;
            var writer = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    using var response = await _node.Http.PostAsync(_node.BaseUrl + "/Patient", new StringContent(
                        $$"""{"resourceType":"Patient","name":[{"family":"Concurrent{{written}}"}]}""", Encoding.UTF8, "application/fhir+json"));
                    Assert.Equal(HttpStatusCode.Created, response.StatusCode);
                    written++;
                }
            });
            while (written < 20)
            {
                await Task.Delay(20);
            }
            await BackedUpNode.Ok("backup", "create", "--data", _node.DataDir, "--target", target);
            await BackedUpNode.Ok("backup", "create", "--data", _node.DataDir, "--target", target);
            await stop.CancelAsync();
            await writer;
            await BackedUpNode.Ok("backup", "restore", "--target", target, "--data", restored, "--recovery-key", Path.Combine(_node.DataDir, "recovery.key"));
            Assert.Contains("The records and the audit log are intact.", await BackedUpNode.Ok("verify", "--data", restored));
        }
        finally
        {
            foreach (var dir in new[] { target, restored }.Where(Directory.Exists))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
