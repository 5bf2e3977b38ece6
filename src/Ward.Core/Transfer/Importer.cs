using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Hl7.Fhir.Model;
using Ward.Core.Fhir;

namespace Ward.Core.Transfer;

internal sealed record ImportProgress(string File, int FilesDone, int FilesTotal, long Resources);

internal sealed class ImportSummary
{
    public SortedDictionary<string, (long Created, long Updated, long Failed)> ByType { get; } = new(StringComparer.Ordinal);
    public List<string> Errors { get; } = [];
    public long Resources => ByType.Values.Sum(v => v.Created + v.Updated);
    public TimeSpan Elapsed { get; set; }

    internal void Count(string type, int status)
    {
        ByType.TryGetValue(type, out var c);
        ByType[type] = status switch
        {
            201 => (c.Created + 1, c.Updated, c.Failed),
            < 300 => (c.Created, c.Updated + 1, c.Failed),
            _ => (c.Created, c.Updated, c.Failed + 1),
        };
    }
}

/// <summary>
/// Loads FHIR Bundles (batch or transaction), single resources and NDJSON files through the same transaction code as
/// the HTTP API. Files are applied in path order (Synthea's <c>0-*</c> information bundles come first); the next file
/// is parsed while the current one is written.
/// </summary>
internal sealed class Importer(FhirEngine engine)
{
    private const string ImportBase = "urn:ward:import";
    private const int NdjsonBatch = 500;

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
        var channel = Channel.CreateBounded<(string File, Exception? Error, List<Bundle> Bundles)>(2);
        var producer = System.Threading.Tasks.Task.Run(async () =>
        {
            try
            {
                foreach (var file in files)
                {
                    List<Bundle> bundles;
                    Exception? error = null;
                    try
                    {
                        bundles = await ReadAsync(file, ct);
                    }
                    catch (FhirException e)
                    {
                        bundles = [];
                        error = e;
                    }
                    await channel.Writer.WriteAsync((file, error, bundles), ct);
                }
            }
            finally
            {
                channel.Writer.Complete();
            }
        }, ct);
        var done = 0;
        await foreach (var (file, error, bundles) in channel.Reader.ReadAllAsync(ct))
        {
            if (error is not null)
            {
                summary.Errors.Add($"{file}: {error.Message}");
            }
            foreach (var bundle in bundles)
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
                    CountResponses(bundle, response.Body!, summary, file);
                }
                catch (FhirException e)
                {
                    summary.Errors.Add($"{file}: {e.Message}");
                    foreach (var entry in bundle.Entry)
                    {
                        summary.Count(entry.Resource?.TypeName ?? "(none)", 400);
                    }
                }
            }
            progress?.Report(new ImportProgress(file, ++done, files.Count, summary.Resources));
        }
        await producer;
        summary.Elapsed = started.Elapsed;
        return summary;
    }

    private static void CountResponses(Bundle request, byte[] response, ImportSummary summary, string file)
    {
        using var doc = JsonDocument.Parse(response);
        var i = 0;
        foreach (var entry in doc.RootElement.GetProperty("entry").EnumerateArray())
        {
            var type = request.Entry[i].Resource?.TypeName ?? request.Entry[i].Request?.Url?.Split('/', '?')[0] ?? "(none)";
            var statusText = entry.GetProperty("response").GetProperty("status").GetString() ?? "";
            var status = int.Parse(statusText.AsSpan(0, 3), System.Globalization.CultureInfo.InvariantCulture);
            summary.Count(type, status);
            if (status >= 400 && entry.GetProperty("response").TryGetProperty("outcome", out var outcome))
            {
                var message = outcome.GetProperty("issue")[0].TryGetProperty("diagnostics", out var d) ? d.GetString() : "failed";
                summary.Errors.Add($"{file}: entry {i}: {message}");
            }
            i++;
        }
    }

    /// <summary>Reads one file as Bundles to post: a batch/transaction as it is; a single resource or NDJSON lines as batches of PUT/POST.</summary>
    private static async Task<List<Bundle>> ReadAsync(string file, CancellationToken ct)
    {
        if (file.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase))
        {
            var result = new List<Bundle>();
            var current = NewBatch();
            var lineNo = 0;
            await foreach (var line in File.ReadLinesAsync(file, ct))
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line))
                {
                    continue;
                }
                Resource resource;
                try
                {
                    resource = FhirJson.Parse(Encoding.UTF8.GetBytes(line));
                }
                catch (FhirException e)
                {
                    throw FhirException.BadRequest($"line {lineNo}: {e.Message}");
                }
                current.Entry.Add(EntryFor(resource));
                if (current.Entry.Count == NdjsonBatch)
                {
                    result.Add(current);
                    current = NewBatch();
                }
            }
            if (current.Entry.Count > 0)
            {
                result.Add(current);
            }
            return result;
        }
        var bytes = await File.ReadAllBytesAsync(file, ct);
        var parsed = FhirJson.Parse(bytes);
        if (parsed is Bundle { Type: Bundle.BundleType.Batch or Bundle.BundleType.Transaction } b)
        {
            return [b];
        }
        var single = NewBatch();
        single.Entry.Add(EntryFor(parsed));
        return [single];
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
