using System.CommandLine;
using System.Net.Http.Headers;
using System.Text.Json;
using Spectre.Console;
using Ward.Core.Audit;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Cli;

/// <summary><c>ward verify</c> and <c>ward audit verify</c>: the node's integrity, from its data folder or as an outside witness.</summary>
internal static partial class Commands
{
    private static Command Verify()
    {
        var data = DataOption();
        var skipIndex = new Option<bool>("--skip-index")
        {
            Description = "Do not derive the index again from the sealed versions (faster, but index rows and row summaries changed behind the node's back, "
                + "which access decisions read, go unnoticed).",
        };
        var cmd = new Command("verify", "Check the node's data folder: the audit log (entries, subtree hashes, signed checkpoints), every stored "
            + "version, current and historical, against the digest its audit entry committed, and every index row and row summary the policy decides on "
            + "(relationships, security labels, compartments, consent rules) against the sealed current version it is derived from. Names every record "
            + "and index row modified, deleted, inserted or swapped behind the node's back, and a database that lost data or was rolled back (its log must extend "
            + "the node's high-water mark, the latest checkpoint it signed, kept in the data folder). Exit status 0 only when all is intact.") { data, skipIndex };
        cmd.SetAction(pr => Run(() =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var report = new VerificationReport();
            Verification.Verify(store, NodeVerifier(config, report), report, records: true, indexes: !pr.GetValue(skipIndex), AuditHighWater.Of(config));
            return Print(report, pr.GetValue(skipIndex) ? "The records and the audit log are intact (their index was not checked)." : "The records and the audit log are intact.");
        }));
        return cmd;
    }

    private static Command Audit()
    {
        var data = DataOption(required: false);
        var server = new Option<string?>("--server") { Description = "Act as an outside witness of a running node (its base URL, such as https://ward.example:8443)." };
        var checkpoint = new Option<string?>("--checkpoint")
        {
            Description = "With --server: the witness's saved checkpoint. The node's current checkpoint must extend it (consistency proof); "
                + "then it replaces it. The first run saves it, with the node's key beside it (FILE.vkey).",
        };
        var key = new Option<string?>("--key") { Description = "With --server: the node's verifier key (C2SP vkey), instead of FILE.vkey or, on first use, the node's /audit/key." };
        var token = new Option<string?>("--token") { Description = "With --server: an access token of the security officer (default: the WARD_TOKEN environment variable)." };
        var verify = new Command("verify", "Verify the audit log: from the data folder (--data: recompute the tree from every entry, check every "
            + "checkpoint signature and the consistency between checkpoints), or as a witness of a running node (--server --checkpoint).")
            { data, server, checkpoint, key, token };
        verify.SetAction((pr, ct) => RunAsync(async () =>
        {
            if (pr.GetValue(server) is { } url)
            {
                var file = pr.GetValue(checkpoint) ?? throw new NodeException("--server needs --checkpoint FILE: where the witness keeps the last checkpoint it accepted.");
                return await WitnessAsync(url, file, pr.GetValue(key), pr.GetValue(token) ?? Environment.GetEnvironmentVariable("WARD_TOKEN"), ct);
            }
            var dir = pr.GetValue(data) ?? throw new NodeException("Give --data DIR (the node's folder), or --server URL --checkpoint FILE.");
            var config = NodeConfig.Load(dir);
            using var store = RecordStore.Open(config);
            var report = new VerificationReport();
            Verification.Verify(store, NodeVerifier(config, report), report, records: false, highWater: AuditHighWater.Of(config));
            return Print(report, "The audit log is intact: every entry is under the node's signed checkpoints.");
        }));
        return new Command("audit", "The tamper-evident audit log.") { verify };
    }

    /// <summary>
    /// Records an administrative command in the node's audit log, durable (and under a new checkpoint) before the command
    /// reports: the operator is the operating-system account that ran it on the data folder. Commands that hold the
    /// node's store already pass it.
    /// </summary>
    private static async Task AuditAdminAsync(NodeConfig config, string subtype, char action, string target, string? patient = null, RecordStore? open = null)
    {
        using var owned = open is null ? RecordStore.Open(config) : null;
        await using var audit = AuditLog.Open(config, open ?? owned!);
        await audit.RecordAsync([AuditRecord.Admin(subtype, action, target, "os:" + Environment.UserName, audit.NowTicks, patient)]);
        await audit.CheckpointAsync(CancellationToken.None);
    }

    /// <summary>The node's verifier key, from its private key; a published key that differs is a problem in itself.</summary>
    private static SignedNote.Verifier NodeVerifier(NodeConfig config, VerificationReport report)
    {
        var path = config.Resolve(NodeKey.KeyFile);
        if (!File.Exists(path))
        {
            throw new NodeException($"The node key {path} is missing: without it the checkpoints cannot be checked. Restore it from the node's backup.");
        }
        using var signer = NodeKey.Read(path);
        var published = config.Resolve(NodeKey.VerifierFile);
        if (File.Exists(published) && File.ReadAllText(published).Trim() != signer.Verifier.VKey)
        {
            report.Problems.Add($"{published} is not the public half of {path}: one of them was replaced.");
        }
        return signer.Verifier;
    }

    private static int Print(VerificationReport report, string intact)
    {
        foreach (var line in report.Checked)
        {
            AnsiConsole.MarkupLineInterpolated($"  [green]checked[/] {Safe(line)}");
        }
        foreach (var notice in report.Notices)
        {
            AnsiConsole.MarkupLineInterpolated($"  [yellow]notice[/]  {Safe(notice)}");
        }
        foreach (var problem in report.Problems.Take(200))
        {
            AnsiConsole.MarkupLineInterpolated($"  [red]FAILED[/]  {Safe(problem)}");
        }
        if (report.Problems.Count > 200)
        {
            AnsiConsole.MarkupLineInterpolated($"  [red]... and {report.Problems.Count - 200} more problems.[/]");
        }
        if (report.Intact)
        {
            AnsiConsole.MarkupLineInterpolated($"[green]{intact}[/]");
            return 0;
        }
        AnsiConsole.MarkupLineInterpolated($"[red]{report.Problems.Count} integrity problem(s) found.[/] Treat the node as compromised: keep this output, stop writes, and follow docs/RECOVERY.md.");
        return 1;
    }

    /// <summary>
    /// The witness: fetch the node's current checkpoint, check its signature with the key the witness trusts, and check
    /// that it extends the checkpoint the witness saved last time (RFC 9162 consistency proof). A node that rewrote or
    /// truncated its history cannot produce that proof.
    /// </summary>
    private static async Task<int> WitnessAsync(string url, string file, string? keyText, string? token, CancellationToken ct)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var parsed) || parsed.Scheme is not ("http" or "https"))
        {
            throw new NodeException($"--server '{url}' is not the base URL of a node, such as https://ward.example:8443.");
        }
        if (Directory.Exists(file))
        {
            throw new NodeException($"--checkpoint {file} is a folder: give the file where the witness keeps the checkpoint it accepted.");
        }
        var origin = url.TrimEnd('/');
        if (origin.EndsWith("/fhir", StringComparison.Ordinal))
        {
            origin = origin[..^5];
        }
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        if (token is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        var keyFile = file + ".vkey";
        var firstUse = keyText is null && !File.Exists(keyFile);
        var vkey = (keyText ?? (File.Exists(keyFile) ? await File.ReadAllTextAsync(keyFile, ct) : await GetAsync(http, $"{origin}/audit/key", ct))).Trim();
        SignedNote.Verifier verifier;
        try
        {
            verifier = SignedNote.ParseVerifier(vkey);
        }
        catch (FormatException e)
        {
            throw new NodeException($"'{vkey}' is not a node public key (C2SP vkey, as in keys/node.vkey): {e.Message}");
        }
        var note = await GetAsync(http, $"{origin}/audit/checkpoint", ct);
        if (!SignedNote.TryOpen(note, [verifier], out var text, out _, out var error) || !Checkpoint.TryParse(text, out var current))
        {
            throw new WitnessException($"The node's checkpoint does not verify under the key {verifier.Name}: {error ?? "not a checkpoint"}.");
        }
        if (File.Exists(file))
        {
            var saved = await File.ReadAllTextAsync(file, ct);
            if (!SignedNote.TryOpen(saved, [verifier], out var savedText, out _, out error) || !Checkpoint.TryParse(savedText, out var previous))
            {
                throw new WitnessException($"The saved checkpoint {file} does not verify under the key {verifier.Name}: {error ?? "not a checkpoint"}.");
            }
            if (previous.Origin != current.Origin)
            {
                throw new WitnessException($"The node now signs as {current.Origin}, not {previous.Origin}.");
            }
            if (current.Size < previous.Size)
            {
                throw new WitnessException($"The node's log shrank from {previous.Size} to {current.Size} entries: its history was truncated or rolled back.");
            }
            if (current.Size == previous.Size)
            {
                if (!current.Root.AsSpan().SequenceEqual(previous.Root))
                {
                    throw new WitnessException($"The node signed two different trees of size {current.Size}: its history was rewritten.");
                }
            }
            else if (previous.Size > 0)
            {
                using var proof = JsonDocument.Parse(await GetAsync(http, $"{origin}/audit/proof/consistency?from={previous.Size}&to={current.Size}", ct));
                var hashes = proof.RootElement.GetProperty("hashes").EnumerateArray().Select(h => Convert.FromBase64String(h.GetString()!)).ToList();
                if (!Merkle.VerifyConsistency(previous.Size, current.Size, previous.Root, current.Root, hashes))
                {
                    throw new WitnessException($"The node's checkpoint at size {current.Size} does not extend the one saved at size {previous.Size}: its history was rewritten.");
                }
            }
            AnsiConsole.MarkupLineInterpolated($"[green]Consistent[/]: {current.Origin} grew from {previous.Size:N0} to {current.Size:N0} entries without changing any of them.");
        }
        else
        {
            AnsiConsole.MarkupLineInterpolated($"First checkpoint of {current.Origin} saved at size {current.Size:N0}{(firstUse ? $"; trusting its key {vkey} from now on" : "")}.");
        }
        await File.WriteAllTextAsync(file, note, ct);
        if (firstUse)
        {
            await File.WriteAllTextAsync(keyFile, vkey + "\n", ct);
        }
        return 0;
    }

    private static async Task<string> GetAsync(HttpClient http, string url, CancellationToken ct)
    {
        using var response = await ReachAsync(http, url, ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
        {
            throw new NodeException($"{url} answered {(int)response.StatusCode}: {body[..Math.Min(300, body.Length)]}");
        }
        return body;
    }

    /// <summary>A GET of the witnessed node: a node that cannot be reached, or does not answer in time, is an operator error.</summary>
    private static async Task<HttpResponseMessage> ReachAsync(HttpClient http, string url, CancellationToken ct)
    {
        try
        {
            return await http.GetAsync(url, ct);
        }
        catch (HttpRequestException e)
        {
            throw new NodeException($"Could not reach {url}: {e.Message}");
        }
        catch (TaskCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new NodeException($"{url} did not answer within {http.Timeout.TotalSeconds:N0} s.");
        }
    }
}

/// <summary>The witnessed node's history does not extend what the witness saw before: exit status 1, never a stack trace.</summary>
internal sealed class WitnessException(string message) : Exception(message);
