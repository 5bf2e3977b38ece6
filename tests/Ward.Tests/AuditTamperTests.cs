using System.Diagnostics;
using System.Net.Http.Json;
using Ward.Core.Access;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>A node loaded with the Synthea sample patients by <c>ward import</c>, verified intact, as the template the tamper tests copy.</summary>
public sealed class TamperedNodeTemplate : IAsyncLifetime
{
    public string Dir { get; } = Path.Combine(Path.GetTempPath(), "ward-tamper-" + Guid.NewGuid().ToString("N")[..8]);

    public async Task InitializeAsync()
    {
        Assert.Equal(0, (await WardProcess.OutputAsync(["init", "--data", Dir, "--name", "tamper"])).Code);
        var import = await WardProcess.OutputAsync(["import", "--data", Dir, Path.Combine(TestData.RepoRoot, "samples", "synthea")]);
        Assert.True(import.Code == 0, import.Output);
    }

    public Task DisposeAsync()
    {
        Directory.Delete(Dir, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>
/// Someone with the database in hand (here the Debian sqlite3 tool) changes records or their trail behind the node's
/// back; <c>ward verify</c> names what changed, and exits non-zero. An outside witness catches a rewritten history.
/// </summary>
public sealed class AuditTamperTests(TamperedNodeTemplate template) : IClassFixture<TamperedNodeTemplate>
{
    [Fact]
    public async Task The_untouched_node_verifies_intact()
    {
        var (code, output) = await WardProcess.OutputAsync(["verify", "--data", template.Dir]);
        Assert.True(code == 0, output);
        Assert.Contains("The records and the audit log are intact.", output);
        Assert.Matches(@"checked [\d,]+ stored versions checked against [\d,]+ logged digests", output);
        Assert.Equal(0, (await WardProcess.OutputAsync(["audit", "verify", "--data", template.Dir])).Code);
    }

    [Theory]
    [InlineData("one byte of a stored version", "UPDATE version SET data = CAST(substr(data, 1, 40) || X'00' || substr(data, 42) AS BLOB) WHERE seq = 40",
        "modified: ", "differs from what audit entry")]
    [InlineData("a deleted version", "DELETE FROM version WHERE seq = 41", "deleted: ", "is no longer stored")]
    [InlineData("an inserted version", "INSERT INTO version (rid, version, last_updated, method, deleted, data, kid) SELECT rid, version + 1, last_updated + 1, 'PUT', 0, data, kid FROM version WHERE seq = 42",
        "inserted: ", "/_history/2 is stored but no audit entry records writing it")]
    [InlineData("two swapped versions", "CREATE TEMP TABLE t AS SELECT seq, data FROM version WHERE seq IN (50, 51); UPDATE version SET data = (SELECT data FROM t WHERE t.seq = 101 - version.seq) WHERE seq IN (50, 51)",
        "swapped: ", "holds what audit entry")]
    [InlineData("a current pointer moved back", "UPDATE resource SET version = 0 WHERE rid = 60", "modified: ", "points to version 0 as current")]
    [InlineData("an altered audit entry", "DROP TRIGGER audit_entry_no_update; UPDATE audit_entry SET data = CAST(substr(data, 1, 40) || CASE WHEN substr(data, 41, 1) = X'00' THEN X'01' ELSE X'00' END || substr(data, 42) AS BLOB) WHERE idx = 3",
        "audit entry 3 does not open under the node's audit key", "its sealed bytes were altered or moved from another index")]
    [InlineData("two swapped audit entries", "DROP TRIGGER audit_entry_no_update; CREATE TEMP TABLE t AS SELECT idx, data FROM audit_entry WHERE idx IN (5, 6); UPDATE audit_entry SET data = (SELECT data FROM t WHERE t.idx = 11 - audit_entry.idx) WHERE idx IN (5, 6)",
        "audit entry 5 does not open under the node's audit key", "audit entry 6 does not open")]
    [InlineData("an altered leaf hash", "DROP TRIGGER audit_entry_no_update; UPDATE audit_entry SET leaf = zeroblob(32) WHERE idx = 3",
        "audit entry 3 does not match its stored leaf hash", "integrity problem(s) found")]
    [InlineData("a deleted audit entry", "DROP TRIGGER audit_entry_no_delete; DELETE FROM audit_entry WHERE idx = 20", "audit entry 20 is missing", "inserted: ")]
    [InlineData("a truncated log", "DROP TRIGGER audit_entry_no_delete; DELETE FROM audit_entry WHERE idx >= (SELECT size - 5 FROM audit_head); UPDATE audit_head SET size = size - 5",
        "covers more entries than the log holds", "the log was truncated")]
    public async Task Ward_verify_detects_and_names(string what, string sql, string expected, string alsoExpected)
    {
        var copy = Copy();
        try
        {
            await Sqlite3Async(Path.Combine(copy, "ward.db"), sql);
            var (code, output) = await WardProcess.OutputAsync(["verify", "--data", copy]);
            Assert.True(code == 1, $"{what}: exit {code}\n{output}");
            Assert.Contains(expected, output);
            Assert.Contains(alsoExpected, output);
            Assert.Contains("integrity problem(s) found", output);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public async Task Ward_verify_finds_a_blob_file_changed_or_removed_behind_the_node()
    {
        var dir = Copy();
        try
        {
            var import = await WardProcess.OutputAsync(["import", "--data", dir, TestData.LargeDocumentBundle(Path.Combine(dir, "in"))]);
            Assert.True(import.Code == 0, import.Output);
            var blob = Path.Combine(dir, "blobs", "00000001.blob");
            Assert.True(File.Exists(blob) && new FileInfo(blob).Length > 100_000, "The large document was not written to a blob file.");
            var intact = await WardProcess.OutputAsync(["verify", "--data", dir]);
            Assert.True(intact.Code == 0, intact.Output);

            // One byte of the sealed document changed in the file: the row's reference still matches its audit entry.
            var bytes = File.ReadAllBytes(blob);
            bytes[bytes.Length / 2] ^= 0x01;
            File.WriteAllBytes(blob, bytes);
            var changed = await WardProcess.OutputAsync(["verify", "--data", dir]);
            Assert.NotEqual(0, changed.Code);
            Assert.Matches(@"modified: DocumentReference/[^ ]+/_history/1 differs from what audit entry \d+ recorded for it: its bytes in blobs/00000001.blob differ", changed.Output);

            File.Delete(blob);
            var removed = await WardProcess.OutputAsync(["verify", "--data", dir]);
            Assert.NotEqual(0, removed.Code);
            Assert.Contains("blobs/00000001.blob is missing", removed.Output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Ward_audit_verify_finds_a_forged_checkpoint_and_a_rewritten_subtree_hash()
    {
        var copy = Copy();
        try
        {
            await Sqlite3Async(Path.Combine(copy, "ward.db"), "DROP TRIGGER audit_checkpoint_no_update; UPDATE audit_checkpoint SET note = replace(note, '\n\n', '\nforged\n\n');"
                + "DROP TRIGGER audit_tree_no_update; UPDATE audit_tree SET hash = zeroblob(32) WHERE level = 3 AND idx = 2");
            var (code, output) = await WardProcess.OutputAsync(["audit", "verify", "--data", copy]);
            Assert.Equal(1, code);
            Assert.Contains("does not verify under the node key ward/tamper", output);
            Assert.Contains("the stored subtree hash at level 3, index 2 (entries 16 to 23) was altered", output);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    private string Copy()
    {
        var copy = template.Dir + "-" + Guid.NewGuid().ToString("N")[..6];
        foreach (var file in Directory.EnumerateFiles(template.Dir, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(copy, Path.GetRelativePath(template.Dir, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        return copy;
    }

    internal static async Task Sqlite3Async(string database, string sql)
    {
        using var process = Process.Start(new ProcessStartInfo("sqlite3", [database, sql]) { RedirectStandardError = true })!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"sqlite3: {error}");
    }
}

/// <summary><c>ward audit verify --server</c>: a witness accepts a node whose log only grows, and catches one whose history was rewritten.</summary>
[Collection(SharedNode.Name)]
public sealed class AuditWitnessTests(TestNode node)
{
    [Fact]
    public async Task A_witness_accepts_growth_and_rejects_a_node_that_signs_a_different_history()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-witness-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var file = Path.Combine(dir, "checkpoint");
        var token = ("WARD_TOKEN", node.Token(new AccessGrant("officer", "app", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
        try
        {
            var first = await WardProcess.OutputAsync(["audit", "verify", "--server", node.Origin, "--checkpoint", file], token);
            Assert.True(first.Code == 0, first.Output);
            Assert.Contains("First checkpoint of ward/test saved", first.Output);
            Assert.True(File.Exists(file + ".vkey"));

            await node.Http.PostAsJsonAsync($"{node.BaseUrl}/Patient", new { resourceType = "Patient", gender = "male" });
            await Task.Delay(TimeSpan.FromSeconds(2));
            var second = await WardProcess.OutputAsync(["audit", "verify", "--server", node.Origin, "--checkpoint", file], token);
            Assert.True(second.Code == 0, second.Output);
            Assert.Contains("Consistent: ward/test grew from", second.Output);

            // A checkpoint of the same origin and key but another history (as a node that rewrote its log would sign).
            var saved = await File.ReadAllTextAsync(file);
            Assert.True(Ward.Core.Audit.Checkpoint.TryParse(saved[..(saved.IndexOf("\n\n", StringComparison.Ordinal) + 1)], out var cp));
            using (var signer = Ward.Core.Audit.SignedNote.Signer.Parse(File.ReadAllText(Path.Combine(node.DataDir, "keys", "node.key")).Trim()))
            {
                var other = new Ward.Core.Audit.Checkpoint(cp.Origin, cp.Size, new byte[32]);
                await File.WriteAllTextAsync(file, Ward.Core.Audit.SignedNote.Sign(other.Text, signer));
            }
            var third = await WardProcess.OutputAsync(["audit", "verify", "--server", node.Origin, "--checkpoint", file], token);
            Assert.Equal(1, third.Code);
            Assert.Contains("history was rewritten", third.Output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
