using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Hl7.Fhir.Model;
using Ward.Core.Fhir;

namespace Ward.Core.Transfer;

internal sealed record ImportProgress(string File, int FilesDone, int FilesTotal, long Resources);

/// <summary>What the import did with the resources of one type.</summary>
internal readonly record struct ImportCounts(long Created, long Updated, long AlreadyPresent, long Failed);

internal sealed class ImportSummary
{
    public SortedDictionary<string, ImportCounts> ByType { get; } = new(StringComparer.Ordinal);
    public List<string> Errors { get; } = [];
    /// <summary>Resources written (created or updated).</summary>
    public long Resources => ByType.Values.Sum(v => v.Created + v.Updated);
    public long AlreadyPresent => ByType.Values.Sum(v => v.AlreadyPresent);
    public TimeSpan Elapsed { get; set; }

    /// <summary>
    /// Counts one entry by its method and response status: a POST answered 200 is a conditional create
    /// (<c>ifNoneExist</c>) that matched a resource already there, which the import left as it was.
    /// </summary>
    internal void Count(string type, string method, int status)
    {
        ByType.TryGetValue(type, out var c);
        ByType[type] = status switch
        {
            201 => c with { Created = c.Created + 1 },
            < 300 when method == "POST" => c with { AlreadyPresent = c.AlreadyPresent + 1 },
            < 300 => c with { Updated = c.Updated + 1 },
            _ => c with { Failed = c.Failed + 1 },
        };
    }
}

/// <summary>
/// Loads FHIR Bundles (batch or transaction), single resources and NDJSON files through the same transaction code as
/// the HTTP API; the next file is parsed while the current one is written. The order of the files does not matter: a
/// transaction whose conditional reference (<c>Organization?identifier=...</c>) matches nothing yet is tried again
/// after the other files, pass after pass while a pass loads any, and reported only when a pass loads none. An NDJSON
/// file loads its valid lines; each bad line is reported with its line number.
/// </summary>
internal sealed class Importer(FhirEngine engine)
{
    private const string ImportBase = "urn:ward:import";
    private const int NdjsonBatch = 500;

    /// <summary>Bundles to post from one file; for NDJSON, the line of each entry and the lines that could not be read.</summary>
    private sealed record FileContent(List<(Bundle Bundle, int[]? Lines)> Bundles, List<string> Errors);

    public static List<string> Expand(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (var path in paths)
        {
            if (Directory.Exists(path))
            {
                files.AddRange(Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
                    .Where(f => f.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase))
                    .Order(StringComparer.Ordinal));
            }
            else if (File.Exists(path))
            {
                files.Add(path);
            }
            else
            {
                throw new Node.NodeException($"'{path}' is neither a file nor a folder.");
            }
        }
        return files;
    }

    public async Task<ImportSummary> ImportAsync(IReadOnlyList<string> files, IProgress<ImportProgress>? progress, CancellationToken ct)
    {
        var summary = new ImportSummary();
        var started = System.Diagnostics.Stopwatch.StartNew();
        var total = files.Count;
        var done = 0;
        IReadOnlyList<string> pending = files;
        var unresolved = new Dictionary<string, (string Reference, List<(string Type, string Method)> Entries)>(StringComparer.Ordinal);
        while (true)
        {
            unresolved.Clear();
            await PassAsync(pending, summary, unresolved, file => progress?.Report(new ImportProgress(file, ++done, total, summary.Resources)), ct);
            if (unresolved.Count == 0 || unresolved.Count == pending.Count)
            {
                break;
            }
            // Some transactions waited for resources that this pass loaded: try them again.
            pending = [.. pending.Where(unresolved.ContainsKey)];
            total += pending.Count;
        }
        foreach (var (file, (reference, entries)) in unresolved)
        {
            summary.Errors.Add($"{file}: the conditional reference {Describe(reference)} matches no resource, neither in the node nor in the files imported; nothing of this file was loaded.");
            entries.ForEach(e => summary.Count(e.Type, e.Method, 412));
        }
        summary.Elapsed = started.Elapsed;
        return summary;
    }

    /// <summary>One pass over <paramref name="files"/>; the transactions that wait for a conditional reference go to <paramref name="unresolved"/>.</summary>
    private async System.Threading.Tasks.Task PassAsync(IReadOnlyList<string> files, ImportSummary summary, Dictionary<string, (string, List<(string, string)>)> unresolved, Action<string> fileDone, CancellationToken ct)
    {
        var channel = Channel.CreateBounded<(string File, FileContent Content)>(2);
        var producer = System.Threading.Tasks.Task.Run(async () =>
        {
            try
            {
                foreach (var file in files)
                {
                    FileContent content;
                    try
                    {
                        content = await ReadAsync(file, ct);
                    }
                    catch (FhirException e)
                    {
                        content = new([], [$"{file}: {e.Message}"]);
                    }
                    await channel.Writer.WriteAsync((file, content), ct);
                }
            }
            finally
            {
                channel.Writer.Complete();
            }
        }, ct);
        await foreach (var (file, content) in channel.Reader.ReadAllAsync(ct))
        {
            summary.Errors.AddRange(content.Errors);
            foreach (var (bundle, lines) in content.Bundles)
            {
                try
                {
                    var response = await engine.HandleAsync(new FhirRequest
                    {
                        Method = "POST",
                        Path = "",
                        Resource = bundle,
                        Return = ReturnPreference.Minimal,
                        BaseUrl = ImportBase,
                        Caller = Access.AccessGrant.Operator,
                    }, ct);
                    CountResponses(bundle, lines, response.Body!, summary, file);
                }
                catch (FhirException e) when (e.UnresolvedReference is { } reference && bundle.Type == Bundle.BundleType.Transaction)
                {
                    // Rewriting the references may have changed the Bundle: a later pass reads the file again.
                    unresolved[file] = (reference, [.. bundle.Entry.Select(entry => (TypeOf(entry), MethodOf(entry)))]);
                }
                catch (FhirException e)
                {
                    summary.Errors.Add($"{file}: {e.Message}");
                    foreach (var entry in bundle.Entry)
                    {
                        summary.Count(TypeOf(entry), MethodOf(entry), 400);
                    }
                }
            }
            fileDone(file);
        }
        await producer;
    }

    /// <summary>A conditional reference as the report names it: in full for shared resources, without its values for a patient's.</summary>
    private static string Describe(string reference)
    {
        var q = reference.IndexOf('?');
        var type = reference[..q];
        return Policy.AccessPolicy.PatientData(type)
            ? $"{type}?{string.Join('&', reference[(q + 1)..].Split('&').Select(p => p.Split('=')[0] + "=..."))}"
            : reference;
    }

    private static string TypeOf(Bundle.EntryComponent entry) => entry.Resource?.TypeName ?? entry.Request?.Url?.Split('/', '?')[0] ?? "(none)";

    private static string MethodOf(Bundle.EntryComponent entry) => entry.Request?.Method?.ToString().ToUpperInvariant() ?? "";

    private static void CountResponses(Bundle request, int[]? lines, byte[] response, ImportSummary summary, string file)
    {
        using var doc = JsonDocument.Parse(response);
        var i = 0;
        foreach (var entry in doc.RootElement.GetProperty("entry").EnumerateArray())
        {
            var statusText = entry.GetProperty("response").GetProperty("status").GetString() ?? "";
            var status = int.Parse(statusText.AsSpan(0, 3), System.Globalization.CultureInfo.InvariantCulture);
            summary.Count(TypeOf(request.Entry[i]), MethodOf(request.Entry[i]), status);
            if (status >= 400)
            {
                var message = entry.GetProperty("response").TryGetProperty("outcome", out var outcome)
                    && outcome.GetProperty("issue")[0].TryGetProperty("diagnostics", out var d) ? d.GetString() : "failed";
                summary.Errors.Add(lines is null ? $"{file}: entry {i}: {message}" : $"{file}:{lines[i]}: {message}");
            }
            i++;
        }
    }

    /// <summary>
    /// Reads one file as Bundles to post: a batch/transaction as it is; a single resource, or the lines of an NDJSON file,
    /// as batches of PUT/POST. An NDJSON line that is not a resource is reported with its number; the others still load.
    /// </summary>
    private static async Task<FileContent> ReadAsync(string file, CancellationToken ct)
    {
        if (file.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase))
        {
            var content = new FileContent([], []);
            var current = NewBatch();
            var lines = new List<int>();
            var lineNo = 0;
            await foreach (var line in File.ReadLinesAsync(file, ct))
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line))
                {
                    continue;
                }
                try
                {
                    current.Entry.Add(EntryFor(FhirJson.Parse(Encoding.UTF8.GetBytes(line))));
                    lines.Add(lineNo);
                }
                catch (FhirException e)
                {
                    content.Errors.Add($"{file}:{lineNo}: {e.Message}");
                    continue;
                }
                if (current.Entry.Count == NdjsonBatch)
                {
                    content.Bundles.Add((current, [.. lines]));
                    current = NewBatch();
                    lines.Clear();
                }
            }
            if (current.Entry.Count > 0)
            {
                content.Bundles.Add((current, [.. lines]));
            }
            return content;
        }
        var bytes = await File.ReadAllBytesAsync(file, ct);
        var parsed = FhirJson.Parse(bytes);
        if (parsed is Bundle { Type: Bundle.BundleType.Batch or Bundle.BundleType.Transaction } b)
        {
            return new([(b, null)], []);
        }
        var single = NewBatch();
        single.Entry.Add(EntryFor(parsed));
        return new([(single, null)], []);
    }

    private static Bundle NewBatch() => new() { Type = Bundle.BundleType.Batch };

    private static Bundle.EntryComponent EntryFor(Resource resource) => new()
    {
        Resource = resource,
        Request = resource.Id is { } id
            ? new Bundle.RequestComponent { Method = Bundle.HTTPVerb.PUT, Url = $"{resource.TypeName}/{id}" }
            : new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = resource.TypeName },
    };
}
