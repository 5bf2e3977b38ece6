using System.Diagnostics;
using System.Net;
using System.Text.Json;

// Load generator for a running Ward node (see bench/README.md). Client and server share this machine's 2 cores.
//   ingest URL DIR CLIENTS   post every Bundle in DIR (0-* batch bundles first, sequentially) as HTTP transactions
//   ids URL TYPE OUT         write the ids of TYPE to OUT (one per line) for wrk
//   search URL N             Observation?patient=X&code=Y latency over N requests (median, p99)
//   crypto SECONDS           AES-256-GCM and HMAC-SHA-256 throughput of this machine, through Ward's own envelope code
//   audit DATA N CLIENTS     append N audit entries to a fresh node's log from CLIENTS concurrent requests (group commit),
//                            then N in transactions of 1,000; then the latency of 10,000 inclusion proofs at size N
//   serve DATA URL [--no-auth]  host the node's web server (as 'ward serve'); --no-auth skips token checks, for bench/auth.sh only
//   stow URL FILE COUNT CLIENTS PER-REQUEST [PATIENT-ID]  STOW-RS COUNT copies of FILE (each with its own SOP Instance
//                            UID, 100 per study; with PATIENT-ID, of that patient) to URL (a DICOMweb base: Ward's
//                            /dicomweb or Orthanc's /dicom-web), PER-REQUEST instances per request from CLIENTS
//                            concurrent clients; prints instances/s
//   get URL N [ACCEPT]       latency of N GETs of URL (median, p99), for QIDO-RS and WADO-RS
//   post URL N BODY          latency of N POSTs of BODY (JSON) to URL, for Orthanc's /instances/{id}/anonymize
//   deid FILE N              in-process PS3.15 basic profile de-identification of FILE (read, de-identify, write), N times
// The HTTP modes send the access token in WARD_TOKEN, if set.
var mode = args.ElementAtOrDefault(0);
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { Timeout = TimeSpan.FromMinutes(10) };
if (Environment.GetEnvironmentVariable("WARD_TOKEN") is { Length: > 0 } token)
{
    http.DefaultRequestHeaders.Authorization = new("Bearer", token);
}
switch (mode)
{
    case "serve":
        return await Serve(args[1], args[2], args.Contains("--no-auth"));
    case "ingest":
        return await Ingest(http, args[1].TrimEnd('/'), args[2], int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture));
    case "ids":
        return await Ids(http, args[1].TrimEnd('/'), args[2], args[3]);
    case "search":
        return await Search(http, args[1].TrimEnd('/'), int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
    case "store-reads":
        return StoreReads(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
    case "audit":
        return await AuditAppends(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture));
    case "crypto":
        return Crypto(double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture));
    case "stow":
        return Stow(args[1].TrimEnd('/'), args[2], Int(args[3]), Int(args[4]), Int(args[5]), args.ElementAtOrDefault(6));
    case "get":
        return await Latency(http, HttpMethod.Get, args[1], Int(args[2]), args.ElementAtOrDefault(3), null);
    case "post":
        return await Latency(http, HttpMethod.Post, args[1], Int(args[2]), null, args[3]);
    case "deid":
        return Deid(args[1], Int(args[2]));
    default:
        Console.Error.WriteLine("usage: ingest URL DIR CLIENTS | ids URL TYPE OUT | search URL N | crypto SECONDS | audit DATA N CLIENTS | serve DATA URL [--no-auth]");
        return 2;
}

static async Task<int> Serve(string data, string urls, bool noAuth)
{
    var config = Ward.Core.Node.NodeConfig.Load(data);
    using var store = Ward.Core.Storage.RecordStore.Open(config);
    var app = Ward.Server.WardServer.Build(config, urls, store, requireTokens: !noAuth);
    await app.RunAsync();
    return 0;
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
    Console.WriteLine($"search Observation?patient=X&code=Y: {Percentiles(times, "F2")}, max {times[^1]:F2} ms");
    return 0;
}

static async Task<int> AuditAppends(string data, int n, int clients)
{
    var config = Ward.Core.Node.NodeConfig.Load(data);
    using var store = Ward.Core.Storage.RecordStore.Open(config);
    await using var audit = Ward.Core.Audit.AuditLog.Open(config, store);
    // A read's event as the engine makes it: a clinician, a patient, one resource version.
    Ward.Core.Audit.AuditRecord Record(int i) => new()
    {
        Kind = Ward.Core.Audit.AuditKind.Rest,
        Subtype = "read",
        Action = 'R',
        Status = 200,
        RecordedTicks = DateTime.UtcNow.Ticks,
        Subject = "3f0c7a9e-2b1d-4c8e-9a7f-5d6e1b2c3a4f",
        Role = "clinician",
        FhirUser = "Practitioner/8b2e4f1a-6c3d-4e5f-a7b8-9c0d1e2f3a4b",
        ClientId = "ehr",
        Address = "10.1.2.3",
        Purpose = "TREAT",
        Patient = $"patient-{i % 5000}",
        Entities = [new($"Observation/obs-{i}/_history/1")],
    };
    var watch = Stopwatch.StartNew();
    var next = -1;
    await Task.WhenAll(Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
    {
        for (var i = Interlocked.Increment(ref next); i < n; i = Interlocked.Increment(ref next))
        {
            await audit.RecordAsync([Record(i)]);
        }
    })));
    var grouped = n / watch.Elapsed.TotalSeconds;
    Console.WriteLine($"audit: {n:N0} entries from {clients} concurrent requests (group commit, durable before each returns): {grouped:N0} entries/s");
    watch.Restart();
    for (var start = 0; start < n; start += 1000)
    {
        var batch = Enumerable.Range(start, Math.Min(1000, n - start)).Select(Record).ToList();
        await store.WriteAsync(s => { audit.Append(s, batch); return 0; }, CancellationToken.None);
    }
    Console.WriteLine($"audit: {n:N0} entries in transactions of 1,000 (as a large import writes them): {n / watch.Elapsed.TotalSeconds:N0} entries/s");
    await audit.CheckpointAsync(CancellationToken.None);
    var size = store.Read(s => s.AuditSize());
    var random = new Random(1);
    var times = new List<double>();
    using (var session = store.OpenRead())
    {
        var subtrees = Ward.Core.Audit.AuditLog.Subtrees(session);
        for (var i = 0; i < 10_000; i++)
        {
            var t = Stopwatch.StartNew();
            Ward.Core.Audit.Merkle.InclusionProof(random.NextInt64(size), size, subtrees);
            times.Add(t.Elapsed.TotalMilliseconds);
        }
    }
    times.Sort();
    Console.WriteLine($"audit: inclusion proof at {size:N0} entries: median {times[times.Count / 2]:F3} ms, p99 {times[(int)(times.Count * 0.99)]:F3} ms, max {times[^1]:F3} ms");
    return 0;
}

static int Crypto(double seconds)
{
    var key = Ward.Core.Crypto.KeyRing.NewDataKey();
    using var cipher = new System.Security.Cryptography.AesGcm(key, 16);
    foreach (var size in new[] { 1024, 4096, 65536 })
    {
        var plaintext = new byte[size];
        Random.Shared.NextBytes(plaintext);
        long n = 0;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            Ward.Core.Crypto.KeyRing.Seal(cipher, 7, "Observation", "0b6c1a52-3f7e-4d3a-9c1e-2f4b8a6d7e90", 1, plaintext);
            n++;
        }
        var perSecond = n / watch.Elapsed.TotalSeconds;
        Console.WriteLine($"crypto: seal {size,6} B records: {perSecond:N0}/s = {perSecond * size / 1e6:N0} MB/s ({1e6 / perSecond:F2} µs each)");
    }
    var blind = new Ward.Core.Crypto.Blinder(key);
    long h = 0;
    var clock = Stopwatch.StartNew();
    while (clock.Elapsed.TotalSeconds < seconds)
    {
        blind.Hash(Ward.Core.Crypto.Blinder.Prefix, "family", "dupont");
        h++;
    }
    Console.WriteLine($"crypto: blind index hash: {h / clock.Elapsed.TotalSeconds:N0}/s ({clock.Elapsed.TotalMilliseconds * 1000 / h:F2} µs each)");
    return 0;
}

// In-process: the store's read path (open + decrypt) against the bare SQL read of the same rows.
static int StoreReads(string dataDir, int n)
{
    var config = Ward.Core.Node.NodeConfig.Load(dataDir);
    using var store = Ward.Core.Storage.RecordStore.Open(config);
    using var session = store.OpenRead();
    var ids = new List<string>();
    using (var cmd = session.Lease.Connection.CreateCommand())
    {
        cmd.CommandText = "SELECT id FROM resource WHERE type = 'Patient'";
        using var r = cmd.ExecuteReader();
        while (r.Read()) ids.Add(r.GetString(0));
    }
    var random = new Random(1);
    using var raw = session.Lease.Connection.CreateCommand();
    raw.CommandText = "SELECT v.data FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version WHERE r.type = 'Patient' AND r.id = @i";
    var p = raw.CreateParameter();
    p.ParameterName = "@i";
    raw.Parameters.Add(p);
    for (var round = 0; round < 3; round++)
    {
        var w = Stopwatch.StartNew();
        for (var i = 0; i < n; i++) session.Read("Patient", ids[random.Next(ids.Count)]);
        var store_ = w.Elapsed.TotalMilliseconds * 1000 / n;
        w.Restart();
        for (var i = 0; i < n; i++) { p.Value = ids[random.Next(ids.Count)]; using var r = raw.ExecuteReader(); r.Read(); _ = (byte[])r.GetValue(0); }
        var bare = w.Elapsed.TotalMilliseconds * 1000 / n;
        Console.WriteLine($"store-reads: Read {store_:F2} µs, bare SQL {bare:F2} µs, difference {store_ - bare:F2} µs");
    }
    return 0;
}

/// <summary>"n=N median M ms, p99 P ms" of latencies in milliseconds (sorts them).</summary>
static string Percentiles(List<double> times, string format)
{
    times.Sort();
    var n = times.Count;
    return $"n={n} median {times[n / 2].ToString(format, System.Globalization.CultureInfo.InvariantCulture)} ms, p99 {times[(int)(n * 0.99)].ToString(format, System.Globalization.CultureInfo.InvariantCulture)} ms";
}

static int Int(string text) => int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);

static int Stow(string url, string file, int count, int clients, int perRequest, string? patientId)
{
    // Every copy gets its own SOP Instance UID, and every 100 copies their own study and series, before the clock starts.
    var source = Ward.Core.Imaging.DicomFile.Read(File.ReadAllBytes(file));
    var prefix = "2.25." + Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);
    var copies = new List<byte[]>(count);
    for (var i = 0; i < count; i++)
    {
        var ds = source.Dataset;
        ds.SetString(Ward.Core.Imaging.DicomTag.SopInstanceUid, Ward.Core.Imaging.DicomVR.UI, $"{prefix}.1.{i}");
        ds.SetString(Ward.Core.Imaging.DicomTag.StudyInstanceUid, Ward.Core.Imaging.DicomVR.UI, $"{prefix}.2.{i / 100}");
        ds.SetString(Ward.Core.Imaging.DicomTag.SeriesInstanceUid, Ward.Core.Imaging.DicomVR.UI, $"{prefix}.3.{i / 100}");
        if (patientId is not null)
        {
            ds.SetString(Ward.Core.Imaging.DicomTag.PatientId, Ward.Core.Imaging.DicomVR.LO, patientId);
        }
        copies.Add(Ward.Core.Imaging.DicomWriter.ToBytes(source));
    }
    // Each request is framed before the clock starts too, and sent by a plain HTTP/1.1 client on a blocking socket (one
    // thread per client): the load generator shares the two cores with the server, so it should spend as little of
    // them as it can, the same for both servers.
    var target = new Uri(url + "/studies");
    var boundary = "ward-bench-" + Guid.NewGuid().ToString("N");
    var token = Environment.GetEnvironmentVariable("WARD_TOKEN");
    var requests = copies.Chunk(perRequest).Select(part =>
    {
        var body = Multipart(part, boundary);
        var head = $"POST {target.PathAndQuery} HTTP/1.1\r\nHost: {target.Authority}\r\n"
            + (token is { Length: > 0 } ? $"Authorization: Bearer {token}\r\n" : "")
            + $"Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n"
            + $"Accept: application/dicom+json\r\nContent-Length: {body.Length}\r\n\r\n";
        return (Head: System.Text.Encoding.ASCII.GetBytes(head), Body: body);
    }).ToList();
    var next = -1;
    var failures = 0;
    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
    var watch = Stopwatch.StartNew();
    var threads = Enumerable.Range(0, clients).Select(_ => new Thread(() =>
    {
        using var client = new RawHttpClient(target);
        int r;
        while ((r = Interlocked.Increment(ref next)) < requests.Count)
        {
            if (client.Send(requests[r].Head, requests[r].Body) != 200)
            {
                Interlocked.Increment(ref failures);
            }
        }
    })).ToList();
    threads.ForEach(t => t.Start());
    threads.ForEach(t => t.Join());
    watch.Stop();
    cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu;
    Console.WriteLine($"stow {count} instances of {new FileInfo(file).Length / 1024} KB, {perRequest} per request, {clients} clients: {count / watch.Elapsed.TotalSeconds:F0} instances/s ({failures} failed requests; load generator {cpu.TotalMilliseconds / count:F2} ms of CPU per instance)");
    return failures == 0 ? 0 : 1;
}

/// <summary>A multipart/related body of DICOM parts (PS3.18 STOW-RS).</summary>
static byte[] Multipart(byte[][] parts, string boundary)
{
    using var body = new MemoryStream();
    foreach (var part in parts)
    {
        body.Write(System.Text.Encoding.ASCII.GetBytes($"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"));
        body.Write(part);
        body.Write("\r\n"u8);
    }
    body.Write(System.Text.Encoding.ASCII.GetBytes($"--{boundary}--\r\n"));
    return body.ToArray();
}

static async Task<int> Latency(HttpClient http, HttpMethod method, string url, int n, string? accept, string? body)
{
    var times = new List<double>(n);
    for (var i = 0; i < n + 20; i++)
    {
        using var request = new HttpRequestMessage(method, url);
        if (accept is not null)
        {
            request.Headers.TryAddWithoutValidation("Accept", accept);
        }
        if (body is not null)
        {
            request.Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        }
        var watch = Stopwatch.StartNew();
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        watch.Stop();
        if (!response.IsSuccessStatusCode)
        {
            Console.Error.WriteLine($"{method} {url}: {(int)response.StatusCode}");
            return 1;
        }
        if (i >= 20)
        {
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
    }
    Console.WriteLine($"{method} {url}: {Percentiles(times, "F2")}");
    return 0;
}

static int Deid(string file, int n)
{
    var bytes = File.ReadAllBytes(file);
    var deidentifier = new Ward.Core.Imaging.DicomDeidentifier(Ward.Core.Imaging.DeidOptions.None, System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
    var times = new List<double>(n);
    for (var i = 0; i < n + 200; i++)
    {
        var watch = Stopwatch.StartNew();
        var clean = deidentifier.Deidentify(Ward.Core.Imaging.DicomFile.Read(bytes));
        _ = Ward.Core.Imaging.DicomWriter.ToBytes(clean);
        watch.Stop();
        if (i >= 200)
        {
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
    }
    Console.WriteLine($"deid {Path.GetFileName(file)} ({bytes.Length / 1024} KB): {Percentiles(times, "F3")} per instance");
    return 0;
}

/// <summary>
/// A minimal HTTP/1.1 client for the STOW load: one kept-alive connection, requests sent whole (head and body in one
/// call), the response read and dropped (Content-Length or chunked), reconnecting when the server closes.
/// </summary>
internal sealed class RawHttpClient(Uri target) : IDisposable
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private System.Net.Sockets.Socket? _socket;
    private int _start;
    private int _end;

    /// <summary>Sends one request and returns the response's status code.</summary>
    public int Send(byte[] head, byte[] body)
    {
        if (_socket is null)
        {
            _socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
            _socket.Connect(target.Host, target.Port);
            _start = _end = 0;
        }
        _socket.Send([new ArraySegment<byte>(head), new ArraySegment<byte>(body)]);
        var status = int.Parse(Line().Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        long length = 0;
        bool chunked = false, close = false;
        for (var line = Line(); line.Length > 0; line = Line())
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var (name, value) = (line[..colon].Trim(), line[(colon + 1)..].Trim());
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) length = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
            if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)) chunked = value.Contains("chunked", StringComparison.OrdinalIgnoreCase);
            if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase)) close = value.Equals("close", StringComparison.OrdinalIgnoreCase);
        }
        if (!chunked)
        {
            Skip(length);
        }
        else
        {
            long size;
            while ((size = long.Parse(Line().Split(';')[0], System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture)) > 0)
            {
                Skip(size);
                Line();
            }
            while (Line().Length > 0)
            {
            }
        }
        if (close)
        {
            Dispose();
        }
        return status;
    }

    private string Line()
    {
        while (true)
        {
            var at = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n"u8);
            if (at >= 0)
            {
                var line = System.Text.Encoding.ASCII.GetString(_buffer, _start, at);
                _start += at + 2;
                return line;
            }
            Fill();
        }
    }

    private void Skip(long count)
    {
        while (count > 0)
        {
            if (_start == _end)
            {
                Fill();
            }
            var n = (int)Math.Min(count, _end - _start);
            _start += n;
            count -= n;
        }
    }

    private void Fill()
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            (_end, _start) = (_end - _start, 0);
        }
        var read = _socket!.Receive(_buffer.AsSpan(_end));
        if (read == 0)
        {
            throw new IOException("The server closed the connection in the middle of a response.");
        }
        _end += read;
    }

    public void Dispose()
    {
        _socket?.Dispose();
        _socket = null;
    }
}
