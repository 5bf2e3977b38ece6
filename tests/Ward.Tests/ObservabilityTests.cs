using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// What an operator's monitoring sees of a node: the Prometheus endpoint <c>/metrics</c> (who may scrape it, what it
/// holds, and that it holds no patient identifier), the JSON log, and liveness against readiness.
/// </summary>
public sealed class ObservabilityTests
{
    /// <summary>
    /// The real <c>ward</c> commands on a part of the Synthea set: import, then a round of reads and searches by id, name,
    /// identifier and birth date (and failures: an unknown id, no token, an audit log that cannot be written) on
    /// <c>ward serve --log-format json</c>. Neither the scrape nor the log holds any id, name, identifier value, birth
    /// date, address line or telecom value of an imported patient, nor the id of anything read.
    /// </summary>
    [Fact]
    public async Task After_a_Synthea_import_and_reads_neither_the_metrics_nor_the_JSON_log_hold_a_patient_identifier()
    {
        var root = Path.Combine(Path.GetTempPath(), "ward-observe-" + Guid.NewGuid().ToString("N")[..8]);
        var data = Path.Combine(root, "node");
        try
        {
            var files = await SyntheaNode.UnpackAsync(Path.Combine(root, "source"));
            var shared = files.Where(f => Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)).ToList();
            var patientFiles = files.Except(shared).Take(3).ToList();
            await WardAsync("init", "--data", data);
            await WardAsync(["import", "--data", data, .. shared]);
            await WardAsync(["import", "--data", data, .. patientFiles]);

            // Everything that identifies the imported patients, from the source files.
            var secrets = new HashSet<string>(StringComparer.Ordinal);
            var patients = new List<(string SourceId, string Family, string Given, string BirthDate, string Ssn)>();
            foreach (var file in patientFiles)
            {
                using var bundle = JsonDocument.Parse(await File.ReadAllBytesAsync(file));
                foreach (var resource in bundle.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource")))
                {
                    secrets.Add(resource.GetProperty("id").GetString()!);
                    if (resource.GetProperty("resourceType").GetString() != "Patient")
                    {
                        continue;
                    }
                    var name = resource.GetProperty("name")[0];
                    foreach (var n in resource.GetProperty("name").EnumerateArray())
                    {
                        secrets.Add(n.GetProperty("family").GetString()!);
                        secrets.UnionWith(n.GetProperty("given").EnumerateArray().Select(g => g.GetString()!));
                    }
                    secrets.UnionWith(resource.GetProperty("identifier").EnumerateArray().Select(i => i.GetProperty("value").GetString()!));
                    secrets.Add(resource.GetProperty("birthDate").GetString()!);
                    secrets.UnionWith(resource.GetProperty("address").EnumerateArray().SelectMany(a => a.GetProperty("line").EnumerateArray()).Select(l => l.GetString()!));
                    secrets.UnionWith(resource.GetProperty("telecom").EnumerateArray().Select(t => t.GetProperty("value").GetString()!));
                    var ssn = resource.GetProperty("identifier").EnumerateArray()
                        .First(i => i.GetProperty("system").GetString() == "http://hl7.org/fhir/sid/us-ssn").GetProperty("value").GetString()!;
                    patients.Add((resource.GetProperty("id").GetString()!, name.GetProperty("family").GetString()!, name.GetProperty("given")[0].GetString()!,
                        resource.GetProperty("birthDate").GetString()!, ssn));
                }
            }
            Assert.Equal(3, patients.Count);

            var token = await BackendTokenAsync(data);
            var port = PrivateCluster.FreePort();
            var origin = $"http://127.0.0.1:{port}";
            using var serve = Process.Start(WardProcess.StartInfo(["serve", "--data", data, "--urls", origin, "--log-format", "json"]))!;
            var stdout = serve.StandardOutput.ReadToEndAsync();
            var stderr = serve.StandardError.ReadToEndAsync();
            string metrics;
            try
            {
                using var http = new HttpClient { BaseAddress = new Uri(origin) };
                await WaitLiveAsync(http, serve, stderr);
                using var anonymous = new HttpClient { BaseAddress = new Uri(origin) };
                http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
                foreach (var (sourceId, family, given, birthDate, ssn) in patients)
                {
                    using var found = JsonDocument.Parse(await GetOkAsync(http, $"/fhir/Patient?identifier=https://github.com/synthetichealth/synthea|{sourceId}"));
                    var id = found.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString()!;
                    secrets.Add(id);
                    await GetOkAsync(http, $"/fhir/Patient/{id}");
                    await GetOkAsync(http, $"/fhir/Patient?_id={id}");
                    await GetOkAsync(http, $"/fhir/Patient?family={family}");
                    await GetOkAsync(http, $"/fhir/Patient?name={given}&birthdate={birthDate}");
                    await GetOkAsync(http, $"/fhir/Patient?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}");
                    using var observations = JsonDocument.Parse(await GetOkAsync(http, $"/fhir/Observation?subject=Patient/{id}&_count=5"));
                    secrets.UnionWith(observations.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("id").GetString()!));
                    Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"/fhir/Patient/{id}0")).StatusCode);
                    Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync($"/fhir/Patient/{id}")).StatusCode);
                }
                // An audit log that cannot be written: the request fails, and the node logs it (in the request's context).
                using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(data, "ward.db")};Pooling=False"))
                {
                    db.Open();
                    TestNode.Scalar(db, "CREATE TRIGGER test_audit_down BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;");
                    Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync($"/fhir/Patient/{secrets.First(s => s.Length == 36)}")).StatusCode);
                    Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync($"/fhir/Patient?family={patients[0].Family}")).StatusCode);
                    // Refused before the engine (a malformed id that starts with a real one): the failure record is lost and logged.
                    Assert.Equal(HttpStatusCode.BadRequest, (await http.GetAsync($"/fhir/Patient/{secrets.First(s => s.Length == 36)}%20x")).StatusCode);
                    TestNode.Scalar(db, "DROP TRIGGER test_audit_down");
                }
                http.DefaultRequestHeaders.Authorization = null;
                metrics = await http.GetStringAsync("/metrics");
            }
            finally
            {
                await StopAsync(serve);
            }
            var log = await stdout + await stderr;

            // The series an operator expects: requests by route template, status, FHIR interaction and type, with their latency buckets.
            var requests = metrics.Split('\n').Where(l => l.StartsWith("http_server_request_duration_seconds_count{", StringComparison.Ordinal)).ToList();
            Assert.Contains(requests, l => l.Contains("http_route=\"/fhir/{**path}\"", StringComparison.Ordinal) && l.Contains("http_response_status_code=\"200\"", StringComparison.Ordinal)
                && l.Contains("fhir_interaction=\"read\"", StringComparison.Ordinal) && l.Contains("fhir_resource_type=\"Patient\"", StringComparison.Ordinal));
            Assert.Contains(requests, l => l.Contains("fhir_interaction=\"search-type\"", StringComparison.Ordinal) && l.Contains("http_response_status_code=\"200\"", StringComparison.Ordinal));
            Assert.Contains(requests, l => l.Contains("http_response_status_code=\"404\"", StringComparison.Ordinal));
            Assert.Contains(requests, l => l.Contains("http_response_status_code=\"401\"", StringComparison.Ordinal));
            Assert.Contains(requests, l => l.Contains("http_response_status_code=\"503\"", StringComparison.Ordinal));
            Assert.Contains("http_server_request_duration_seconds_bucket{", metrics);
            foreach (var series in new[]
            {
                "ward_audit_flush_duration_seconds_bucket{", "ward_audit_batch_size_bucket{", "ward_audit_queue_depth", "ward_audit_failures_total",
                "ward_storage_flush_batch_size_bucket{", "ward_storage_flush_duration_seconds_bucket{", "ward_crypto_key_cache_hits_total", "ward_crypto_key_cache_misses_total",
            })
            {
                Assert.True(metrics.Contains(series, StringComparison.Ordinal), $"no {series} in the scrape:\n{metrics}");
            }
            Assert.Contains(metrics.Split('\n'), l => l.StartsWith("ward_storage_flush_batch_size_count{", StringComparison.Ordinal) && l.Contains("file=\"sqlite-log\"", StringComparison.Ordinal));

            Assert.True(secrets.Count > 60, $"only {secrets.Count} identifying values collected");
            foreach (var secret in secrets.Where(s => s.Length >= 4))
            {
                Assert.False(metrics.Contains(secret, StringComparison.OrdinalIgnoreCase), $"the metrics hold '{secret}'");
                Assert.False(log.Contains(secret, StringComparison.OrdinalIgnoreCase), $"the log holds '{secret}'");
            }

            // The log: JSON objects, one per line, without scopes (ASP.NET Core's hold the request path); the failures above among them.
            var lines = log.Split('\n').Where(l => l.StartsWith('{')).ToList();
            foreach (var line in lines)
            {
                using var entry = JsonDocument.Parse(line);
                Assert.True(entry.RootElement.TryGetProperty("LogLevel", out _), line);
                Assert.False(entry.RootElement.TryGetProperty("Scopes", out _), line);
            }
            Assert.Contains(lines, l => l.Contains("\"Category\":\"Ward.Audit\"", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.Contains("\"Category\":\"Ward.Server.FailureAudit\"", StringComparison.Ordinal));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Without_a_token_file_the_metrics_answer_loopback_only_and_nothing_that_came_through_a_proxy()
    {
        await using var node = await MetricsNode.StartAsync(_ => { });
        using var http = new HttpClient();
        using (var scrape = await http.GetAsync($"{node.Origin}/metrics"))
        {
            Assert.Equal(HttpStatusCode.OK, scrape.StatusCode);
            Assert.Contains("# TYPE ", await scrape.Content.ReadAsStringAsync());
        }
        foreach (var (header, value) in new[] { ("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"), ("X-Real-IP", "203.0.113.7"), ("X-Forwarded-Host", "ward.example") })
        {
            foreach (var path in new[] { "/metrics", "/METRICS", "/metrics/" })
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, node.Origin + path);
                request.Headers.TryAddWithoutValidation(header, value);
                using var refused = await http.SendAsync(request);
                Assert.True(refused.StatusCode == HttpStatusCode.NotFound, $"{header} {path}: {refused.StatusCode}");
                Assert.DoesNotContain("# TYPE", await refused.Content.ReadAsStringAsync());
            }
        }
    }

    [Fact]
    public async Task With_a_token_file_the_metrics_answer_the_right_bearer_token_only()
    {
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(24));
        await using var node = await MetricsNode.StartAsync(config =>
        {
            File.WriteAllText(config.Resolve("keys/metrics.token"), token + "\n");
            config.Metrics.TokenFile = "keys/metrics.token";
        });
        using var http = new HttpClient();
        async Task<HttpStatusCode> ScrapeAsync(string? authorization, bool proxied = false)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"{node.Origin}/metrics");
            if (authorization is not null)
            {
                request.Headers.TryAddWithoutValidation("Authorization", authorization);
            }
            if (proxied)
            {
                request.Headers.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.7");
            }
            using var response = await http.SendAsync(request);
            var body = await response.Content.ReadAsStringAsync();
            Assert.Equal(response.StatusCode == HttpStatusCode.OK, body.Contains("# TYPE", StringComparison.Ordinal));
            return response.StatusCode;
        }
        // Loopback is no key once a token is configured.
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync(null));
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync("Bearer " + token[..^1]));
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync("Bearer " + token + "0"));
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync("Bearer " + token.ToLowerInvariant()));
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync("Basic " + token));
        Assert.Equal(HttpStatusCode.NotFound, await ScrapeAsync("Bearer " + node.FhirToken));
        Assert.Equal(HttpStatusCode.OK, await ScrapeAsync("Bearer " + token));
        // The token is the key from anywhere, a proxy included.
        Assert.Equal(HttpStatusCode.OK, await ScrapeAsync("Bearer " + token, proxied: true));
    }

    [Fact]
    public async Task A_token_file_that_is_missing_or_too_short_stops_the_node_and_disabled_metrics_have_no_endpoint()
    {
        await Assert.ThrowsAsync<NodeException>(() => MetricsNode.StartAsync(config => config.Metrics.TokenFile = "keys/no-such.token"));
        await Assert.ThrowsAsync<NodeException>(() => MetricsNode.StartAsync(config =>
        {
            File.WriteAllText(config.Resolve("keys/metrics.token"), "short");
            config.Metrics.TokenFile = "keys/metrics.token";
        }));
        await using var node = await MetricsNode.StartAsync(config => config.Metrics.Enabled = false);
        using var http = new HttpClient();
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"{node.Origin}/metrics")).StatusCode);
    }

    [Fact]
    public async Task The_metrics_show_the_age_of_the_last_successful_scheduled_backup_and_each_outcome()
    {
        var target = Path.Combine(Path.GetTempPath(), "ward-metrics-target-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            await using var node = await MetricsNode.StartAsync(config => config.Backup.Target = target);
            using var http = new HttpClient();
            var before = await http.GetStringAsync($"{node.Origin}/metrics");
            Assert.DoesNotContain("ward_backup_age_seconds{", before);
            await node.Backups.RunOnceAsync(TimeSpan.FromHours(6), CancellationToken.None);
            var after = await http.GetStringAsync($"{node.Origin}/metrics");
            var age = after.Split('\n').Single(l => l.StartsWith("ward_backup_age_seconds{", StringComparison.Ordinal));
            var seconds = double.Parse(age[(age.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(seconds, 0, 60);
            Assert.Contains(after.Split('\n'), l => l.StartsWith("ward_backup_runs_total{", StringComparison.Ordinal) && l.Contains("outcome=\"success\"", StringComparison.Ordinal));
        }
        finally
        {
            if (Directory.Exists(target))
            {
                Directory.Delete(target, recursive: true);
            }
        }
    }

    /// <summary>
    /// A scrape from an address that is not loopback, for real: <c>ward serve</c> in a network namespace of the test's
    /// own, on https at a documentation address (192.0.2.1, on that namespace's loopback device) and on 127.0.0.1, and
    /// curl in the same namespace. From 192.0.2.1 the metrics answer 404 while the health checks answer; from 127.0.0.1
    /// the metrics answer.
    /// </summary>
    [Fact]
    public async Task A_scrape_from_another_address_gets_404_while_loopback_gets_the_metrics()
    {
        var root = Path.Combine(Path.GetTempPath(), "ward-observe-ns-" + Guid.NewGuid().ToString("N")[..8]);
        var data = Path.Combine(root, "node");
        try
        {
            await WardAsync("init", "--data", data);
            var start = WardProcess.StartInfo(["serve", "--data", data, "--urls", "https://192.0.2.1:8443;http://127.0.0.1:8080"]);
            var serve = string.Join(' ', new[] { start.FileName }.Concat(start.ArgumentList).Select(a => $"'{a}'"));
            var script = $$"""
                set -e
                ip link set lo up
                ip addr add 192.0.2.1/32 dev lo
                {{serve}} > '{{root}}/serve.log' 2>&1 &
                pid=$!
                for i in $(seq 120); do curl -s -o /dev/null http://127.0.0.1:8080/health/live && break; sleep 0.5; done
                echo "remote-metrics $(curl -sk -o /dev/null -w '%{http_code}' https://192.0.2.1:8443/metrics)"
                echo "remote-metrics-forged $(curl -sk -o /dev/null -w '%{http_code}' -H 'Host: 127.0.0.1' https://192.0.2.1:8443/metrics)"
                echo "remote-live $(curl -sk -o /dev/null -w '%{http_code}' https://192.0.2.1:8443/health/live)"
                echo "remote-ready $(curl -sk -o /dev/null -w '%{http_code}' https://192.0.2.1:8443/health/ready)"
                echo "loopback-metrics $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/metrics)"
                kill $pid
                wait $pid || true
                """;
            var (code, output, error) = await ExternalTool.RunAsync("unshare", ["--net", "bash", "-c", script]);
            var detail = $"exit {code}\n{output}\n{error}\n{(File.Exists(Path.Combine(root, "serve.log")) ? await File.ReadAllTextAsync(Path.Combine(root, "serve.log")) : "")}";
            Assert.True(code == 0, detail);
            Assert.Contains("remote-metrics 404", output);
            Assert.Contains("remote-metrics-forged 404", output);
            Assert.Contains("remote-live 200", output);
            Assert.Contains("remote-ready 200", output);
            Assert.True(output.Contains("loopback-metrics 200", StringComparison.Ordinal), detail);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task A_log_format_other_than_text_or_json_is_refused_with_the_setting_named()
    {
        var root = Path.Combine(Path.GetTempPath(), "ward-observe-fmt-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            await WardAsync("init", "--data", root);
            var config = NodeConfig.Load(root);
            config.Logging.Format = "xml";
            config.Save();
            var (code, output) = await WardProcess.OutputAsync(["serve", "--data", root, "--urls", $"http://127.0.0.1:{PrivateCluster.FreePort()}"]);
            Assert.True(code == 2, $"exit {code}: {output}");
            Assert.Contains("logging: format", output);
            Assert.DoesNotContain("   at ", output);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static async Task WardAsync(params string[] args)
    {
        var (code, output) = await WardProcess.OutputAsync(args);
        Assert.True(code == 0, $"ward {string.Join(' ', args.Take(2))}: exit {code}\n{output}");
    }

    /// <summary>A backend client registered with <c>ward clients add</c> and a token for it from <c>ward token</c>, as an operator's script gets one.</summary>
    private static async Task<string> BackendTokenAsync(string data)
    {
        using var rsa = RSA.Create(2048);
        var jwk = JsonWebKeyConverter.ConvertFromRSASecurityKey(new RsaSecurityKey(rsa.ExportParameters(false)) { KeyId = "k1" });
        var jwks = Path.Combine(data, "client.jwks");
        await File.WriteAllTextAsync(jwks, JsonSerializer.Serialize(new { keys = new[] { jwk } },
            new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));
        await WardAsync("clients", "add", "--data", data, "--client-id", "monitor-test", "--kind", "backend", "--scopes", "system/*.rs", "--jwks", jwks);
        var (code, stdout, stderr) = await WardProcess.RunAsync(["token", "--data", data, "--client", "monitor-test", "--scope", "system/*.rs", "--minutes", "30"]);
        Assert.True(code == 0, stdout + stderr);
        return stdout.Trim();
    }

    private static async Task WaitLiveAsync(HttpClient http, Process serve, Task<string> stderr)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                if ((await http.GetAsync("/health/live")).IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException) when (DateTime.UtcNow < deadline)
            {
            }
            if (DateTime.UtcNow > deadline || serve.HasExited)
            {
                Assert.Fail("ward serve did not start: " + (serve.HasExited ? await stderr : "no answer in 60 s"));
            }
            await Task.Delay(200);
        }
    }

    private static async Task<string> GetOkAsync(HttpClient http, string path)
    {
        using var response = await http.GetAsync(path);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {body}");
        return body;
    }

    /// <summary>Stops <c>ward serve</c> as systemd does (SIGTERM), so that its log is written out; killed if it does not stop.</summary>
    private static async Task StopAsync(Process serve)
    {
        if (!serve.HasExited)
        {
            await ExternalTool.RunAsync("kill", ["-TERM", serve.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await serve.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            serve.Kill(entireProcessTree: true);
            await serve.WaitForExitAsync();
        }
    }

    /// <summary>A node of its own in process, with its configuration adjusted before it starts (the metrics settings).</summary>
    private sealed class MetricsNode : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly RecordStore _store;
        private readonly string _dir;

        private MetricsNode(WebApplication app, RecordStore store, string dir, string origin)
        {
            _app = app;
            _store = store;
            _dir = dir;
            Origin = origin;
        }

        public string Origin { get; }

        public ScheduledBackups Backups => _app.Services.GetRequiredService<ScheduledBackups>();

        /// <summary>A valid FHIR access token of the node: no key to its metrics.</summary>
        public string FhirToken => _app.Services.GetRequiredService<Ward.Server.Identity.AccessTokens>().Issue(TestNode.AdminGrant, TimeSpan.FromMinutes(5), "urn:ward:test");

        public static async Task<MetricsNode> StartAsync(Action<NodeConfig> configure)
        {
            var dir = Path.Combine(Path.GetTempPath(), "ward-metrics-" + Guid.NewGuid().ToString("N")[..12]);
            var config = NodeConfig.Init(dir, "metrics");
            configure(config);
            config.Save();
            var store = RecordStore.Open(config, create: true);
            try
            {
                var app = WardServer.Build(config, "http://127.0.0.1:0", store, logging => logging.AddProvider(new LogCapture()));
                await app.StartAsync();
                var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
                return new MetricsNode(app, store, dir, address.TrimEnd('/'));
            }
            catch
            {
                store.Dispose();
                Directory.Delete(dir, recursive: true);
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
            _store.Dispose();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(_dir, recursive: true);
        }
    }
}

/// <summary>
/// Liveness against readiness: <c>/health/live</c> answers 200 while the process answers; <c>/health/ready</c> answers 503
/// naming what fails (the database, the audit log, the keys) and 200 again once it works, without a restart.
/// </summary>
public abstract class ReadinessTests(TestNode node)
{
    private string Health => node.Origin + "/health";

    private async Task<(HttpStatusCode Status, JsonElement Body)> GetAsync(string url)
    {
        using var http = new HttpClient();
        using var response = await http.GetAsync(url);
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    [Fact]
    public async Task A_working_node_is_live_and_ready_without_a_token()
    {
        var (live, liveBody) = await GetAsync(Health + "/live");
        Assert.Equal(HttpStatusCode.OK, live);
        Assert.Equal("alive", liveBody.GetProperty("status").GetString());
        var (ready, readyBody) = await GetAsync(Health + "/ready");
        Assert.Equal(HttpStatusCode.OK, ready);
        Assert.Equal("""{"status":"ready","database":"ok","audit":"ok","keys":"ok"}""", readyBody.GetRawText());
        // /health keeps its report.
        var (health, healthBody) = await GetAsync(Health);
        Assert.Equal(HttpStatusCode.OK, health);
        Assert.Equal("ok", healthBody.GetProperty("status").GetString());
    }

    [Fact]
    public async Task When_the_audit_log_cannot_be_written_the_node_is_live_but_not_ready_until_it_can()
    {
        var patient = await node.AsOperator("POST", "Patient", """{"resourceType":"Patient","name":[{"family":"Readiness"}]}""");
        var id = JsonDocument.Parse(patient.Body!).RootElement.GetProperty("id").GetString();
        using (var db = node.Db())
        {
            TestNode.Scalar(db, node.IsPostgres
                ? "CREATE FUNCTION test_ready_audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit disk full'; END $$; "
                    + "CREATE TRIGGER test_ready_audit_down BEFORE INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION test_ready_audit_down();"
                : "CREATE TRIGGER test_ready_audit_down BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;");
        }
        try
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await node.Http.GetAsync($"{node.BaseUrl}/Patient/{id}")).StatusCode);
            var (ready, body) = await GetAsync(Health + "/ready");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready);
            Assert.Equal("not ready", body.GetProperty("status").GetString());
            Assert.StartsWith("failing", body.GetProperty("audit").GetString(), StringComparison.Ordinal);
            Assert.Equal("ok", body.GetProperty("database").GetString());
            // Still failing when asked again: the check's own probe of the log fails too.
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await GetAsync(Health + "/ready")).Status);
            Assert.Equal(HttpStatusCode.OK, (await GetAsync(Health + "/live")).Status);
        }
        finally
        {
            using var db = node.Db();
            TestNode.Scalar(db, node.IsPostgres ? "DROP TRIGGER test_ready_audit_down ON audit_entry; DROP FUNCTION test_ready_audit_down();" : "DROP TRIGGER test_ready_audit_down");
        }
        // No request reached the node since: the readiness check found the log writable again by itself.
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(Health + "/ready")).Status);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync($"{node.BaseUrl}/Patient/{id}")).StatusCode);
    }
}

public sealed class ReadinessTestsOnSqlite(TestNode node) : ReadinessTests(node), IClassFixture<TestNode>;

public sealed class ReadinessTestsOnPostgres(PostgresTestNode node) : ReadinessTests(node), IClassFixture<PostgresTestNode>
{
    /// <summary>The database server stops under a serving node (a private cluster of this test's own): not ready, still live; ready again once it is back.</summary>
    [Fact]
    public async Task When_PostgreSQL_is_down_the_node_is_live_but_not_ready_naming_the_database()
    {
        using var cluster = PrivateCluster.Start();
        var own = new PostgresTestNode { PostgresAdmin = cluster.AdminConnectionString };
        await own.InitializeAsync();
        try
        {
            using var http = new HttpClient();
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(own.Origin + "/health/ready")).StatusCode);
            cluster.Stop();
            using (var ready = await http.GetAsync(own.Origin + "/health/ready"))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
                var body = JsonDocument.Parse(await ready.Content.ReadAsStringAsync()).RootElement;
                Assert.Equal("unreachable", body.GetProperty("database").GetString());
                Assert.Equal("ok", body.GetProperty("keys").GetString());
            }
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(own.Origin + "/health/live")).StatusCode);
            cluster.Start(wait: true);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            HttpStatusCode status;
            while ((status = (await http.GetAsync(own.Origin + "/health/ready")).StatusCode) != HttpStatusCode.OK && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
            Assert.Equal(HttpStatusCode.OK, status);
        }
        finally
        {
            await own.DisposeAsync();
        }
    }
}

/// <summary>
/// An audit log whose write waits for ever (another process holds the SQLite write lock) is stuck: the node stops being
/// ready once the write has waited 30 s on the node's clock, and is ready again once the lock is released.
/// </summary>
public sealed class StuckAuditReadinessTests(ClockedSqliteNode node) : IClassFixture<ClockedSqliteNode>
{
    [Fact]
    public async Task A_write_of_the_audit_log_that_waits_over_30_s_makes_the_node_not_ready_until_it_is_written()
    {
        var created = await node.AsOperator("POST", "Patient", """{"resourceType":"Patient","name":[{"family":"Stuck"}]}""");
        var id = JsonDocument.Parse(created.Body!).RootElement.GetProperty("id").GetString();
        using var http = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.Origin + "/health/ready")).StatusCode);
        Task<Ward.Core.Fhir.FhirResponse> read;
        using (var db = node.Db())
        {
            TestNode.Scalar(db, "BEGIN IMMEDIATE");
            // A read by the engine: its audit entry's group commit waits for the lock.
            read = Task.Run(() => node.AsOperator("GET", $"Patient/{id}"));
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.False(read.IsCompleted);
            // Waiting, not yet stuck.
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.Origin + "/health/ready")).StatusCode);
            node.Time.Advance(TimeSpan.FromSeconds(31));
            using (var ready = await http.GetAsync(node.Origin + "/health/ready"))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
                var body = JsonDocument.Parse(await ready.Content.ReadAsStringAsync()).RootElement;
                Assert.StartsWith("stuck", body.GetProperty("audit").GetString(), StringComparison.Ordinal);
                Assert.Equal("ok", body.GetProperty("database").GetString());
            }
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.Origin + "/health/live")).StatusCode);
            TestNode.Scalar(db, "ROLLBACK");
        }
        Assert.Equal(200, (await read).Status);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.Origin + "/health/ready")).StatusCode);
    }
}
