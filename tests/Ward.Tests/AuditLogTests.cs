using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// Every interaction leaves BALP AuditEvents in the Merkle log (one per patient touched), writes commit the digest of
/// what they stored, refusals are recorded, nothing is served when the trail cannot be written, and the node's
/// checkpoints, proofs and patient access log verify with code that is not Ward's.
/// </summary>
public abstract class AuditLogTests(TestNode node)
{
    private HttpClient As(string role, string scopes, string? patient = null, string? fhirUser = null, string? subject = null) =>
        node.NewHttp(node.Token(new AccessGrant(subject ?? "u-" + role, "app", role, SmartScopes.Parse(scopes), patient, fhirUser)));

    private HttpClient Officer() => As("security-officer", "user/AuditEvent.rs");

    private async Task<string> CreateAsync(object resource)
    {
        var type = JsonSerializer.SerializeToElement(resource).GetProperty("resourceType").GetString();
        var response = await node.Http.PostAsJsonAsync($"{node.BaseUrl}/{type}", resource);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
    }

    private Task<string> PatientAsync() => CreateAsync(new { resourceType = "Patient", gender = "female", name = new[] { new { family = "Audited" } } });

    private async Task<List<JsonElement>> EventsAsync(string query)
    {
        using var officer = Officer();
        var response = await officer.GetAsync($"{node.BaseUrl}/AuditEvent?{query}&_count=1000");
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        var bundle = await response.Content.ReadFromJsonAsync<JsonElement>();
        return bundle.TryGetProperty("entry", out var entries) ? entries.EnumerateArray().Select(e => e.GetProperty("resource")).ToList() : [];
    }

    private static string Subtype(JsonElement e) => e.GetProperty("subtype")[0].GetProperty("code").GetString()!;

    private static IEnumerable<string> Entities(JsonElement e) => e.TryGetProperty("entity", out var list)
        ? list.EnumerateArray().Where(x => x.TryGetProperty("what", out _)).Select(x => x.GetProperty("what").GetProperty("reference").GetString()!)
        : [];

    [Fact]
    public async Task Reads_searches_writes_and_deletes_each_leave_an_event_per_patient_and_writes_commit_the_stored_digest()
    {
        var patient = await PatientAsync();
        var other = await PatientAsync();
        var obs = await CreateAsync(new { resourceType = "Observation", status = "final", code = new { text = "pulse" }, subject = new { reference = "Patient/" + patient } });
        var otherObs = await CreateAsync(new { resourceType = "Observation", status = "final", code = new { text = "pulse" }, subject = new { reference = "Patient/" + other } });
        await node.CareTeamAsync(patient, "Practitioner/p-audit");
        await node.CareTeamAsync(other, "Practitioner/p-audit");
        using var clinician = As("clinician", "user/*.cruds", fhirUser: "Practitioner/p-audit", subject: "clinician-" + patient);
        Assert.Equal(HttpStatusCode.OK, (await clinician.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await clinician.GetAsync($"{node.BaseUrl}/Observation?_id={obs},{otherObs}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await clinician.DeleteAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);

        var events = await EventsAsync($"patient={patient}");
        // The patient, the observation, the care team that lets the clinician in; then the clinician's read, search and deletion.
        Assert.Equal(["create", "create", "create", "read", "search-type", "delete"], events.Select(Subtype).Reverse());
        Assert.All(events, e => Assert.Equal("Patient/" + patient, e.GetProperty("entity")[0].GetProperty("what").GetProperty("reference").GetString()));
        var read = events.Single(e => Subtype(e) == "read");
        Assert.Equal("R", read.GetProperty("action").GetString());
        Assert.Equal("0", read.GetProperty("outcome").GetString());
        Assert.Equal("TREAT", read.GetProperty("purposeOfEvent")[0].GetProperty("coding")[0].GetProperty("code").GetString());
        var user = read.GetProperty("agent").EnumerateArray().Single(a => a.GetProperty("requestor").GetBoolean());
        Assert.Equal("Practitioner/p-audit", user.GetProperty("who").GetProperty("reference").GetString());
        Assert.Equal("clinician-" + patient, user.GetProperty("who").GetProperty("identifier").GetProperty("value").GetString());
        Assert.Equal("127.0.0.1", user.GetProperty("network").GetProperty("address").GetString());
        Assert.Contains($"Observation/{obs}/_history/1", Entities(read));
        // The search touched two patients: one event each, each naming the query.
        var search = events.Single(e => Subtype(e) == "search-type");
        var query = search.GetProperty("entity").EnumerateArray().Single(x => x.TryGetProperty("query", out _)).GetProperty("query").GetString()!;
        Assert.Equal($"_id={obs}%2C{otherObs}", Encoding.UTF8.GetString(Convert.FromBase64String(query)));
        Assert.Contains(await EventsAsync($"patient={other}"), e => Subtype(e) == "search-type");
        Assert.NotEmpty(await EventsAsync($"agent=Practitioner/p-audit&subtype=delete&patient={patient}"));

        // Each write names the version it stored with the digest of the stored row, as ward verify recomputes it.
        var delete = events.Single(e => Subtype(e) == "delete");
        var created = events.First(e => Subtype(e) == "create" && Entities(e).Any(r => r.StartsWith("Observation/", StringComparison.Ordinal)));
        foreach (var (e, version) in new[] { (created, 1), (delete, 2) })
        {
            var entity = e.GetProperty("entity").EnumerateArray().Single(x => x.GetProperty("what").GetProperty("reference").GetString() == $"Observation/{obs}/_history/{version}");
            var digest = entity.GetProperty("detail")[0].GetProperty("valueBase64Binary").GetString();
            using var db = node.Db();
            var row = (long)TestNode.Scalar(db, "SELECT v.last_updated FROM version v JOIN resource r ON r.rid = v.rid WHERE r.type = 'Observation' AND r.id = @i AND v.version = @v", ("@i", obs), ("@v", version))!;
            var data = TestNode.Scalar(db, "SELECT v.data FROM version v JOIN resource r ON r.rid = v.rid WHERE r.type = 'Observation' AND r.id = @i AND v.version = @v", ("@i", obs), ("@v", version)) as byte[];
            Assert.Equal(Convert.ToBase64String(VersionDigest.Of("Observation", obs, version, row, version == 1 ? "POST" : "DELETE", version == 2, data)), digest);
        }
    }

    [Fact]
    public async Task Refusals_and_requests_without_a_valid_token_are_recorded_against_what_they_aimed_at()
    {
        var patient = await PatientAsync();
        var other = await PatientAsync();
        var obs = await CreateAsync(new { resourceType = "Observation", status = "final", code = new { text = "x" }, subject = new { reference = "Patient/" + other } });
        using var own = As("patient", "patient/*.rs", patient: patient, fhirUser: "Patient/" + patient);
        // Answered as a missing record (issue 29, point 6), recorded against the record and its patient all the same.
        Assert.Equal(HttpStatusCode.NotFound, (await own.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        var refused = (await EventsAsync($"patient={other}&outcome=4")).Single();
        Assert.Equal("read", Subtype(refused));
        Assert.Equal("404", refused.GetProperty("outcomeDesc").GetString());
        Assert.Contains($"Observation/{obs}", Entities(refused));

        var before = (await EventsAsync("subtype=token-refused")).Count;
        using var anonymous = node.NewHttp(null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync($"{node.BaseUrl}/Patient/{patient}")).StatusCode);
        using var forged = node.NewHttp("not.a.token");
        Assert.Equal(HttpStatusCode.Unauthorized, (await forged.GetAsync($"{node.BaseUrl}/Patient")).StatusCode);
        var failed = await EventsAsync("subtype=token-refused");
        Assert.Equal(before + 2, failed.Count);
        Assert.All(failed, e => Assert.Equal("4", e.GetProperty("outcome").GetString()));
    }

    [Fact]
    public async Task The_audit_log_is_read_only_and_open_to_the_security_officer_and_to_patients_for_their_own_entries()
    {
        var patient = await PatientAsync();
        var other = await PatientAsync();
        using var officer = Officer();
        var post = await officer.PostAsJsonAsync($"{node.BaseUrl}/AuditEvent", new { resourceType = "AuditEvent" });
        Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
        using var clinician = As("clinician", "user/*.cruds");
        Assert.Equal(HttpStatusCode.Forbidden, (await clinician.GetAsync($"{node.BaseUrl}/AuditEvent")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await clinician.GetAsync($"{node.Origin}/audit/checkpoint")).StatusCode);
        using var own = As("patient", "patient/*.rs", patient: patient, fhirUser: "Patient/" + patient);
        var mine = await own.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/AuditEvent?_count=1000");
        var entries = mine.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource")).ToList();
        Assert.NotEmpty(entries);
        Assert.All(entries, e => Assert.Equal("Patient/" + patient, e.GetProperty("entity")[0].GetProperty("what").GetProperty("reference").GetString()));
        // Asking for another patient's entries gives only one's own (none of theirs).
        var theirs = await own.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/AuditEvent?patient={other}");
        Assert.Equal(0, theirs.GetProperty("total").GetInt32());
        var otherIndex = (await EventsAsync($"patient={other}"))[0].GetProperty("id").GetString();
        Assert.Equal(HttpStatusCode.NotFound, (await own.GetAsync($"{node.BaseUrl}/AuditEvent/{otherIndex}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await own.GetAsync($"{node.Origin}/audit/entries/{otherIndex}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await own.GetAsync($"{node.BaseUrl}/Patient/{other}/$access-log")).StatusCode);
    }

    [Fact]
    public async Task Checkpoints_are_signed_by_the_node_key_and_the_root_inclusion_and_consistency_proofs_verify()
    {
        await PatientAsync();
        using var officer = Officer();
        var vkey = (await new HttpClient().GetStringAsync($"{node.Origin}/audit/key")).Trim();
        var verifier = SignedNote.ParseVerifier(vkey);
        Assert.Equal("ward/test", verifier.Name);
        await Task.Delay(AuditCheckpointsInterval * 2);
        var first = await CheckpointAsync(officer, verifier);
        await PatientAsync();
        await Task.Delay(AuditCheckpointsInterval * 2);
        var second = await CheckpointAsync(officer, verifier);
        Assert.True(second.Size > first.Size);

        // The root, recomputed from every stored entry (opened: entries are sealed at rest) by a plain recursive MTH (not
        // the node's stored subtrees); and from the leaf hashes stored beside the sealed entries, without opening them.
        var entries = node.Store.Read(s => s.AuditEntries(0, (int)second.Size).ToList());
        var leaves = entries.Select(e => SHA256.HashData([0, .. e.Data!])).ToList();
        Assert.Equal(second.Size, leaves.Count);
        Assert.Equal(Convert.ToBase64String(second.Root), Convert.ToBase64String(Mth(leaves, 0, leaves.Count)));
        using (var db = node.Db())
        {
            var stored = new List<byte[]>();
            using var cmd = db.CreateCommand();
            cmd.CommandText = "SELECT leaf FROM audit_entry WHERE idx < " + second.Size + " ORDER BY idx";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                stored.Add((byte[])reader.GetValue(0));
            }
            Assert.Equal(Convert.ToBase64String(second.Root), Convert.ToBase64String(Mth(stored, 0, stored.Count)));
        }

        var consistency = await officer.GetFromJsonAsync<JsonElement>($"{node.Origin}/audit/proof/consistency?from={first.Size}&to={second.Size}");
        var hashes = consistency.GetProperty("hashes").EnumerateArray().Select(h => Convert.FromBase64String(h.GetString()!)).ToList();
        Assert.True(Merkle.VerifyConsistency(first.Size, second.Size, first.Root, second.Root, hashes));
        Assert.False(Merkle.VerifyConsistency(first.Size, second.Size, second.Root, second.Root, hashes));

        var index = second.Size - 1;
        var inclusion = await officer.GetFromJsonAsync<JsonElement>($"{node.Origin}/audit/proof/inclusion?index={index}&size={second.Size}");
        var entry = await officer.GetByteArrayAsync($"{node.Origin}/audit/entries/{index}");
        var path = inclusion.GetProperty("hashes").EnumerateArray().Select(h => Convert.FromBase64String(h.GetString()!)).ToList();
        Assert.True(Merkle.VerifyInclusion(index, second.Size, Merkle.LeafHash(entry), path, second.Root));
        entry[^2] ^= 1;
        Assert.False(Merkle.VerifyInclusion(index, second.Size, Merkle.LeafHash(entry), path, second.Root));
        // Proofs only up to what the node has signed.
        Assert.Equal(HttpStatusCode.BadRequest, (await officer.GetAsync($"{node.Origin}/audit/proof/inclusion?index=0&size={second.Size + 1_000_000}")).StatusCode);
    }

    private static readonly TimeSpan AuditCheckpointsInterval = TimeSpan.FromSeconds(1);

    private async Task<Checkpoint> CheckpointAsync(HttpClient http, SignedNote.Verifier verifier)
    {
        var note = await http.GetStringAsync($"{node.Origin}/audit/checkpoint");
        Assert.True(SignedNote.TryOpen(note, [verifier], out var text, out _, out var error), error);
        Assert.True(Checkpoint.TryParse(text, out var checkpoint));
        Assert.Equal("ward/test", checkpoint.Origin);
        return checkpoint;
    }

    private static byte[] Mth(List<byte[]> leaves, int start, int end)
    {
        if (end - start == 1)
        {
            return leaves[start];
        }
        var k = 1;
        while (k * 2 < end - start)
        {
            k *= 2;
        }
        return SHA256.HashData([1, .. Mth(leaves, start, start + k), .. Mth(leaves, start + k, end)]);
    }

    [Fact]
    public async Task A_patient_sees_a_clinicians_read_in_their_access_log_with_a_proof_an_independent_verifier_accepts()
    {
        var practitioner = await CreateAsync(new { resourceType = "Practitioner", name = new[] { new { family = "Laennec", given = new[] { "René" }, prefix = new[] { "Dr" } } } });
        var patient = await PatientAsync();
        var obs = await CreateAsync(new { resourceType = "Observation", status = "final", code = new { text = "lungs" }, subject = new { reference = "Patient/" + patient } });
        await node.CareTeamAsync(patient, "Practitioner/" + practitioner);
        using (var clinician = As("clinician", "user/*.rs", fhirUser: "Practitioner/" + practitioner))
        {
            Assert.Equal(HttpStatusCode.OK, (await clinician.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        }
        using var own = As("patient", "patient/*.rs", patient: patient, fhirUser: "Patient/" + patient);
        var log = await own.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/Patient/{patient}/$access-log");
        var parameters = log.GetProperty("parameter").EnumerateArray().ToList();
        var checkpoint = parameters.Single(p => p.GetProperty("name").GetString() == "checkpoint").GetProperty("valueString").GetString()!;
        var entries = parameters.Where(p => p.GetProperty("name").GetString() == "entry")
            .Select(p => p.GetProperty("part").EnumerateArray().ToDictionary(x => x.GetProperty("name").GetString()!, x => x)).ToList();
        var read = entries.Single(e => e["what"].GetProperty("valueString").GetString()!.StartsWith("read ", StringComparison.Ordinal));
        Assert.Equal("Dr René Laennec", read["who"].GetProperty("valueString").GetString());
        Assert.Equal("clinician", read["role"].GetProperty("valueCode").GetString());
        Assert.Equal("TREAT", read["purpose"].GetProperty("valueCode").GetString());
        Assert.False(read["breakTheGlass"].GetProperty("valueBoolean").GetBoolean());
        Assert.Equal($"read Observation/{obs}/_history/1", read["what"].GetProperty("valueString").GetString());
        Assert.Contains(entries, e => e["what"].GetProperty("valueString").GetString()!.StartsWith("create ", StringComparison.Ordinal));

        var request = new
        {
            vkey = await new HttpClient().GetStringAsync($"{node.Origin}/audit/key"),
            checkpoint,
            entries = entries.Select(e => new
            {
                index = long.Parse(e["index"].GetProperty("valueString").GetString()!, System.Globalization.CultureInfo.InvariantCulture),
                @event = e["event"].GetProperty("valueBase64Binary").GetString(),
                proof = e["proof"].GetProperty("valueString").GetString()!.Split(',', StringSplitOptions.RemoveEmptyEntries),
            }).ToList(),
        };
        var (code, output) = await VerifyAsync(JsonSerializer.Serialize(request));
        Assert.True(code == 0, output);
        Assert.Contains($"verified {entries.Count} entries against ward/test", output);

        // The same verifier rejects an entry that was altered after the fact.
        var tampered = JsonSerializer.Serialize(request).Replace(request.entries[0].@event!, Convert.ToBase64String(Encoding.UTF8.GetBytes("{\"resourceType\":\"AuditEvent\"}")));
        var (badCode, badOutput) = await VerifyAsync(tampered);
        Assert.Equal(1, badCode);
        Assert.Contains("is not in the checkpoint's tree", badOutput);
    }

    private static async Task<(int Code, string Output)> VerifyAsync(string input)
    {
        var script = Path.Combine(TestData.RepoRoot, "tests", "tools", "verify_access_log.py");
        using var process = Process.Start(new ProcessStartInfo("/usr/bin/python3", [script])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        await process.StandardInput.WriteAsync(input);
        process.StandardInput.Close();
        var output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, output);
    }

    [Fact]
    public async Task When_the_trail_cannot_be_written_the_request_fails_and_keeps_nothing()
    {
        var patient = await PatientAsync();
        using (var db = node.Db())
        {
            using var cmd = db.CreateCommand();
            cmd.CommandText = node.IsPostgres
                ? "CREATE FUNCTION test_audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit disk full'; END $$; "
                    + "CREATE TRIGGER test_audit_down BEFORE INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION test_audit_down();"
                : "CREATE TRIGGER test_audit_down BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;";
            cmd.ExecuteNonQuery();
        }
        try
        {
            var create = await node.Http.PostAsJsonAsync($"{node.BaseUrl}/Observation",
                new { resourceType = "Observation", id = "x", status = "final", code = new { text = "unaudited" }, subject = new { reference = "Patient/" + patient } });
            Assert.Equal(HttpStatusCode.ServiceUnavailable, create.StatusCode);
            var read = await node.Http.GetAsync($"{node.BaseUrl}/Patient/{patient}");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, read.StatusCode);
            Assert.Contains("audit", await read.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("Audited", await read.Content.ReadAsStringAsync());
        }
        finally
        {
            using var db = node.Db();
            using var cmd = db.CreateCommand();
            cmd.CommandText = node.IsPostgres ? "DROP TRIGGER test_audit_down ON audit_entry; DROP FUNCTION test_audit_down();" : "DROP TRIGGER test_audit_down;";
            cmd.ExecuteNonQuery();
        }
        var search = await node.Http.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/Observation?subject=Patient/{patient}");
        Assert.Equal(0, search.GetProperty("total").GetInt32());
    }
}

[Collection(SharedNode.Name)]
public sealed class AuditLogTestsOnSqlite(TestNode node) : AuditLogTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class AuditLogTestsOnPostgres(PostgresTestNode node) : AuditLogTests(node);
