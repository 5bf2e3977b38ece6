using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Ward.Cli;
using Ward.Core.Access;
using Ward.Core.Crypto;
using Ward.Core.Node;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>Crypto-shredding and master key rotation, both run through the CLI beside a serving node.</summary>
public sealed class KeyLifecycleTestsOnSqlite() : KeyLifecycleTests(new TestNode());

public sealed class KeyLifecycleTestsOnPostgres() : KeyLifecycleTests(new PostgresTestNode());

public abstract class KeyLifecycleTests(TestNode node) : IAsyncLifetime
{
    private readonly TestNode _node = node;

    public Task InitializeAsync() => _node.InitializeAsync();

    public Task DisposeAsync() => _node.DisposeAsync();

    private async Task<string> Send(HttpMethod method, string relative, string? json = null, HttpStatusCode expected = HttpStatusCode.Created)
    {
        using var request = new HttpRequestMessage(method, $"{_node.BaseUrl}/{relative}");
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/fhir+json");
        }
        using var response = await _node.Http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"{method} {relative}: {response.StatusCode} {body}");
        return body;
    }

    private async Task<string> Create(string json) =>
        JsonDocument.Parse(await Send(HttpMethod.Post, JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!, json)).RootElement.GetProperty("id").GetString()!;

    private async Task<string[]> Ids(string query)
    {
        using var doc = JsonDocument.Parse(await Send(HttpMethod.Get, query, expected: HttpStatusCode.OK));
        return doc.RootElement.TryGetProperty("entry", out var e)
            ? e.EnumerateArray().Where(x => x.GetProperty("search").GetProperty("mode").GetString() != "outcome").Select(x => x.GetProperty("resource").GetProperty("id").GetString()!).ToArray()
            : [];
    }

    private async Task AssertErased(string relative)
    {
        var logged = _node.Logs.Lines.Count;
        var body = await Send(HttpMethod.Get, relative, expected: HttpStatusCode.Gone);
        Assert.Contains("was erased", body);
        Assert.DoesNotContain("Erasme", body);
        // An erased record is an answer, not a fault: no error in the log, no stack trace.
        Assert.DoesNotContain(_node.Logs.Lines.Skip(logged), l => l.Contains("Unexpected", StringComparison.Ordinal) || l.StartsWith("Error", StringComparison.Ordinal));
    }

    private Task<int> Ward(params string[] args) => Commands.Build().Parse(args).InvokeAsync();

    [Fact]
    public async Task Erasing_a_patient_makes_every_version_unreadable_and_unfindable_and_leaves_the_rest()
    {
        var org = await Create("""{"resourceType":"Organization","name":"Clinique du Parc"}""");
        var p = await Create($$$"""{"resourceType":"Patient","name":[{"family":"Erasme","given":["Zoé"]}],"managingOrganization":{"reference":"Organization/{{{org}}}"}}""");
        await Send(HttpMethod.Put, $"Patient/{p}", $$$"""{"resourceType":"Patient","id":"{{{p}}}","name":[{"family":"Erasme","given":["Zoé","Anne"]}],"managingOrganization":{"reference":"Organization/{{{org}}}"}}""", HttpStatusCode.OK);
        var obs = await Create($$$"""{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/{{{p}}}"}}""");
        var enc = await Create($$$"""{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/{{{p}}}"},"serviceProvider":{"reference":"Organization/{{{org}}}"}}""");
        var q = await Create($$$"""{"resourceType":"Patient","name":[{"family":"Keeper"}],"managingOrganization":{"reference":"Organization/{{{org}}}"}}""");
        var qObs = await Create($$$"""{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/{{{q}}}"}}""");
        Assert.Equal([p], await Ids("Patient?family=erasme"));

        Assert.Equal(0, await Ward("patient", "erase", "--data", _node.DataDir, "--patient", $"Patient/{p}", "--reason", "GDPR art. 17 request 2026-118"));

        await AssertErased($"Patient/{p}");
        await AssertErased($"Patient/{p}/_history/1");
        await AssertErased($"Patient/{p}/_history/2");
        await AssertErased($"Patient/{p}/_history");
        await AssertErased($"Patient/{p}/$everything");
        await AssertErased($"Observation/{obs}");
        await AssertErased($"Encounter/{enc}");
        Assert.Empty(await Ids("Patient?family=erasme"));
        Assert.Empty(await Ids($"Observation?subject=Patient/{p}"));
        Assert.Empty(await Ids($"Patient/{p}/Observation"));
        Assert.Equal([qObs], await Ids("Observation?code=http://loinc.org|8302-2"));
        Assert.Equal([org, q], await Ids($"Organization?_id={org}&_revinclude=Patient:organization"));
        Assert.Equal([org], await Ids($"Organization?_id={org}&_revinclude=Encounter:service-provider"));
        Assert.Equal([q], await Ids("Patient"));
        using (var history = JsonDocument.Parse(await Send(HttpMethod.Get, "_history", expected: HttpStatusCode.OK)))
        {
            var ids = history.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("fullUrl").GetString()!).ToList();
            Assert.DoesNotContain(ids, u => u.EndsWith(p, StringComparison.Ordinal) || u.EndsWith(obs, StringComparison.Ordinal) || u.EndsWith(enc, StringComparison.Ordinal));
            Assert.Equal(history.RootElement.GetProperty("total").GetInt32(), ids.Count);
        }
        Assert.Contains("Keeper", await Send(HttpMethod.Get, $"Patient/{q}", expected: HttpStatusCode.OK));
        await Send(HttpMethod.Get, $"Patient/{q}/$everything", expected: HttpStatusCode.OK);

        // What is left on disk: a tombstone without key, no index entry for the erased resources.
        using (var db = _node.Db())
        {
            var args = new[] { ("@p", (object?)p), ("@o", obs), ("@e", enc) };
            Assert.Equal(1L, TestNode.Scalar(db, "SELECT count(*) FROM data_key WHERE kind = 'patient' AND owner = @p AND wrapped IS NULL AND erased IS NOT NULL AND reason = 'GDPR art. 17 request 2026-118'", args));
            Assert.Equal(0L, TestNode.Scalar(db, """
                SELECT (SELECT count(*) FROM ix_string x JOIN resource r ON r.rid = x.rid WHERE r.id IN (@p, @o, @e))
                     + (SELECT count(*) FROM ix_token x JOIN resource r ON r.rid = x.rid WHERE r.id IN (@p, @o, @e))
                     + (SELECT count(*) FROM ix_reference x JOIN resource r ON r.rid = x.rid WHERE r.id IN (@p, @o, @e))
                     + (SELECT count(*) FROM ix_compartment WHERE patient_id = @p)
                """, args));
        }
        var ledger = File.ReadAllText(Path.Combine(_node.DataDir, "keys", "erasures.log"));
        Assert.Contains("erased data key", ledger);
        Assert.DoesNotContain(p, ledger);

        // Erasing twice, or an unknown patient, is refused.
        Assert.Equal(2, await Ward("patient", "erase", "--data", _node.DataDir, "--patient", $"Patient/{p}", "--reason", "again"));
        Assert.Equal(2, await Ward("patient", "erase", "--data", _node.DataDir, "--patient", "Patient/nobody", "--reason", "x"));
        Assert.Equal(2, await Ward("patient", "erase", "--data", _node.DataDir, "--patient", "Observation/x", "--reason", "x"));
    }

    [Fact]
    public async Task A_record_in_two_compartments_is_searchable_with_both_patients_care_and_with_the_one_left_after_the_other_is_erased()
    {
        var (a, b) = (await Create("""{"resourceType":"Patient","name":[{"family":"Subject"}]}"""), await Create("""{"resourceType":"Patient","name":[{"family":"Performer"}]}"""));
        // An observation of patient a that patient b performed (a home measurement by a relative): in both compartments.
        var shared = await Create($$$"""{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/{{{a}}}"},"performer":[{"reference":"Patient/{{{b}}}"}]}""");
        var own = await Create($$$"""{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/{{{a}}}"}}""");
        var made = await _node.AsOperator("POST", "Observation", $$$"""{"resourceType":"Observation","status":"final","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"V"}]},"code":{"text":"glucose"},"subject":{"reference":"Patient/{{{a}}}"}}""");
        var labelled = JsonDocument.Parse(made.Body).RootElement.GetProperty("id").GetString();
        var practitioner = "Practitioner/" + Guid.NewGuid().ToString("N");
        using var clinician = _node.NewHttp(_node.Token(new AccessGrant("two-compartments", "tests", "clinician", SmartScopes.Parse("user/*.rs"), null, practitioner)));
        async Task<string[]> Found()
        {
            using var response = await clinician.GetAsync($"{_node.BaseUrl}/Observation?patient={a}&_total=accurate");
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            var ids = doc.RootElement.TryGetProperty("entry", out var e) ? e.EnumerateArray().Select(x => x.GetProperty("resource").GetProperty("id").GetString()!).Order().ToArray() : [];
            Assert.Equal(ids.Length, doc.RootElement.GetProperty("total").GetInt32());
            return ids;
        }

        Assert.Empty(await Found());
        await _node.CareTeamAsync(a, practitioner);
        // Care of a alone: not what b's compartment also holds, nor the very restricted one (no Consent permits V).
        Assert.Equal([own], await Found());
        await _node.CareTeamAsync(b, practitioner);
        Assert.Equal(new[] { own, shared }.Order(), await Found());

        // Once b is erased (and with it the care team of b) the shared observation, sealed under a's key, is in a's
        // compartment alone: care of a suffices, and the row's summary says so.
        Assert.Equal(0, await Ward("patient", "erase", "--data", _node.DataDir, "--patient", $"Patient/{b}", "--reason", "GDPR art. 17 request 2026-119"));
        Assert.Equal(new[] { own, shared }.Order(), await Found());
        using var db = _node.Db();
        Assert.Equal(a, TestNode.Scalar(db, "SELECT compartment FROM resource WHERE type = 'Observation' AND id = @i", [("@i", shared)]));
        Assert.Equal(1L, Convert.ToInt64(TestNode.Scalar(db, "SELECT labelled FROM resource WHERE type = 'Observation' AND id = @i", [("@i", labelled)]), System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task Rotating_the_master_key_under_reads_and_writes_loses_nothing_and_retires_the_old_key()
    {
        var seeded = new ConcurrentBag<string>();
        for (var i = 0; i < 20; i++)
        {
            seeded.Add(await Create($$$"""{"resourceType":"Patient","name":[{"family":"Seed{{{i}}}"}]}"""));
        }
        var keyFile = _node.Config.MasterKeyPath;
        var oldKey = File.ReadAllText(keyFile);
        using var stop = new CancellationTokenSource();
        var written = new ConcurrentBag<string>();
        var failures = new ConcurrentQueue<string>();
        var writer = Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                try
                {
                    // New patients need new data keys, wrapped under whichever master key is current.
                    var id = await Create($$$"""{"resourceType":"Patient","name":[{"family":"Writer{{{i}}}"}]}""");
                    written.Add(id);
                    await Create($$$"""{"resourceType":"Observation","status":"final","code":{"text":"t"},"subject":{"reference":"Patient/{{{id}}}"}}""");
                }
                catch (Exception e)
                {
                    failures.Enqueue(e.Message);
                }
            }
        });
        var reader = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                foreach (var id in seeded.Concat(written).Take(50))
                {
                    using var response = await _node.Http.GetAsync($"{_node.BaseUrl}/Patient/{id}");
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        failures.Enqueue($"read Patient/{id}: {response.StatusCode}");
                    }
                }
            }
        });
        await Task.Delay(300);
        Assert.Equal(0, await Ward("keys", "rotate-master", "--data", _node.DataDir));
        await Task.Delay(300);
        Assert.Equal(0, await Ward("keys", "rotate-master", "--data", _node.DataDir));
        await Task.Delay(300);
        await stop.CancelAsync();
        await Task.WhenAll(writer, reader);
        Assert.Empty(failures);
        Assert.True(written.Count > 5, $"only {written.Count} writes during the rotations");

        Assert.NotEqual(oldKey, File.ReadAllText(keyFile));
        Assert.False(File.Exists(keyFile + ".new"));
        // A fresh process with only the new key file reads everything; the old key no longer opens the node.
        using (var store = RecordStore.Open(_node.Config))
        using (var session = store.OpenRead())
        {
            foreach (var id in seeded.Concat(written))
            {
                Assert.NotNull(session.Read("Patient", id)!.Data);
            }
        }
        var current = File.ReadAllText(keyFile);
        File.WriteAllText(keyFile, oldKey);
        Assert.Contains("is not the key of this database", Assert.Throws<NodeException>(() => RecordStore.Open(_node.Config)).Message);
        File.WriteAllText(keyFile, current);
    }

    [Fact]
    public async Task An_interrupted_rotation_rolls_back_before_the_switch_and_completes_after_it()
    {
        var id = await Create("""{"resourceType":"Patient","name":[{"family":"Interrupted"}]}""");
        var keyFile = _node.Config.MasterKeyPath;
        var pending = keyFile + ".new";
        var before = File.ReadAllText(keyFile);

        // Stopped before the database switched: a new key file exists but nothing is wrapped under it.
        MasterKeyFile.Create(pending);
        using (var store = RecordStore.Open(_node.Config))
        {
            Assert.False(File.Exists(pending));
            Assert.Equal(before, File.ReadAllText(keyFile));
            using var s = store.OpenRead();
            Assert.NotNull(s.Read("Patient", id)!.Data);
        }

        // Stopped after the database switched but before the rename: put the files back in that state.
        Assert.Equal(0, await Ward("keys", "rotate-master", "--data", _node.DataDir));
        var after = File.ReadAllText(keyFile);
        File.WriteAllText(keyFile, before);
        NodeConfig.WritePrivate(pending, after);
        using (var store = RecordStore.Open(_node.Config))
        {
            Assert.False(File.Exists(pending));
            Assert.Equal(after, File.ReadAllText(keyFile));
            using var s = store.OpenRead();
            Assert.NotNull(s.Read("Patient", id)!.Data);
        }
        // The serving node followed all of this.
        await Send(HttpMethod.Get, $"Patient/{id}", expected: HttpStatusCode.OK);
        await Create("""{"resourceType":"Patient","name":[{"family":"AfterRotation"}]}""");
    }
}
