using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// A node on PostgreSQL survives a database restart during a write load without being restarted itself: nothing it
/// acknowledged is lost, nothing half-written remains, and it serves again once the database is back.
/// The server is a private cluster of this test's own, so that restarting it disturbs no other test.
/// </summary>
public sealed class PostgresResilienceTests
{
    [Fact]
    public async Task A_restart_of_PostgreSQL_during_writes_loses_nothing_acknowledged_and_leaves_nothing_half_written()
    {
        using var cluster = PrivateCluster.Start();
        var node = new PostgresTestNode { PostgresAdmin = cluster.AdminConnectionString };
        await node.InitializeAsync();
        try
        {
            var acknowledged = new ConcurrentBag<(string Patient, string? Observation)>();
            var statuses = new ConcurrentDictionary<HttpStatusCode, int>();
            var afterRestart = 0;
            var restarted = false;
            using var stop = new CancellationTokenSource();
            async Task Writer(int w)
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    var tag = $"w{w}-{i}";
                    var transaction = i % 2 == 1;
                    var (status, body) = transaction ? await PostTransaction(node, tag) : await Post(node, "Patient", Patient(tag));
                    statuses.AddOrUpdate(status, 1, (_, n) => n + 1);
                    if (status is HttpStatusCode.Created or HttpStatusCode.OK)
                    {
                        acknowledged.Add(transaction ? Locations(body) : (Id(body), null));
                        if (Volatile.Read(ref restarted))
                        {
                            Interlocked.Increment(ref afterRestart);
                        }
                    }
                    else
                    {
                        // While the database is down the node answers 503 with an OperationOutcome, never anything else.
                        Assert.True(status == HttpStatusCode.ServiceUnavailable, $"{status}: {body}\n{string.Join('\n', node.Logs.Lines.Where(l => l.Contains("Unexpected", StringComparison.Ordinal)).Take(2))}");
                        Assert.Contains("OperationOutcome", body);
                    }
                }
            }
            var writers = Enumerable.Range(0, 4).Select(w => Task.Run(() => Writer(w))).ToArray();
            await Task.Delay(TimeSpan.FromSeconds(2));
            cluster.Stop();
            // Monitoring sees the outage at once (no retry on the health check).
            using (var health = await node.Http.GetAsync(node.BaseUrl.Replace("/fhir", "/health", StringComparison.Ordinal)))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
                Assert.Contains("database unavailable", await health.Content.ReadAsStringAsync());
            }
            await Task.Delay(TimeSpan.FromSeconds(1.5));
            cluster.Start(wait: true);
            Volatile.Write(ref restarted, true);
            await Task.Delay(TimeSpan.FromSeconds(3));
            await stop.CancelAsync();
            await Task.WhenAll(writers);

            Assert.True(afterRestart > 0, "no write succeeded after the restart: " + string.Join(", ", statuses));
            Assert.Contains($"\"schemaVersion\":{Ward.Core.Storage.Migrations.Postgres.Max(m => m.Version)}", await node.Http.GetStringAsync(node.BaseUrl.Replace("/fhir", "/health", StringComparison.Ordinal)));
            // The restart did cut work in flight, which the node ran again.
            Assert.Contains(node.Logs.Lines, l => l.Contains("failed transiently", StringComparison.Ordinal));
            // Everything acknowledged is there, once, whole.
            foreach (var (patient, observation) in acknowledged)
            {
                using var read = await node.Http.GetAsync($"{node.BaseUrl}/Patient/{patient}");
                Assert.Equal(HttpStatusCode.OK, read.StatusCode);
                if (observation is not null)
                {
                    var found = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/Observation?subject=Patient/{patient}"));
                    Assert.Equal(observation, found.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString());
                }
            }
            // Nothing half-written: every resource has its current version, its key and its index; every transaction landed whole.
            // Connections pooled before the restart are dead: the node retries on them, these direct checks must not meet one.
            Npgsql.NpgsqlConnection.ClearAllPools();
            using var db = node.Db();
            Assert.Equal(0L, TestNode.Scalar(db, "SELECT count(*) FROM resource r WHERE NOT EXISTS (SELECT 1 FROM version v WHERE v.rid = r.rid AND v.version = r.version AND v.kid IS NOT NULL)"));
            Assert.Equal(0L, TestNode.Scalar(db, "SELECT count(*) FROM version v WHERE NOT EXISTS (SELECT 1 FROM resource r WHERE r.rid = v.rid)"));
            Assert.Equal(0L, TestNode.Scalar(db, "SELECT count(*) FROM resource r WHERE r.type = 'Patient' AND NOT EXISTS (SELECT 1 FROM ix_token x WHERE x.rid = r.rid AND x.param = 'identifier')"));
            Assert.Equal(0L, TestNode.Scalar(db, """
                SELECT count(*) FROM resource p WHERE p.type = 'Patient' AND EXISTS (SELECT 1 FROM ix_token x WHERE x.rid = p.rid AND x.param = 'gender' AND x.code = 'female')
                AND NOT EXISTS (SELECT 1 FROM ix_reference x JOIN resource o ON o.rid = x.rid WHERE o.type = 'Observation' AND x.target_id = p.id)
                """));
            var stored = (long)TestNode.Scalar(db, "SELECT count(*) FROM resource WHERE type = 'Patient'")!;
            // A write whose commit was cut off may have landed without acknowledgement (its client got a 503), never the reverse.
            Assert.InRange(stored, acknowledged.Count, acknowledged.Count + statuses.GetValueOrDefault(HttpStatusCode.ServiceUnavailable));
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    private static string Patient(string tag, bool female = false) =>
        $$"""{"resourceType":"Patient","identifier":[{"system":"urn:test:restart","value":"{{tag}}"}],"gender":"{{(female ? "female" : "male")}}"}""";

    private static async Task<(HttpStatusCode, string)> Post(TestNode node, string path, string json)
    {
        try
        {
            using var response = await node.Http.PostAsync($"{node.BaseUrl}/{path}".TrimEnd('/'), new StringContent(json, Encoding.UTF8, "application/fhir+json"));
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        catch (HttpRequestException e)
        {
            return (0, e.ToString());
        }
    }

    /// <summary>A Patient (female, to tell transactions apart) and an Observation about it, in one transaction.</summary>
    private static Task<(HttpStatusCode, string)> PostTransaction(TestNode node, string tag)
    {
        var urn = "urn:uuid:" + Guid.NewGuid();
        return Post(node, "", $$$"""
            {"resourceType":"Bundle","type":"transaction","entry":[
              {"fullUrl":"{{{urn}}}","resource":{{{Patient(tag, female: true)}}},"request":{"method":"POST","url":"Patient"}},
              {"resource":{"resourceType":"Observation","status":"final","code":{"text":"restart"},"subject":{"reference":"{{{urn}}}"}},"request":{"method":"POST","url":"Observation"}}
            ]}
            """);
    }

    private static string Id(string body) => JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;

    private static (string, string?) Locations(string body)
    {
        var entries = JsonDocument.Parse(body).RootElement.GetProperty("entry");
        string Of(int i) => entries[i].GetProperty("response").GetProperty("location").GetString()!.Split('/')[1];
        return (Of(0), Of(1));
    }
}
