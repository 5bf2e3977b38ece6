using System.Net;
using System.Text;
using System.Text.Json;
using System.Data.Common;
using Ward.Cli;
using Ward.Core.Crypto;
using Ward.Core.Node;
using Ward.Core.Search;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>Encryption at rest: sealed versions that cannot be altered or swapped, the blind index, and the master key's guard.</summary>
public abstract class EncryptionTests(TestNode node)
{
    private async Task<string> Create(string json, TestNode? on = null)
    {
        var n = on ?? node;
        using var response = await n.Http.PostAsync($"{n.BaseUrl}/{JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()}",
            new StringContent(json, Encoding.UTF8, "application/fhir+json"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    private async Task<(HttpStatusCode Status, string Body)> Get(string relative, TestNode? on = null)
    {
        var n = on ?? node;
        using var response = await n.Http.GetAsync($"{n.BaseUrl}/{relative}");
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private DbConnection Db(TestNode? on = null) => (on ?? node).Db();

    private static object? Scalar(DbConnection db, string sql, params (string, object?)[] args) => TestNode.Scalar(db, sql, args);

    private const string VersionOf = "SELECT v.seq FROM version v JOIN resource r ON r.rid = v.rid WHERE r.type = @t AND r.id = @i AND v.version = @v";

    [Fact]
    public void Identifying_parameters_are_exactly_the_person_and_name_address_telecom_identifier_ones()
    {
        bool Blind(string type, string code) => SearchParameters.Find(type, code)!.Blind;
        foreach (var code in new[] { "name", "family", "given", "phonetic", "address", "address-city", "address-postalcode", "telecom", "phone", "email", "identifier", "gender", "language" })
        {
            Assert.True(Blind("Patient", code), $"Patient.{code} must be blind");
        }
        Assert.True(Blind("Practitioner", "name"));
        Assert.True(Blind("RelatedPerson", "telecom"));
        Assert.True(Blind("Person", "identifier"));
        Assert.True(Blind("Organization", "address"));
        Assert.True(Blind("Location", "address-city"));
        Assert.True(Blind("Encounter", "identifier"));
        Assert.True(Blind("Observation", "identifier"));
        Assert.False(Blind("Patient", "birthdate"));
        Assert.False(Blind("Patient", "_tag"));
        Assert.False(Blind("Patient", "organization"));
        Assert.False(Blind("Organization", "name"));
        Assert.False(Blind("Observation", "code"));
        Assert.False(Blind("Condition", "code"));
        Assert.False(Blind("Encounter", "status"));
    }

    [Fact]
    public async Task Blind_index_keeps_prefix_exact_and_identifier_searches_and_refuses_what_it_cannot_serve()
    {
        var tag = Guid.NewGuid().ToString("N");
        var id = await Create($$$"""{"resourceType":"Patient","meta":{"tag":[{"system":"urn:enc","code":"{{{tag}}}"}]},"name":[{"family":"Dupont","given":["Amélie"]}],"identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.8","value":"2840763123456"}],"address":[{"line":["12 rue des Lilas"],"city":"Nantes"}]}""");
        async Task<string[]> Ids(string query)
        {
            var (status, body) = await Get($"{query}&_tag=urn:enc|{tag}");
            Assert.True(status == HttpStatusCode.OK, body);
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.TryGetProperty("entry", out var e) ? e.EnumerateArray().Select(x => x.GetProperty("resource").GetProperty("id").GetString()!).ToArray() : [];
        }
        Assert.Equal([id], await Ids("Patient?name=dup"));
        Assert.Equal([id], await Ids("Patient?family=DUPONT"));
        Assert.Equal([id], await Ids("Patient?given=amelie"));
        Assert.Equal([id], await Ids("Patient?family:exact=Dupont"));
        Assert.Empty(await Ids("Patient?family:exact=dupont"));
        Assert.Empty(await Ids("Patient?family=dupontel"));
        Assert.Equal([id], await Ids("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|2840763123456"));
        Assert.Equal([id], await Ids("Patient?identifier=2840763123456"));
        Assert.Empty(await Ids("Patient?identifier=urn:other|2840763123456"));
        Assert.Empty(await Ids("Patient?identifier=284076312345"));
        Assert.Equal([id], await Ids("Patient?address=12%20rue"));
        Assert.Equal([id], await Ids("Patient?address-city=nan"));
        foreach (var (query, says) in new[]
        {
            ("Patient?name:contains=pon", "':contains' cannot be used on 'name'"),
            ("Patient?identifier:text=x", "':text' cannot be used on 'identifier'"),
            ("Patient?_sort=family", "cannot be sorted by 'family'"),
        })
        {
            var (status, body) = await Get(query);
            Assert.Equal(HttpStatusCode.BadRequest, status);
            var diagnostics = JsonDocument.Parse(body).RootElement.GetProperty("issue")[0].GetProperty("diagnostics").GetString();
            Assert.Contains(says, diagnostics);
            Assert.Contains("keyed hashes", diagnostics);
        }
        // The index holds hashes: not the name, not its normalised form.
        using var db = Db();
        Assert.Equal(0L, Scalar(db, "SELECT count(*) FROM ix_string WHERE value LIKE '%dupont%' OR exact LIKE '%Dupont%'"));
        Assert.Equal(0L, Scalar(db, "SELECT count(*) FROM ix_token WHERE code = '2840763123456'"));
        Assert.Equal(6L, Scalar(db, "SELECT count(*) FROM ix_string x JOIN resource r ON r.rid = x.rid WHERE r.id = @i AND x.param = 'family'", ("@i", id)));
    }

    [Fact]
    public async Task A_data_key_made_by_a_rolled_back_transaction_never_seals_or_opens_another_patients_records()
    {
        // The first transaction makes a new patient's key, then fails: its key id may be given to the next key (SQLite
        // reuses it), so nothing remembered about the discarded key may be used for the next one.
        var failing = new
        {
            resourceType = "Bundle",
            type = "transaction",
            entry = new object[]
            {
                new { request = new { method = "POST", url = "Patient" }, resource = new { resourceType = "Patient", gender = "female" } },
                new { request = new { method = "PUT", url = "Observation/x" }, resource = new { resourceType = "Patient", gender = "male" } },
            },
        };
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, (await node.Http.PostAsync(node.BaseUrl, JsonContent(failing))).StatusCode);
        for (var i = 0; i < 3; i++)
        {
            var created = await node.Http.PostAsync(node.BaseUrl + "/Patient", JsonContent(new { resourceType = "Patient", gender = "other" }));
            Assert.Equal(System.Net.HttpStatusCode.Created, created.StatusCode);
            var read = await node.Http.GetAsync(created.Headers.Location!);
            Assert.Equal(System.Net.HttpStatusCode.OK, read.StatusCode);
            Assert.Equal(System.Net.HttpStatusCode.OK, (await node.Http.GetAsync(node.BaseUrl + "/Patient?_count=1&_sort=-_lastUpdated")).StatusCode);
        }
    }

    private static StringContent JsonContent(object value) =>
        new(System.Text.Json.JsonSerializer.Serialize(value), Encoding.UTF8, "application/fhir+json");

    [Fact]
    public async Task Same_content_twice_gives_different_ciphertexts_bound_to_their_patients_keys()
    {
        var a = await Create("""{"resourceType":"Patient","gender":"other"}""");
        var b = await Create("""{"resourceType":"Patient","gender":"other"}""");
        using var db = Db();
        var ca = (byte[])Scalar(db, "SELECT v.data FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = @i", ("@i", a))!;
        var cb = (byte[])Scalar(db, "SELECT v.data FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = @i", ("@i", b))!;
        Assert.NotEqual(ca, cb);
        Assert.DoesNotContain("resourceType", Encoding.Latin1.GetString(ca));
        var ka = Scalar(db, "SELECT v.kid FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = @i", ("@i", a));
        var kb = Scalar(db, "SELECT v.kid FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = @i", ("@i", b));
        Assert.NotEqual(ka, kb);
        Assert.Equal("patient", Scalar(db, "SELECT kind FROM data_key WHERE kid = @k", ("@k", ka)));
        var obs = await Create($$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{a}}}"}}""");
        Assert.Equal(ka, Scalar(db, "SELECT v.kid FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = @i", ("@i", obs)));
        var org = await Create("""{"resourceType":"Organization","name":"Shared"}""");
        Assert.Equal("shared", Scalar(db, "SELECT k.kind FROM version v JOIN resource r ON r.rid = v.rid JOIN data_key k ON k.kid = v.kid WHERE r.id = @i", ("@i", org)));
    }

    private async Task AssertIntegrityFailure(TestNode own, string type, string id, int version)
    {
        var before = own.Logs.Lines.Count;
        var (status, body) = await Get($"{type}/{id}/_history/{version}", own);
        Assert.Equal(HttpStatusCode.InternalServerError, status);
        Assert.Contains("failed its integrity check", body);
        Assert.DoesNotContain("\"resourceType\":\"" + type, body);
        // Logged for the operator by type and version; the id, which names a patient's record, stays out of the log (ward verify names it).
        Assert.Contains(own.Logs.Lines.Skip(before), l => l.StartsWith("Critical", StringComparison.Ordinal) && l.Contains($"a {type} (version {version})"));
        Assert.DoesNotContain(own.Logs.Lines, l => l.Contains(id, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Swapped_flipped_or_rebound_ciphertexts_are_never_served()
    {
        var own = node.Sibling();
        await own.InitializeAsync();
        try
        {
            await Tamper(own);
        }
        finally
        {
            await own.DisposeAsync();
        }
    }

    private async Task Tamper(TestNode own)
    {
        var a = await Create("""{"resourceType":"Patient","name":[{"family":"Swapa"}]}""", own);
        var b = await Create("""{"resourceType":"Patient","name":[{"family":"Swapb"}]}""", own);
        var c = await Create("""{"resourceType":"Patient","name":[{"family":"Flipc"}]}""", own);
        var d = await Create("""{"resourceType":"Patient","name":[{"family":"Rebind"}]}""", own);
        using var db = Db(own);
        var sa = Scalar(db, VersionOf, ("@t", "Patient"), ("@i", a), ("@v", 1));
        var sb = Scalar(db, VersionOf, ("@t", "Patient"), ("@i", b), ("@v", 1));
        var sc = Scalar(db, VersionOf, ("@t", "Patient"), ("@i", c), ("@v", 1));
        var sd = Scalar(db, VersionOf, ("@t", "Patient"), ("@i", d), ("@v", 1));
        // Swap two ciphertexts together with their key ids: the associated data still names the other record.
        var (da, ka) = (Scalar(db, "SELECT data FROM version WHERE seq = @s", ("@s", sa)), Scalar(db, "SELECT kid FROM version WHERE seq = @s", ("@s", sa)));
        var (db2, kb) = (Scalar(db, "SELECT data FROM version WHERE seq = @s", ("@s", sb)), Scalar(db, "SELECT kid FROM version WHERE seq = @s", ("@s", sb)));
        Scalar(db, "UPDATE version SET data = @d, kid = @k WHERE seq = @s", ("@d", db2), ("@k", kb), ("@s", sa));
        Scalar(db, "UPDATE version SET data = @d, kid = @k WHERE seq = @s", ("@d", da), ("@k", ka), ("@s", sb));
        // Flip one byte in the middle of a ciphertext.
        var data = (byte[])Scalar(db, "SELECT data FROM version WHERE seq = @s", ("@s", sc))!;
        data[data.Length / 2] ^= 0x01;
        Scalar(db, "UPDATE version SET data = @d WHERE seq = @s", ("@d", data), ("@s", sc));
        // Point a version at another patient's key id.
        Scalar(db, "UPDATE version SET kid = (SELECT kid FROM version WHERE seq = @o) WHERE seq = @s", ("@o", sc), ("@s", sd));
        await AssertIntegrityFailure(own, "Patient", a, 1);
        await AssertIntegrityFailure(own, "Patient", b, 1);
        await AssertIntegrityFailure(own, "Patient", c, 1);
        await AssertIntegrityFailure(own, "Patient", d, 1);
        var (status, body) = await Get("Patient?name=swap", own);
        Assert.Equal(HttpStatusCode.InternalServerError, status);
        Assert.DoesNotContain("Swapa", body);
        // ward export stops with a clear error rather than writing a record it cannot verify.
        Assert.Equal(2, await Commands.Build().Parse(["export", "--data", own.DataDir, "--out", Path.Combine(own.DataDir, "out")]).InvokeAsync());
    }

    [Fact]
    public async Task A_tampered_wrapped_key_fails_every_record_it_seals()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-wrap-" + Guid.NewGuid().ToString("N")[..8]);
        var config = node.NewConfig(dir, "wrap");
        try
        {
            string id;
            using (var store = RecordStore.Open(config, create: true))
            {
                id = await Put(store, """{"resourceType":"Patient","id":"p1","name":[{"family":"Wrapped"}]}""");
            }
            using (var db = node.Db(config))
            {
                var wrapped = (byte[])Scalar(db, "SELECT wrapped FROM data_key WHERE kind = 'patient' AND owner = 'p1'")!;
                wrapped[^1] ^= 0x80;
                Scalar(db, "UPDATE data_key SET wrapped = @w WHERE kind = 'patient' AND owner = 'p1'", ("@w", wrapped));
            }
            using (var store = RecordStore.Open(config))
            {
                using var session = store.OpenRead();
                var e = Assert.Throws<RecordIntegrityException>(() => session.Read("Patient", id));
                Assert.Equal(1, e.Version);
            }
        }
        finally
        {
            TestNode.Drop(config);
            Directory.Delete(dir, recursive: true);
        }
    }

    internal static async Task<string> Put(RecordStore store, string json)
    {
        var resource = Ward.Core.Fhir.FhirJson.Parse(Encoding.UTF8.GetBytes(json));
        await using var audit = new Ward.Core.Audit.AuditLog(store, Ward.Core.Audit.SignedNote.Signer.Create("ward/test"), TimeProvider.System);
        var engine = new Ward.Core.Fhir.FhirEngine(store, audit, TimeProvider.System);
        var response = await engine.HandleAsync(new Ward.Core.Fhir.FhirRequest
        {
            Method = "PUT",
            Path = $"{resource.TypeName}/{resource.Id}",
            Query = [],
            Resource = resource,
            BaseUrl = "http://localhost/fhir",
            Caller = Ward.Core.Access.AccessGrant.Operator,
        }, CancellationToken.None);
        Assert.True(response.Status is 200 or 201);
        return resource.Id!;
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_missing_wrong_or_shared_master_key_stops_the_node_and_no_key_is_ever_made_over_data()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-mk-" + Guid.NewGuid().ToString("N")[..8]);
        var config = node.NewConfig(dir, "mk");
        try
        {
            using (var store = RecordStore.Open(config, create: true))
            {
                await Put(store, """{"resourceType":"Patient","id":"mk1","gender":"female"}""");
            }
            var keyFile = config.MasterKeyPath;
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));
            var original = File.ReadAllBytes(keyFile);

            File.Move(keyFile, keyFile + ".away");
            Assert.Equal(2, await Commands.Build().Parse(["export", "--data", dir, "--out", Path.Combine(dir, "out")]).InvokeAsync());
            var missing = Assert.Throws<NodeException>(() => RecordStore.Open(config));
            Assert.Contains("is missing", missing.Message);
            Assert.Contains("never creates a new master key", missing.Message);
            Assert.False(File.Exists(keyFile));

            MasterKeyFile.Create(keyFile);
            var wrong = Assert.Throws<NodeException>(() => RecordStore.Open(config));
            Assert.Contains("is not the key of this database", wrong.Message);

            File.Delete(keyFile);
            File.WriteAllBytes(keyFile, original);
            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
            Assert.Contains("chmod 600", Assert.Throws<NodeException>(() => RecordStore.Open(config)).Message);

            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            File.WriteAllText(keyFile, "not a key");
            Assert.Contains("not a Ward master key file", Assert.Throws<NodeException>(() => RecordStore.Open(config)).Message);

            // The key may live elsewhere: the environment variable names it (checked in a child process).
            File.Delete(keyFile);
            File.Move(keyFile + ".away", Path.Combine(dir, "elsewhere.key"));
            var (code, output) = await WardProcess.OutputAsync(["export", "--data", dir, "--out", Path.Combine(dir, "out")], ("WARD_MASTER_KEY_FILE", Path.Combine(dir, "elsewhere.key")));
            Assert.True(code == 0, output);
            Assert.Contains("\"mk1\"", File.ReadAllText(Path.Combine(dir, "out", "Patient.ndjson")));
        }
        finally
        {
            TestNode.Drop(config);
            Directory.Delete(dir, recursive: true);
        }
    }
}

[Collection(SharedNode.Name)]
public sealed class EncryptionTestsOnSqlite(TestNode node) : EncryptionTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class EncryptionTestsOnPostgres(PostgresTestNode node) : EncryptionTests(node);
