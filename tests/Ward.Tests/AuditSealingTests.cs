using System.Data.Common;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// Issue 29, point 9: the audit log is not readable at rest. Its entries are sealed under the audit key and bound to
/// their index, the columns that name patients and people hold blind hashes, and a reference that names no resource of
/// the node (an unresolved conditional reference by SSN, a foreign URL) is indexed blind; yet the security officer's and
/// the patient's searches, the access log, the proofs and <c>ward verify</c> work as before, and a node written before
/// migration 10 is converted. Someone with the database (sqlite3, psql) reads nothing, and what they alter, move or put
/// back in clear is never served and is named by the verifier. Each node is a fresh one: these tests tamper with it.
/// </summary>
public abstract class AuditSealingTests(TestNode node) : IAsyncLifetime
{
    private readonly string _tag = Guid.NewGuid().ToString("N")[..8];

    public Task InitializeAsync() => node.InitializeAsync();

    public Task DisposeAsync() => node.DisposeAsync();

    private HttpClient As(string role, string scopes, string subject, string? patient = null, string? fhirUser = null) =>
        node.NewHttp(node.Token(new AccessGrant(subject, "app", role, SmartScopes.Parse(scopes), patient, fhirUser)));

    private HttpClient Officer() => As("security-officer", "user/AuditEvent.rs", "officer-" + _tag);

    private async Task<string> CreateAsync(string json)
    {
        var type = JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString();
        var response = await node.Http.PostAsync($"{node.BaseUrl}/{type}", new StringContent(json, Encoding.UTF8, "application/fhir+json"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
    }

    /// <summary>A patient, their Observation, a clinician with a care relationship who reads and searches them, and the patient reading their record and access log.</summary>
    private async Task<(string Patient, string Clinician, string PatientSubject)> ActivityAsync()
    {
        var patient = await CreateAsync($$$"""{"resourceType":"Patient","name":[{"family":"Sealed{{{_tag}}}","given":["Audit"]}],"identifier":[{"system":"http://hl7.org/fhir/sid/us-ssn","value":"999-{{{_tag}}}"}]}""");
        var obs = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        await node.CareTeamAsync(patient, "Practitioner/p-" + _tag);
        var clinician = "clinician-" + _tag;
        using (var http = As("clinician", "user/*.rs", clinician, fhirUser: "Practitioner/p-" + _tag))
        {
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Observation?patient={patient}&code=http://loinc.org|8867-4")).StatusCode);
        }
        var own = "patient-" + _tag;
        using (var http = As("patient", "patient/*.rs", own, patient, "Patient/" + patient))
        {
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Patient/{patient}")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Patient/{patient}/$access-log")).StatusCode);
        }
        return (patient, clinician, own);
    }

    private async Task<List<JsonElement>> EventsAsync(HttpClient http, string query)
    {
        var response = await http.GetAsync($"{node.BaseUrl}/AuditEvent?{query}&_count=1000");
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        var bundle = await response.Content.ReadFromJsonAsync<JsonElement>();
        return bundle.TryGetProperty("entry", out var entries) ? entries.EnumerateArray().Select(e => e.GetProperty("resource")).ToList() : [];
    }

    /// <summary>Every stored audit row as sqlite3 or psql shows it: index, the three blinded columns, and the stored entry bytes read as text.</summary>
    private List<(long Index, string? Patient, string? Agent, string? AgentRef, string Data)> StoredEntries()
    {
        using var db = node.Db();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT idx, patient, agent, agent_ref, data FROM audit_entry ORDER BY idx";
        using var reader = cmd.ExecuteReader();
        var rows = new List<(long, string?, string?, string?, string)>();
        while (reader.Read())
        {
            rows.Add((reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetString(3), Encoding.Latin1.GetString(StoreSession.Bytes(reader.GetValue(4)))));
        }
        return rows;
    }

    private static void Execute(DbConnection db, string sql, params (string, object?)[] args)
    {
        using var cmd = db.CreateCommand();
        cmd.CommandText = sql;
        StoreSession.Bind(cmd, args);
        cmd.ExecuteNonQuery();
    }

    private string DropNoUpdate => node.IsPostgres ? "DROP TRIGGER audit_entry_append_only ON audit_entry" : "DROP TRIGGER audit_entry_no_update";

    private VerificationReport Verify()
    {
        var report = new VerificationReport();
        Verification.Verify(node.Store, node.Services.GetRequiredService<AuditLog>().Verifier, report, records: true);
        return report;
    }

    [Fact]
    public async Task Entries_and_their_index_columns_name_no_patient_person_or_resource_in_clear_and_every_reader_still_finds_them()
    {
        var (patient, clinician, own) = await ActivityAsync();

        var stored = StoredEntries();
        Assert.NotEmpty(stored);
        var clear = new[] { "resourceType", "AuditEvent", "Patient/", "Practitioner/", patient, clinician, own, "officer-" + _tag, "p-" + _tag, "8867-4" };
        foreach (var (at, p, agent, agentRef, data) in stored)
        {
            foreach (var text in clear)
            {
                Assert.False(data.Contains(text, StringComparison.Ordinal), $"audit entry {at} holds '{text}' in clear");
                foreach (var column in new[] { p, agent, agentRef })
                {
                    Assert.False(column?.Contains(text, StringComparison.Ordinal) == true, $"an index column of audit entry {at} holds '{text}' in clear");
                }
            }
        }
        var patientKey = node.Store.Read(s => s.AuditPatientKey(patient));
        Assert.Contains(stored, r => r.Patient == patientKey);

        // The security officer finds the entries by patient, by subject and by FHIR identity; they are served in clear.
        using var officer = Officer();
        var ofPatient = await EventsAsync(officer, $"patient=Patient/{patient}");
        Assert.True(ofPatient.Count >= 5, $"{ofPatient.Count} entries about the patient");
        Assert.All(ofPatient, e => Assert.Contains($"\"Patient/{patient}\"", e.GetRawText()));
        var byClinician = await EventsAsync(officer, $"agent={clinician}");
        Assert.Equal(2, byClinician.Count);
        Assert.Equal(2, (await EventsAsync(officer, $"agent=Practitioner/p-{_tag}")).Count);
        Assert.NotEmpty(await EventsAsync(officer, $"patient={patient}&agent={own}"));

        // The patient finds their own entries, and their access log shows the clinician's read but not their own.
        using var self = As("patient", "patient/*.rs", own, patient, "Patient/" + patient);
        var mine = await EventsAsync(self, "");
        Assert.True(mine.Count >= ofPatient.Count, $"the patient finds {mine.Count} of the {ofPatient.Count} entries about them");
        Assert.All(mine, e => Assert.Contains($"\"Patient/{patient}\"", e.GetRawText()));
        var log = await self.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/Patient/{patient}/$access-log");
        var whats = log.GetProperty("parameter").EnumerateArray().Where(p => p.GetProperty("name").GetString() == "entry")
            .Select(p => p.GetProperty("part").EnumerateArray().Single(x => x.GetProperty("name").GetString() == "what").GetProperty("valueString").GetString()!).ToList();
        Assert.Contains(whats, w => w.StartsWith("read Observation/", StringComparison.Ordinal));
        Assert.DoesNotContain(whats, w => w.StartsWith($"read Patient/{patient}", StringComparison.Ordinal));

        // An entry served through /audit is the leaf's plaintext: its hash is the leaf the inclusion proof starts from.
        await node.Services.GetRequiredService<AuditLog>().CheckpointAsync(CancellationToken.None);
        var index = stored.First(r => r.Patient == patientKey).Index;
        var size = node.Store.Read(s => s.AuditSize());
        var entry = await officer.GetByteArrayAsync($"{node.Origin}/audit/entries/{index}");
        Assert.StartsWith("{\"resourceType\":\"AuditEvent\"", Encoding.UTF8.GetString(entry));
        var proof = await self.GetFromJsonAsync<JsonElement>($"{node.Origin}/audit/proof/inclusion?index={index}&size={size}");
        Assert.Equal(Convert.ToBase64String(Merkle.LeafHash(entry)), proof.GetProperty("leafHash").GetString());
        Assert.True(Verify().Intact);
    }

    [Fact]
    public async Task An_entry_altered_moved_or_put_back_in_clear_is_never_served_and_ward_verify_names_it()
    {
        var (patient, _, own) = await ActivityAsync();
        var other = await CreateAsync("""{"resourceType":"Patient","gender":"male"}""");
        var stored = StoredEntries();
        var patientKey = node.Store.Read(s => s.AuditPatientKey(patient));
        var otherKey = node.Store.Read(s => s.AuditPatientKey(other));
        var ofPatient = stored.Where(r => r.Patient == patientKey).Select(r => r.Index).ToList();
        var (altered, swappedA, swappedB, cleared) = (ofPatient[0], ofPatient[1], ofPatient[2], ofPatient[3]);
        var ofOther = stored.First(r => r.Patient == otherKey).Index;
        using var officer = Officer();
        var plaintext = await officer.GetByteArrayAsync($"{node.Origin}/audit/entries/{cleared}");
        var before = await EventsAsync(officer, $"patient={patient}");

        using (var db = node.Db())
        {
            Execute(db, DropNoUpdate);
            var bytes = stored.Single(r => r.Index == altered).Data.Select(c => (byte)c).ToArray();
            bytes[bytes.Length / 2] ^= 0x01;
            Execute(db, "UPDATE audit_entry SET data = @d WHERE idx = @i", ("@d", bytes), ("@i", altered));
            var a = Encoding.Latin1.GetBytes(stored.Single(r => r.Index == swappedA).Data);
            var b = Encoding.Latin1.GetBytes(stored.Single(r => r.Index == swappedB).Data);
            Execute(db, "UPDATE audit_entry SET data = @d WHERE idx = @i", ("@d", b), ("@i", swappedA));
            Execute(db, "UPDATE audit_entry SET data = @d WHERE idx = @i", ("@d", a), ("@i", swappedB));
            Execute(db, "UPDATE audit_entry SET data = @d WHERE idx = @i", ("@d", plaintext), ("@i", cleared));
            // Another patient's entry pointed at this patient in the blinded column.
            Execute(db, "UPDATE audit_entry SET patient = @p WHERE idx = @i", ("@p", patientKey), ("@i", ofOther));
        }

        foreach (var index in new[] { altered, swappedA, swappedB, cleared })
        {
            var read = await officer.GetAsync($"{node.BaseUrl}/AuditEvent/{index}");
            Assert.Equal(HttpStatusCode.InternalServerError, read.StatusCode);
            Assert.Contains("failed its integrity check", await read.Content.ReadAsStringAsync());
            var raw = await officer.GetAsync($"{node.Origin}/audit/entries/{index}");
            Assert.Equal(HttpStatusCode.InternalServerError, raw.StatusCode);
        }
        var search = await officer.GetAsync($"{node.BaseUrl}/AuditEvent?patient={patient}&_count=1000");
        Assert.Equal(HttpStatusCode.InternalServerError, search.StatusCode);

        // The repointed column does not hand the other patient's entry to this patient.
        using var self = As("patient", "patient/*.rs", own, patient, "Patient/" + patient);
        Assert.Equal(HttpStatusCode.NotFound, (await self.GetAsync($"{node.BaseUrl}/AuditEvent/{ofOther}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await self.GetAsync($"{node.Origin}/audit/entries/{ofOther}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await officer.GetAsync($"{node.BaseUrl}/AuditEvent/{ofOther}")).StatusCode);

        var report = Verify();
        Assert.False(report.Intact);
        foreach (var index in new[] { altered, swappedA, swappedB, cleared })
        {
            Assert.Contains($"audit entry {index} does not open under the node's audit key", string.Join("\n", report.Problems));
        }
        Assert.True(before.Count > 0);
    }

    [Fact]
    public async Task An_unresolved_conditional_reference_or_a_foreign_URL_is_indexed_blind_and_still_found()
    {
        var ssn = "999-41-" + _tag[..4];
        var conditional = $"Patient?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}";
        var foreign = $"https://elsewhere.example.org/fhir/Patient/ext-{_tag}";
        var canonical = $"http://example.org/Questionnaire/q-{_tag}";
        var byConditional = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"{{{conditional}}}"}}""");
        var byForeign = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"{{{foreign}}}"}}""");
        var byCanonical = await CreateAsync($$$"""{"resourceType":"QuestionnaireResponse","status":"completed","questionnaire":"{{{canonical}}}|2.0"}""");

        async Task<List<string>> FoundAsync(string query)
        {
            var bundle = await node.Http.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/{query}");
            return bundle.TryGetProperty("entry", out var entries) ? entries.EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("id").GetString()!).ToList() : [];
        }
        Assert.Equal([byConditional], await FoundAsync($"Observation?subject={Uri.EscapeDataString(conditional)}"));
        Assert.Empty(await FoundAsync($"Observation?subject={Uri.EscapeDataString(conditional[..^1])}"));
        Assert.Equal([byForeign], await FoundAsync($"Observation?subject={Uri.EscapeDataString(foreign)}"));
        Assert.Equal([byCanonical], await FoundAsync($"QuestionnaireResponse?questionnaire={Uri.EscapeDataString(canonical)}"));
        Assert.Equal([byCanonical], await FoundAsync($"QuestionnaireResponse?questionnaire={Uri.EscapeDataString(canonical + "|2.0")}"));

        using var db = node.Db();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT url FROM ix_reference WHERE url IS NOT NULL";
        using var reader = cmd.ExecuteReader();
        var urls = 0;
        while (reader.Read())
        {
            urls++;
            var url = reader.GetString(0);
            foreach (var text in new[] { ssn, "us-ssn", "identifier", "Patient", "elsewhere", "ext-" + _tag, "Questionnaire", "q-" + _tag, "http" })
            {
                Assert.False(url.Contains(text, StringComparison.Ordinal), $"ix_reference holds '{url}'");
            }
        }
        Assert.True(urls >= 3, $"{urls} URL rows");
        reader.Close();
        // The searches themselves were logged, sealed.
        Assert.DoesNotContain(StoredEntries(), r => r.Data.Contains(ssn, StringComparison.Ordinal) || r.Data.Contains("elsewhere", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Migration_10_seals_the_entries_and_blinds_the_columns_of_a_node_written_before_it()
    {
        var (patient, clinician, own) = await ActivityAsync();
        var conditional = $"Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-{_tag}";
        var obs = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"{{{conditional}}}"}}""");
        var entries = node.Store.Read(s => s.AuditEntries(0, int.MaxValue).ToList());
        Assert.All(entries, e => Assert.NotNull(e.Data));
        var blindUrl = node.Store.Read(_ => Ward.Core.Search.Indexer.BlindUrl(node.Store.Keys.Blind, "subject", conditional));

        // The node as a Ward before migration 10 left it: entries and columns in clear, no audit key, schema 9.
        using (var db = node.Db())
        {
            Execute(db, DropNoUpdate);
            foreach (var (index, data) in entries)
            {
                using var json = JsonDocument.Parse(data!);
                var user = json.RootElement.GetProperty("agent")[0].GetProperty("who");
                Execute(db, "UPDATE audit_entry SET data = @d, patient = @p, agent = @a, agent_ref = @f WHERE idx = @i", ("@d", data), ("@p", AuditRecord.PatientOf(data!)),
                    ("@a", user.TryGetProperty("identifier", out var id) ? id.GetProperty("value").GetString() : null),
                    ("@f", user.TryGetProperty("reference", out var r) ? r.GetString() : null), ("@i", index));
            }
            Execute(db, "UPDATE ix_reference SET url = @u WHERE url = @b", ("@u", conditional), ("@b", blindUrl));
            Execute(db, "DELETE FROM data_key WHERE kind = 'audit'");
            Execute(db, "DELETE FROM schema_migration WHERE version = 10");
            Execute(db, Migrations.AuditNoUpdate(node.IsPostgres ? StoreEngine.Postgres : StoreEngine.Sqlite));
            Assert.Contains(StoredEntries(), e => e.Data.StartsWith("{\"resourceType\":\"AuditEvent\"", StringComparison.Ordinal) && e.Patient == patient);
        }

        // A node process opening the database migrates it (and serves it with the new audit key).
        await using var twin = await node.TwinAsync();
        var stored = StoredEntries();
        Assert.Equal(entries.Count, stored.Count);
        Assert.All(stored, e => Assert.DoesNotContain("resourceType", e.Data, StringComparison.Ordinal));
        Assert.DoesNotContain(stored, e => e.Patient == patient || e.Agent == clinician || e.Agent == own || e.AgentRef == "Patient/" + patient);
        using (var db = node.Db())
        {
            Assert.Equal(10L, Convert.ToInt64(TestNode.Scalar(db, "SELECT max(version) FROM schema_migration"), System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(0L, Convert.ToInt64(TestNode.Scalar(db, "SELECT count(*) FROM ix_reference WHERE url = @u", ("@u", conditional)), System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(1L, Convert.ToInt64(TestNode.Scalar(db, "SELECT count(*) FROM data_key WHERE kind = 'audit' AND wrapped IS NOT NULL"), System.Globalization.CultureInfo.InvariantCulture));
            // The ban on updates is back.
            Assert.ThrowsAny<DbException>(() => Execute(db, "UPDATE audit_entry SET outcome = '0' WHERE idx = 0"));
        }

        // The converted node serves the same entries, finds them by patient and agent, and finds the conditional reference.
        using var officer = node.NewHttp(node.Token(new AccessGrant("officer-" + _tag, "app", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
        var response = await officer.GetAsync($"{twin.BaseUrl}/AuditEvent?patient={patient}&_count=1000");
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        var found = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("entry").EnumerateArray().ToList();
        Assert.Equal(entries.Count(e => AuditRecord.PatientOf(e.Data!) == patient), found.Count);
        var agent = await officer.GetFromJsonAsync<JsonElement>($"{twin.BaseUrl}/AuditEvent?agent={clinician}");
        Assert.Equal(2, agent.GetProperty("total").GetInt32());
        var first = entries.First(e => AuditRecord.PatientOf(e.Data!) == patient);
        var served = await officer.GetByteArrayAsync($"{twin.BaseUrl.Replace("/fhir", "", StringComparison.Ordinal)}/audit/entries/{first.Index}");
        Assert.Equal(first.Data, served);
        var search = await node.NewHttp(node.Token(TestNode.AdminGrant)).GetFromJsonAsync<JsonElement>($"{twin.BaseUrl}/Observation?subject={Uri.EscapeDataString(conditional)}");
        Assert.Equal(obs, search.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString());

        var (code, output) = await WardProcess.OutputAsync(["verify", "--data", node.DataDir]);
        Assert.True(code == 0, output);
    }
}

public sealed class AuditSealingTestsOnSqlite() : AuditSealingTests(new TestNode());

public sealed class AuditSealingTestsOnPostgres() : AuditSealingTests(new PostgresTestNode());
