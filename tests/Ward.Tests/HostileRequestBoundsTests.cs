using System.Diagnostics;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;
using Microsoft.Extensions.DependencyInjection;
using Ward.Core.Node;
using Ward.Server;
using Xunit.Abstractions;

namespace Ward.Tests;

/// <summary>
/// No request makes the node hold more than a fixed amount before or after its caller is authorized: multipart parts
/// and part headers, compressed bodies, JSON and XML depth and element counts, Bundle entries, each caller's expensive
/// requests in progress (429 with Retry-After) and all requests together (503 with Retry-After), over real HTTP.
/// </summary>
public sealed class HostileRequestBoundsTests(HostileRequestBoundsTests.BoundedNode node, ITestOutputHelper output) : IClassFixture<HostileRequestBoundsTests.BoundedNode>
{
    /// <summary>A node with small shares of concurrent work, so that a test can saturate them with a few held requests.</summary>
    public sealed class BoundedNode : TestNode
    {
        public BoundedNode()
        {
            RequestLimits = new RequestLimitsConfig { HeavyRequestsPerCaller = 2, MaxConcurrentRequests = 6, MaxBodyElements = 1_000_000 };
        }
    }

    private const string Boundary = "ward-bounds";

    private HttpClient Patient(string subject) =>
        node.NewHttp(node.Token(new AccessGrant(subject, "bounds-tests", "patient", SmartScopes.Parse("patient/*.cruds"), "p-" + subject, "Patient/p-" + subject)));

    private static HttpContent Multipart(string body)
    {
        var content = new ByteArrayContent(Encoding.ASCII.GetBytes(body));
        content.Headers.ContentType = MediaTypeHeaderValue.Parse($"multipart/related; type=\"application/dicom\"; boundary={Boundary}");
        return content;
    }

    private static string EmptyParts(int count) =>
        string.Concat(Enumerable.Repeat($"--{Boundary}\r\nContent-Type: application/dicom\r\n\r\n\r\n", count)) + $"--{Boundary}--\r\n";

    private static async Task<(HttpStatusCode Status, string Body)> Answer(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, body);
    }

    private static void Refused(HttpStatusCode expected, (HttpStatusCode Status, string Body) answer, string words)
    {
        Assert.True(answer.Status == expected, $"{(int)answer.Status} {answer.Body}");
        Assert.Equal("OperationOutcome", JsonDocument.Parse(answer.Body).RootElement.GetProperty("resourceType").GetString());
        Assert.Contains(words, answer.Body);
    }

    [Fact]
    public async Task Twenty_thousand_empty_stow_parts_with_a_patient_token_are_refused_at_the_part_limit()
    {
        using var patient = Patient("stow-parts");
        Refused(HttpStatusCode.RequestEntityTooLarge, await Answer(await patient.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(EmptyParts(20_000)))), "max-multipart-parts");
        // Many tiny parts, one over the limit, are refused the same way; at the limit they are read (and each refused as no DICOM).
        Refused(HttpStatusCode.RequestEntityTooLarge, await Answer(await patient.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(EmptyParts(1_001)))), "max-multipart-parts");
        var atLimit = await Answer(await patient.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(EmptyParts(1_000))));
        Assert.NotEqual(HttpStatusCode.RequestEntityTooLarge, atLimit.Status);
        Assert.NotEqual(HttpStatusCode.InternalServerError, atLimit.Status);
        // Without a token nothing is read at all.
        using var anonymous = node.NewHttp(null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(EmptyParts(20_000)))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync($"{node.BaseUrl}/metadata")).StatusCode);
    }

    [Fact]
    public async Task Huge_part_headers_and_huge_request_headers_are_refused()
    {
        using var patient = Patient("part-headers");
        var longHeader = $"--{Boundary}\r\nContent-Type: application/dicom\r\nX-Filler: {new string('a', 100_000)}\r\n\r\nxx\r\n--{Boundary}--\r\n";
        Refused(HttpStatusCode.BadRequest, await Answer(await patient.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(longHeader))), "malformed");
        var manyHeaders = $"--{Boundary}\r\n" + string.Concat(Enumerable.Range(0, 5_000).Select(i => $"X-H{i}: v\r\n")) + $"\r\nxx\r\n--{Boundary}--\r\n";
        Refused(HttpStatusCode.BadRequest, await Answer(await patient.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(manyHeaders))), "malformed");
        // The request's own headers: bounded before the token in them is even looked at.
        using var request = new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/metadata");
        for (var i = 0; i < 20; i++)
        {
            request.Headers.Add($"X-Filler-{i}", new string('b', 4_000));
        }
        Assert.Equal(HttpStatusCode.RequestHeaderFieldsTooLarge, (await node.NewHttp(null).SendAsync(request)).StatusCode);
        using var many = new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/metadata");
        for (var i = 0; i < 200; i++)
        {
            many.Headers.Add($"X-Many-{i}", "v");
        }
        Assert.Equal(HttpStatusCode.RequestHeaderFieldsTooLarge, (await node.NewHttp(null).SendAsync(many)).StatusCode);
    }

    [Fact]
    public async Task Compressed_bodies_are_never_decompressed()
    {
        // A gzip bomb: 64 MB of spaces in about 64 KB.
        using var packed = new MemoryStream();
        using (var gzip = new GZipStream(packed, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            var spaces = new byte[1 << 20];
            Array.Fill(spaces, (byte)' ');
            for (var i = 0; i < 64; i++)
            {
                gzip.Write(spaces);
            }
        }
        foreach (var (url, type, encoding) in new[]
        {
            ($"{node.BaseUrl}/Patient", "application/fhir+json", "gzip"),
            ($"{node.BaseUrl}/Patient", "application/fhir+json", "deflate"),
            ($"{node.BaseUrl}/Patient", "application/fhir+json", "br"),
            ($"{node.Origin}/dicomweb/studies", $"multipart/related; type=\"application/dicom\"; boundary={Boundary}", "gzip"),
            ($"{node.Origin}/connect/token", "application/x-www-form-urlencoded", "gzip"),
        })
        {
            var content = new ByteArrayContent(packed.ToArray());
            content.Headers.ContentType = MediaTypeHeaderValue.Parse(type);
            content.Headers.ContentEncoding.Add(encoding);
            Refused(HttpStatusCode.UnsupportedMediaType, await Answer(await node.Http.PostAsync(url, content)), "Content-Encoding");
        }
    }

    [Fact]
    public async Task Deep_nesting_and_too_many_elements_are_refused_before_parsing()
    {
        using var patient = Patient("nesting");
        var deepJson = "{\"resourceType\":\"Patient\",\"extension\":[" + string.Concat(Enumerable.Repeat("{\"url\":\"http://x\",\"extension\":[", 5_000)) + "{}"
            + string.Concat(Enumerable.Repeat("]}", 5_000)) + "]}";
        Refused(HttpStatusCode.BadRequest, await Answer(await patient.PostAsync($"{node.BaseUrl}/Patient", new StringContent(deepJson, Encoding.UTF8, "application/fhir+json"))), "max-body-depth");
        var deepXml = "<Patient xmlns=\"http://hl7.org/fhir\">" + string.Concat(Enumerable.Repeat("<extension url=\"http://x\">", 20_000))
            + string.Concat(Enumerable.Repeat("</extension>", 20_000)) + "</Patient>";
        Refused(HttpStatusCode.BadRequest, await Answer(await patient.PostAsync($"{node.BaseUrl}/Patient", new StringContent(deepXml, Encoding.UTF8, "application/fhir+xml"))), "max-body-depth");
        var deepPatch = string.Concat(Enumerable.Repeat("[", 1_000)) + string.Concat(Enumerable.Repeat("]", 1_000));
        Refused(HttpStatusCode.BadRequest, await Answer(await patient.PatchAsync($"{node.BaseUrl}/Patient/p-nesting", new StringContent(deepPatch, Encoding.UTF8, "application/json-patch+json"))), "max-body-depth");
        // 1.1 million tokens in 2 MB: what a parser would turn into hundreds of megabytes of objects (this node takes a million).
        var wide = "{\"resourceType\":\"Patient\",\"x\":[" + string.Join(',', Enumerable.Repeat("0", 1_100_000)) + "]}";
        Refused(HttpStatusCode.RequestEntityTooLarge, await Answer(await patient.PostAsync($"{node.BaseUrl}/Patient", new StringContent(wide, Encoding.UTF8, "application/fhir+json"))), "max-body-elements");
        var wideXml = "<Patient xmlns=\"http://hl7.org/fhir\">" + string.Concat(Enumerable.Repeat("<a/>", 1_100_000)) + "</Patient>";
        Refused(HttpStatusCode.RequestEntityTooLarge, await Answer(await patient.PostAsync($"{node.BaseUrl}/Patient", new StringContent(wideXml, Encoding.UTF8, "application/fhir+xml"))), "max-body-elements");
    }

    [Fact]
    public async Task A_bundle_with_too_many_entries_is_refused_whole()
    {
        var entries = string.Join(',', Enumerable.Range(0, 10_001).Select(i =>
            $"{{\"fullUrl\":\"urn:uuid:{Guid.NewGuid()}\",\"resource\":{{\"resourceType\":\"Basic\",\"code\":{{\"text\":\"bounds {i}\"}}}},\"request\":{{\"method\":\"POST\",\"url\":\"Basic\"}}}}"));
        foreach (var type in new[] { "transaction", "batch" })
        {
            var bundle = $"{{\"resourceType\":\"Bundle\",\"type\":\"{type}\",\"entry\":[{entries}]}}";
            Refused(HttpStatusCode.RequestEntityTooLarge, await Answer(await node.Http.PostAsync(node.BaseUrl, new StringContent(bundle, Encoding.UTF8, "application/fhir+json"))), "max-bundle-entries");
        }
        var found = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/Basic?code:text=bounds&_summary=count"));
        Assert.Equal(0, found.RootElement.GetProperty("total").GetInt32());
    }

    /// <summary>A request body that sends <paramref name="prefix"/>, then waits for <paramref name="release"/> before it ends.</summary>
    private sealed class HeldBody(string prefix, string rest, Task release) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(prefix));
            await stream.FlushAsync();
            await release;
            await stream.WriteAsync(Encoding.ASCII.GetBytes(rest));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }

    /// <summary>STOW-RS requests of these callers whose bodies stay open until the returned source is set.</summary>
    private (TaskCompletionSource Release, List<Task<HttpResponseMessage>> Held) Hold(params HttpClient[] callers)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = callers.Select(c =>
        {
            var body = new HeldBody($"--{Boundary}\r\nContent-Type: application/dicom\r\n\r\n", $"xx\r\n--{Boundary}--\r\n", release.Task);
            body.Headers.ContentType = MediaTypeHeaderValue.Parse($"multipart/related; type=\"application/dicom\"; boundary={Boundary}");
            return c.PostAsync($"{node.Origin}/dicomweb/studies", body);
        }).ToList();
        return (release, held);
    }

    /// <summary>Waits until the node reports <paramref name="reached"/> (the held requests reach it in their own time).</summary>
    private static async Task WaitFor(Func<bool> reached, string what)
    {
        for (var attempt = 0; !reached(); attempt++)
        {
            Assert.True(attempt < 600, "the node never had " + what);
            await Task.Delay(100);
        }
    }

    private HeavyRequests Heavy => node.Services.GetRequiredService<FhirEndpoint>().Heavy;

    [Fact]
    public async Task A_caller_beyond_its_share_of_expensive_requests_gets_429_while_others_are_served()
    {
        using var greedy = Patient("greedy");
        using var other = Patient("other");
        var (release, held) = Hold(greedy, greedy);
        try
        {
            var expensive = $"{node.BaseUrl}/Patient?_include=Patient:general-practitioner";
            await WaitFor(() => Heavy.InProgress("greedy") == 2, "both STOW-RS requests of the caller in progress");
            using var refused = await greedy.GetAsync(expensive);
            Refused(HttpStatusCode.TooManyRequests, await Answer(refused), "heavy-requests-per-caller");
            Assert.Equal(TimeSpan.FromSeconds(1), refused.Headers.RetryAfter?.Delta);
            // Each expensive kind counts: a STOW-RS, a transaction, an operation, a search with _revinclude.
            Assert.Equal(HttpStatusCode.TooManyRequests, (await greedy.PostAsync($"{node.Origin}/dicomweb/studies", Multipart(EmptyParts(1)))).StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await greedy.PostAsync(node.BaseUrl, new StringContent("""{"resourceType":"Bundle","type":"transaction"}""", Encoding.UTF8, "application/fhir+json"))).StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await greedy.GetAsync($"{node.BaseUrl}/Patient/p-greedy/$everything")).StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await greedy.GetAsync($"{node.BaseUrl}/Patient?_revinclude=Observation:subject")).StatusCode);
            // The same caller's plain requests, and everybody else's expensive ones, are served.
            Assert.NotEqual(HttpStatusCode.TooManyRequests, (await greedy.GetAsync($"{node.BaseUrl}/Observation?patient=p-greedy")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await other.GetAsync(expensive)).StatusCode);
        }
        finally
        {
            release.SetResult();
            foreach (var h in held)
            {
                (await h).Dispose();
            }
        }
        Assert.Equal(HttpStatusCode.OK, (await greedy.GetAsync($"{node.BaseUrl}/Patient?_include=Patient:general-practitioner")).StatusCode);
    }

    [Fact]
    public async Task An_overloaded_node_answers_503_with_retry_after_and_recovers()
    {
        using var a = Patient("load-a");
        using var b = Patient("load-b");
        using var c = Patient("load-c");
        var (release, held) = Hold(a, a, b, b, c, c);
        try
        {
            using var anonymous = node.NewHttp(null);
            var bounds = node.Services.GetRequiredService<RequestBounds>();
            await WaitFor(() => bounds.InProgress == 6, "six requests in progress");
            using var refused = await anonymous.GetAsync($"{node.BaseUrl}/metadata");
            Refused(HttpStatusCode.ServiceUnavailable, await Answer(refused), "max-concurrent-requests");
            Assert.Equal(TimeSpan.FromSeconds(2), refused.Headers.RetryAfter?.Delta);
            Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync($"{node.Origin}/health")).StatusCode);
        }
        finally
        {
            release.SetResult();
            foreach (var h in held)
            {
                (await h).Dispose();
            }
        }
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync($"{node.BaseUrl}/metadata")).StatusCode);
    }

    [Fact]
    public async Task Unauthenticated_endpoints_read_a_small_body_at_most()
    {
        using var anonymous = node.NewHttp(null);
        var form = new StringContent("grant_type=client_credentials&client_assertion=" + new string('a', 200_000), Encoding.ASCII, "application/x-www-form-urlencoded");
        var tokenAnswer = await anonymous.PostAsync($"{node.Origin}/connect/token", form);
        Assert.True(tokenAnswer.StatusCode == HttpStatusCode.RequestEntityTooLarge, string.Join("\n", node.Logs.Lines.TakeLast(5)));
        var login = new StringContent("username=x&password=" + new string('a', 200_000), Encoding.ASCII, "application/x-www-form-urlencoded");
        var loginAnswer = await anonymous.PostAsync($"{node.Origin}/account/login", login);
        Assert.True(loginAnswer.StatusCode == HttpStatusCode.RequestEntityTooLarge, string.Join("\n", node.Logs.Lines.TakeLast(5)));
    }

    /// <summary>
    /// The 20,000-part attack on <c>ward serve</c> in its own process, measured by the peak resident memory the kernel
    /// reports (VmHWM): it once grew the node by gigabytes, it now stays within a fixed bound.
    /// </summary>
    [Fact]
    public async Task The_stow_part_attack_leaves_the_serving_process_peak_memory_within_a_fixed_bound()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-bounds-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Assert.Equal(0, (await WardProcess.RunAsync(["init", "--data", dir])).Code);
            // A patient account is linked to a record the node holds.
            var bundle = Path.Combine(dir, "p1.json");
            File.WriteAllText(bundle, """{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"p1"},"request":{"method":"PUT","url":"Patient/p1"}}]}""");
            Assert.Equal(0, (await WardProcess.RunAsync(["import", "--data", dir, bundle])).Code);
            var add = await WardProcess.RunAsync(["users", "add", "--data", dir, "--username", "pat", "--role", "patient", "--patient", "Patient/p1", "--password-stdin"], "a long enough password 1\n");
            Assert.True(add.Code == 0, add.Stdout + add.Stderr);
            var token = await WardProcess.RunAsync(["token", "--data", dir, "--user", "pat", "--scope", "patient/*.rs"]);
            Assert.True(token.Code == 0, token.Stdout + token.Stderr);
            var port = PrivateCluster.FreePort();
            using var process = Process.Start(WardProcess.StartInfo(["serve", "--data", dir, "--urls", $"http://127.0.0.1:{port}"]))!;
            _ = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            try
            {
                using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
                http.DefaultRequestHeaders.Authorization = new("Bearer", token.Stdout.Trim());
                var origin = $"http://127.0.0.1:{port}";
                for (var attempt = 0; ; attempt++)
                {
                    try
                    {
                        if ((await http.GetAsync($"{origin}/health")).IsSuccessStatusCode) break;
                    }
                    catch (HttpRequestException) when (attempt < 300)
                    {
                    }
                    Assert.False(process.HasExited, "ward serve exited");
                    await Task.Delay(200);
                }
                // Warm up: the same kind of request once, small, so that what is measured is what the attack adds.
                (await http.PostAsync($"{origin}/dicomweb/studies", Multipart(EmptyParts(10)))).Dispose();
                var before = PeakResidentBytes(process.Id);
                HttpStatusCode? status = null;
                try
                {
                    using var attack = await http.PostAsync($"{origin}/dicomweb/studies", Multipart(EmptyParts(20_000)));
                    status = attack.StatusCode;
                }
                catch (HttpRequestException e)
                {
                    // Before the bounds, the answer's 20,000 Warning headers were more than a client reads.
                    output.WriteLine("The answer could not be read: " + e.Message);
                }
                var after = PeakResidentBytes(process.Id);
                output.WriteLine($"20,000 empty STOW-RS parts ({EmptyParts(20_000).Length:N0} bytes): answered {(int?)status}; peak resident memory {before / 1e6:N0} MB -> {after / 1e6:N0} MB (+{(after - before) / 1e6:N0} MB)");
                Assert.True(after - before < 200_000_000, $"the node grew by {(after - before) / 1e6:N0} MB");
                Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
                Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{origin}/health")).StatusCode);
            }
            finally
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static long PeakResidentBytes(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
    }
}
