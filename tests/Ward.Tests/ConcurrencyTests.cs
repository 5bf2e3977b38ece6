using System.Net;
using System.Text;
using System.Text.Json;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// Concurrent writers get the outcome of some one-at-a-time order: on SQLite because the database takes one writer at a
/// time, on PostgreSQL because every write transaction is serializable and the ones that conflict are run again. Half the
/// clients go through a second node process on the same data (its own store and write gate), so that writers really
/// run at the same time on PostgreSQL.
/// </summary>
public abstract class ConcurrencyTests(TestNode node) : IAsyncLifetime
{
    private const int Clients = 8;
    private TestNode.Twin _twin = null!;

    public async Task InitializeAsync() => _twin = await node.TwinAsync();

    public async Task DisposeAsync() => await _twin.DisposeAsync();

    private Task<(HttpStatusCode Status, string Body, string? ETag)> Send(HttpMethod method, string path, string? json, params (string, string)[] headers) =>
        Send(0, method, path, json, headers);

    /// <summary>Sends through the node (even clients) or its twin (odd clients).</summary>
    private async Task<(HttpStatusCode Status, string Body, string? ETag)> Send(int client, HttpMethod method, string path, string? json, params (string, string)[] headers)
    {
        var baseUrl = client % 2 == 0 ? node.BaseUrl : _twin.BaseUrl;
        using var request = new HttpRequestMessage(method, $"{baseUrl}/{path}".TrimEnd('/'));
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/fhir+json");
        }
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }
        using var response = await node.Http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response.Headers.ETag?.ToString());
    }

    private static Task Together(Func<int, Task> work) => Task.WhenAll(Enumerable.Range(0, Clients).Select(i => Task.Run(() => work(i))));

    [Fact]
    public async Task Concurrent_updates_with_the_same_if_match_let_exactly_one_win()
    {
        var (_, body, _) = await Send(HttpMethod.Post, "Patient", """{"resourceType":"Patient","gender":"male"}""");
        var id = JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
        var statuses = new HttpStatusCode[Clients];
        await Together(async i => statuses[i] = (await Send(i, HttpMethod.Put, $"Patient/{id}",
            $$"""{"resourceType":"Patient","id":"{{id}}","gender":"female","birthDate":"19{{10 + i}}"}""", ("If-Match", "W/\"1\""))).Status);
        Assert.Single(statuses, HttpStatusCode.OK);
        Assert.Equal(Clients - 1, statuses.Count(s => s == HttpStatusCode.PreconditionFailed));
        var (_, _, etag) = await Send(HttpMethod.Get, $"Patient/{id}", null);
        Assert.Equal("W/\"2\"", etag);
    }

    [Fact]
    public async Task Concurrent_updates_without_preconditions_each_make_their_own_version()
    {
        var (_, body, _) = await Send(HttpMethod.Post, "Patient", """{"resourceType":"Patient","gender":"male"}""");
        var id = JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
        await Together(async i => Assert.Equal(HttpStatusCode.OK, (await Send(i, HttpMethod.Put, $"Patient/{id}",
            $$"""{"resourceType":"Patient","id":"{{id}}","birthDate":"19{{10 + i}}"}""")).Status));
        var history = JsonDocument.Parse((await Send(HttpMethod.Get, $"Patient/{id}/_history", null)).Body).RootElement;
        Assert.Equal(Clients + 1, history.GetProperty("total").GetInt32());
        var versions = history.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("meta").GetProperty("versionId").GetString()).ToList();
        Assert.Equal(Enumerable.Range(1, Clients + 1).Reverse().Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture)), versions);
    }

    [Fact]
    public async Task Concurrent_conditional_creates_with_the_same_criteria_create_one_resource()
    {
        var value = Guid.NewGuid().ToString("N");
        var statuses = new HttpStatusCode[Clients];
        await Together(async i => statuses[i] = (await Send(i, HttpMethod.Post, "Patient",
            $$"""{"resourceType":"Patient","identifier":[{"system":"urn:test:race","value":"{{value}}"}]}""",
            ("If-None-Exist", $"identifier=urn:test:race|{value}"))).Status);
        Assert.Single(statuses, HttpStatusCode.Created);
        Assert.Equal(Clients - 1, statuses.Count(s => s == HttpStatusCode.OK));
        var found = JsonDocument.Parse((await Send(HttpMethod.Get, $"Patient?identifier=urn:test:race|{value}", null)).Body).RootElement;
        Assert.Equal(1, found.GetProperty("total").GetInt32());
    }

    [Fact]
    public async Task Concurrent_transactions_resolving_the_same_conditional_reference_share_one_target()
    {
        var value = Guid.NewGuid().ToString("N");
        var statuses = new HttpStatusCode[Clients];
        await Together(async i =>
        {
            var urn = "urn:uuid:" + Guid.NewGuid();
            statuses[i] = (await Send(i, HttpMethod.Post, "", $$$"""
                {"resourceType":"Bundle","type":"transaction","entry":[
                  {"fullUrl":"{{{urn}}}","resource":{"resourceType":"Practitioner","identifier":[{"system":"urn:test:npi","value":"{{{value}}}"}]},
                   "request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=urn:test:npi|{{{value}}}"}},
                  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"t{{{i}}}"},"performer":[{"reference":"{{{urn}}}"}]},
                   "request":{"method":"POST","url":"Observation"}}
                ]}
                """)).Status;
        });
        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
        var practitioners = JsonDocument.Parse((await Send(HttpMethod.Get, $"Practitioner?identifier=urn:test:npi|{value}", null)).Body).RootElement;
        Assert.Equal(1, practitioners.GetProperty("total").GetInt32());
        var id = practitioners.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString();
        var observations = JsonDocument.Parse((await Send(HttpMethod.Get, $"Observation?performer=Practitioner/{id}&_count=100", null)).Body).RootElement;
        Assert.Equal(Clients, observations.GetProperty("total").GetInt32());
    }

    [Fact]
    public async Task Concurrent_first_writes_for_a_new_patient_share_one_data_key()
    {
        var id = "race-" + Guid.NewGuid().ToString("N")[..12];
        await Together(async i => Assert.Equal(HttpStatusCode.Created, (await Send(i, HttpMethod.Post, "Observation",
            $$$"""{"resourceType":"Observation","status":"final","code":{"text":"k{{{i}}}"},"subject":{"reference":"Patient/{{{id}}}"}}""")).Status));
        using var db = node.Db();
        Assert.Equal(1L, TestNode.Scalar(db, "SELECT count(*) FROM data_key WHERE kind = 'patient' AND owner = @o", ("@o", id)));
        Assert.Equal(1L, TestNode.Scalar(db, """
            SELECT count(DISTINCT v.kid) FROM version v JOIN resource r ON r.rid = v.rid
            WHERE r.type = 'Observation' AND r.rid IN (SELECT rid FROM ix_compartment WHERE patient_id = @o)
            """, ("@o", id)));
    }
}

[Collection(SharedNode.Name)]
public sealed class ConcurrencyTestsOnSqlite(TestNode node) : ConcurrencyTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class ConcurrencyTestsOnPostgres(PostgresTestNode node) : ConcurrencyTests(node);
