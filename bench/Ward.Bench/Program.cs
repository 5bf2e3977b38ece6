using System.Diagnostics;
using System.Net;
using System.Text.Json;

// Load generator for a running Ward node (see bench/README.md). Client and server share this machine's 2 cores.
//   ingest URL DIR CLIENTS   post every Bundle in DIR (0-* batch bundles first, sequentially) as HTTP transactions
//   ids URL TYPE OUT         write the ids of TYPE to OUT (one per line) for wrk
//   search URL N             Observation?patient=X&code=Y latency over N requests (median, p99)
var mode = args.ElementAtOrDefault(0);
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { Timeout = TimeSpan.FromMinutes(10) };
switch (mode)
{
    case "ingest":
        return await Ingest(http, args[1].TrimEnd('/'), args[2], int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture));
    case "ids":
        return await Ids(http, args[1].TrimEnd('/'), args[2], args[3]);
    case "search":
        return await Search(http, args[1].TrimEnd('/'), int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
    default:
        Console.Error.WriteLine("usage: ingest URL DIR CLIENTS | ids URL TYPE OUT | search URL N");
        return 2;
}

static async Task<int> Ingest(HttpClient http, string url, string dir, int clients)
{
    var files = Directory.EnumerateFiles(dir, "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
    var info = files.Where(f => Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)).ToList();
    var patients = files.Except(info).ToList();
    var payloads = patients.Select(File.ReadAllBytes).ToList();
    var resources = payloads.Sum(CountEntries);
    foreach (var f in info)
    {
        await Post(http, url, File.ReadAllBytes(f));
    }
    var watch = Stopwatch.StartNew();
    await Parallel.ForEachAsync(payloads, new ParallelOptions { MaxDegreeOfParallelism = clients }, async (p, _) => await Post(http, url, p));
    watch.Stop();
    Console.WriteLine($"ingest: {patients.Count} transactions, {resources} resources in {watch.Elapsed.TotalSeconds:F2} s = {resources / watch.Elapsed.TotalSeconds:F0} resources/s ({clients} clients)");
    return 0;
}

static int CountEntries(byte[] bundle)
{
    using var doc = JsonDocument.Parse(bundle);
    return doc.RootElement.GetProperty("entry").GetArrayLength();
}

static async Task Post(HttpClient http, string url, byte[] body)
{
    using var content = new ByteArrayContent(body);
    content.Headers.ContentType = new("application/fhir+json");
    using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = content };
    request.Headers.Add("Prefer", "return=minimal");
    using var response = await http.SendAsync(request);
    if (response.StatusCode != HttpStatusCode.OK)
    {
        throw new InvalidOperationException($"{response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
    }
}

static async Task<int> Ids(HttpClient http, string url, string type, string output)
{
    var ids = new List<string>();
    string? next = $"{url}/{type}?_count=1000&_elements=id&_total=none";
    while (next is not null)
    {
        using var doc = JsonDocument.Parse(await http.GetByteArrayAsync(next));
        if (doc.RootElement.TryGetProperty("entry", out var entries))
        {
            ids.AddRange(entries.EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("id").GetString()!));
        }
        next = doc.RootElement.GetProperty("link").EnumerateArray().Where(l => l.GetProperty("relation").GetString() == "next")
            .Select(l => l.GetProperty("url").GetString()).FirstOrDefault();
    }
    await File.WriteAllLinesAsync(output, ids);
    Console.WriteLine($"{ids.Count} {type} ids written to {output}");
    return 0;
}

static async Task<int> Search(HttpClient http, string url, int n)
{
    // Pairs (patient, code) that exist: take the code of each patient's first Observation.
    using var seed = JsonDocument.Parse(await http.GetByteArrayAsync($"{url}/Observation?_count=1000&_total=none"));
    var pairs = seed.RootElement.GetProperty("entry").EnumerateArray()
        .Select(e => e.GetProperty("resource"))
        .Select(r => (Patient: r.GetProperty("subject").GetProperty("reference").GetString()!, Code: r.GetProperty("code").GetProperty("coding")[0].GetProperty("code").GetString()!))
        .Distinct().ToList();
    var random = new Random(42);
    var times = new List<double>(n);
    for (var i = 0; i < n + 50; i++)
    {
        var (patient, code) = pairs[random.Next(pairs.Count)];
        var watch = Stopwatch.StartNew();
        using var response = await http.GetAsync($"{url}/Observation?patient={patient}&code=http://loinc.org|{code}");
        await response.Content.ReadAsByteArrayAsync();
        watch.Stop();
        if (i >= 50)
        {
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
    }
    times.Sort();
    Console.WriteLine($"search Observation?patient=X&code=Y: n={n} median {times[n / 2]:F2} ms, p99 {times[(int)(n * 0.99)]:F2} ms, max {times[^1]:F2} ms");
    return 0;
}
