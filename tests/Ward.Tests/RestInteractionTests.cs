using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Hl7.Fhir.Rest;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The REST interactions, exercised with Firely's FhirClient over real HTTP.</summary>
public abstract class RestInteractionTests(TestNode node)
{
    private static Patient NewPatient(string family, string? id = null) => new()
    {
        Id = id,
        Name = [new HumanName { Family = family, Given = ["Ada"] }],
        Gender = AdministrativeGender.Female,
        BirthDate = "1970-05-17",
        Identifier = [new Identifier("urn:oid:1.2.250.1.213.1.4.8", Guid.NewGuid().ToString("N"))],
    };

    [Fact]
    public async Task Create_then_read_returns_the_resource_with_version_and_headers()
    {
        var client = node.Client();
        var created = await client.CreateAsync(NewPatient("Dupont"));
        Assert.NotNull(created!.Id);
        Assert.Equal("1", created.Meta.VersionId);
        Assert.NotNull(created.Meta.LastUpdated);

        using var response = await node.Http.GetAsync($"{node.BaseUrl}/Patient/{created.Id}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("W/\"1\"", response.Headers.ETag!.ToString());
        Assert.NotNull(response.Content.Headers.LastModified);
        Assert.Equal("application/fhir+json", response.Content.Headers.ContentType!.MediaType);
        var read = await client.ReadAsync<Patient>($"Patient/{created.Id}");
        Assert.Equal("Dupont", read!.Name[0].Family);
    }

    [Fact]
    public async Task Create_answers_201_with_a_location_and_honours_prefer_minimal()
    {
        using var content = Json(NewPatient("Minimal"));
        using var request = new HttpRequestMessage(HttpMethod.Post, $"{node.BaseUrl}/Patient") { Content = content };
        request.Headers.Add("Prefer", "return=minimal");
        using var response = await node.Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Matches("/fhir/Patient/[0-9a-f-]+/_history/1$", response.Headers.Location!.ToString());
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task Update_makes_a_new_version_and_vread_returns_each()
    {
        var client = node.Client();
        var p = await client.CreateAsync(NewPatient("Martin"));
        p!.Name[0].Family = "Martin-Durand";
        var updated = await client.UpdateAsync(p);
        Assert.Equal("2", updated!.Meta.VersionId);
        var v1 = await client.ReadAsync<Patient>($"Patient/{p.Id}/_history/1");
        Assert.Equal("Martin", v1!.Name[0].Family);
        var v2 = await client.ReadAsync<Patient>($"Patient/{p.Id}/_history/2");
        Assert.Equal("Martin-Durand", v2!.Name[0].Family);
        var history = await client.HistoryAsync($"Patient/{p.Id}");
        Assert.Equal(2, history!.Total);
        Assert.Equal(["2", "1"], history.Entry.Select(e => e.Resource.Meta.VersionId));
    }

    [Fact]
    public async Task Type_and_system_history_honour_since_and_count()
    {
        var client = node.Client();
        var first = await client.CreateAsync(NewPatient("HistoryA"));
        var since = first!.Meta.LastUpdated!.Value.AddMilliseconds(1);
        var second = await client.CreateAsync(NewPatient("HistoryB"));
        var sinceText = Uri.EscapeDataString(since.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        var typeHistory = await client.GetAsync($"Patient/_history?_since={sinceText}") as Bundle;
        Assert.Contains(typeHistory!.Entry, e => e.Resource.Id == second!.Id);
        Assert.DoesNotContain(typeHistory.Entry, e => e.Resource.Id == first.Id);
        var systemHistory = await client.GetAsync("_history?_count=1") as Bundle;
        Assert.Single(systemHistory!.Entry);
        Assert.Equal(Bundle.BundleType.History, systemHistory.Type);
        Assert.NotNull(systemHistory.NextLink);
    }

    [Fact]
    public async Task Update_of_an_unknown_id_creates_it()
    {
        var client = node.Client();
        var id = "create-on-update-" + Guid.NewGuid().ToString("N")[..8];
        using var content = Json(NewPatient("Upsert", id));
        using var response = await node.Http.PutAsync($"{node.BaseUrl}/Patient/{id}", content);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("1", (await client.ReadAsync<Patient>($"Patient/{id}"))!.Meta.VersionId);
    }

    [Fact]
    public async Task If_match_with_a_stale_version_is_refused_with_412_and_changes_nothing()
    {
        var client = node.Client();
        var p = await client.CreateAsync(NewPatient("Stale"));
        p!.Name[0].Family = "First";
        await client.UpdateAsync(p, versionAware: true);
        p.Name[0].Family = "Second";
        p.Meta.VersionId = "1";
        var error = await Assert.ThrowsAsync<FhirOperationException>(() => client.UpdateAsync(p, versionAware: true));
        Assert.Equal(HttpStatusCode.PreconditionFailed, error.Status);
        Assert.Contains("version 2", error.Outcome!.Issue[0].Diagnostics);
        Assert.Equal("First", (await client.ReadAsync<Patient>($"Patient/{p.Id}"))!.Name[0].Family);
    }

    [Fact]
    public async Task Delete_makes_reads_answer_410_and_keeps_history()
    {
        var client = node.Client();
        var p = await client.CreateAsync(NewPatient("Gone"));
        await client.DeleteAsync($"Patient/{p!.Id}");
        using var read = await node.Http.GetAsync($"{node.BaseUrl}/Patient/{p.Id}");
        Assert.Equal(HttpStatusCode.Gone, read.StatusCode);
        Assert.Contains("OperationOutcome", await read.Content.ReadAsStringAsync());
        var history = await client.HistoryAsync($"Patient/{p.Id}");
        Assert.Equal(2, history!.Total);
        Assert.Equal("DELETE", history.Entry[0].Request.Method.ToString()!.ToUpperInvariant());
        var vread = await client.ReadAsync<Patient>($"Patient/{p.Id}/_history/1");
        Assert.Equal("Gone", vread!.Name[0].Family);
        var search = await client.SearchAsync<Patient>([$"_id={p.Id}"]);
        Assert.Empty(search!.Entry);
    }

    [Fact]
    public async Task Conditional_create_returns_the_existing_resource_when_one_matches()
    {
        var client = node.Client();
        var p = NewPatient("Conditional");
        var identifier = p.Identifier[0];
        var condition = new SearchParams().Add("identifier", $"{identifier.System}|{identifier.Value}");
        var first = await client.ConditionalCreateAsync(p, condition);
        var second = await client.ConditionalCreateAsync(NewPatient("Other"), condition);
        Assert.Equal(first!.Id, second!.Id);
        var found = await client.SearchAsync<Patient>([$"identifier={identifier.System}|{identifier.Value}"]);
        Assert.Single(found!.Entry);
    }

    [Fact]
    public async Task Conditional_update_creates_then_updates_by_criteria()
    {
        var client = node.Client();
        var p = NewPatient("CondUpdate");
        var identifier = p.Identifier[0];
        var condition = new SearchParams().Add("identifier", $"{identifier.System}|{identifier.Value}");
        var created = await client.ConditionalUpdateAsync(p, condition);
        Assert.Equal("1", created!.Meta.VersionId);
        p.BirthDate = "1971-01-01";
        var updated = await client.ConditionalUpdateAsync(p, condition);
        Assert.Equal(created.Id, updated!.Id);
        Assert.Equal("2", updated.Meta.VersionId);
    }

    [Fact]
    public async Task Json_patch_is_applied_atomically_with_version_checks()
    {
        var client = node.Client();
        var p = await client.CreateAsync(NewPatient("Patched"));
        var patch = """[{"op":"replace","path":"/name/0/family","value":"Repatched"},{"op":"add","path":"/active","value":true}]""";
        using var ok = await Patch(p!.Id, patch, "W/\"1\"");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var read = await client.ReadAsync<Patient>($"Patient/{p.Id}");
        Assert.Equal("Repatched", read!.Name[0].Family);
        Assert.True(read.Active);
        Assert.Equal("2", read.Meta.VersionId);

        using var stale = await Patch(p.Id, patch, "W/\"1\"");
        Assert.Equal(HttpStatusCode.PreconditionFailed, stale.StatusCode);

        var failing = """[{"op":"replace","path":"/name/0/family","value":"Half"},{"op":"remove","path":"/nothing/here"}]""";
        using var bad = await Patch(p.Id, failing, null);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, bad.StatusCode);
        Assert.Equal("Repatched", (await client.ReadAsync<Patient>($"Patient/{p.Id}"))!.Name[0].Family);
    }

    private async Task<HttpResponseMessage> Patch(string id, string patch, string? ifMatch)
    {
        var request = new HttpRequestMessage(HttpMethod.Patch, $"{node.BaseUrl}/Patient/{id}")
        {
            Content = new StringContent(patch, Encoding.UTF8, "application/json-patch+json"),
        };
        if (ifMatch is not null)
        {
            request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        }
        return await node.Http.SendAsync(request);
    }

    [Fact]
    public async Task Transaction_resolves_placeholders_and_is_all_or_nothing()
    {
        var client = node.Client();
        var family = "Tx" + Guid.NewGuid().ToString("N")[..8];
        var tx = new Bundle { Type = Bundle.BundleType.Transaction };
        tx.Entry.Add(new Bundle.EntryComponent
        {
            FullUrl = "urn:uuid:11111111-1111-1111-1111-111111111111",
            Resource = NewPatient(family),
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" },
        });
        tx.Entry.Add(new Bundle.EntryComponent
        {
            FullUrl = "urn:uuid:22222222-2222-2222-2222-222222222222",
            Resource = new Observation
            {
                Status = ObservationStatus.Final,
                Code = new CodeableConcept("http://loinc.org", "8302-2"),
                Subject = new ResourceReference("urn:uuid:11111111-1111-1111-1111-111111111111"),
                Value = new Quantity(172.5m, "cm"),
            },
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Observation" },
        });
        var result = await client.TransactionAsync(tx);
        Assert.Equal(Bundle.BundleType.TransactionResponse, result!.Type);
        Assert.All(result.Entry, e => Assert.StartsWith("201", e.Response.Status));
        var patientId = result.Entry[0].Response.Location.Split('/')[1];
        var obs = await client.SearchAsync<Observation>([$"subject=Patient/{patientId}"]);
        Assert.Single(obs!.Entry);

        // A failing entry rolls back the whole transaction.
        var failing = new Bundle { Type = Bundle.BundleType.Transaction };
        failing.Entry.Add(new Bundle.EntryComponent
        {
            Resource = NewPatient(family + "b"),
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" },
        });
        failing.Entry.Add(new Bundle.EntryComponent
        {
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.DELETE, Url = "Patient/does-not-exist-" + family },
        });
        var error = await Assert.ThrowsAsync<FhirOperationException>(() => client.TransactionAsync(failing));
        Assert.Equal(HttpStatusCode.NotFound, error.Status);
        Assert.Contains("nothing was changed", error.Outcome!.Issue[0].Diagnostics);
        var none = await client.SearchAsync<Patient>([$"family={family}b"]);
        Assert.Empty(none!.Entry);
    }

    [Fact]
    public async Task Batch_reports_each_entry_on_its_own()
    {
        var client = node.Client();
        var batch = new Bundle { Type = Bundle.BundleType.Batch };
        batch.Entry.Add(new Bundle.EntryComponent { Resource = NewPatient("BatchOk"), Request = new() { Method = Bundle.HTTPVerb.POST, Url = "Patient" } });
        batch.Entry.Add(new Bundle.EntryComponent { Request = new() { Method = Bundle.HTTPVerb.GET, Url = "Patient/no-such-patient" } });
        var result = await client.TransactionAsync(batch);
        Assert.StartsWith("201", result!.Entry[0].Response.Status);
        Assert.StartsWith("404", result.Entry[1].Response.Status);
        Assert.IsType<OperationOutcome>(result.Entry[1].Response.Outcome);
    }

    [Fact]
    public async Task Xml_is_served_on_request()
    {
        var p = await node.Client().CreateAsync(NewPatient("Xml"));
        using var response = await node.Http.GetAsync($"{node.BaseUrl}/Patient/{p!.Id}?_format=xml");
        Assert.Equal("application/fhir+xml", response.Content.Headers.ContentType!.MediaType);
        Assert.Matches("<family value=\"Xml\" ?/>", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Health_names_the_engine_and_the_schema_version()
    {
        using var health = JsonDocument.Parse(await node.Http.GetStringAsync(node.BaseUrl.Replace("/fhir", "/health", StringComparison.Ordinal)));
        Assert.Equal("ok", health.RootElement.GetProperty("status").GetString());
        Assert.Equal(node.IsPostgres ? "postgres" : "sqlite", health.RootElement.GetProperty("engine").GetString());
        Assert.Equal((node.IsPostgres ? Migrations.Postgres : Migrations.Sqlite).Max(m => m.Version), health.RootElement.GetProperty("schemaVersion").GetInt32());
    }

    [Fact]
    public async Task Metadata_lists_every_resource_type_with_its_search_parameters()
    {
        var cs = await node.Client().CapabilityStatementAsync();
        var rest = cs!.Rest[0];
        Assert.Equal(146, rest.Resource.Count);
        var observation = rest.Resource.Single(r => r.Type == "Observation");
        Assert.Contains(observation.SearchParam, p => p.Name == "code-value-quantity" && p.Type == SearchParamType.Composite);
        Assert.Contains(observation.Interaction, i => i.Code == CapabilityStatement.TypeRestfulInteraction.Patch);
        Assert.Contains(rest.Interaction, i => i.Code == CapabilityStatement.SystemRestfulInteraction.Transaction);
    }

    internal static StringContent Json(Resource resource) =>
        new(Hl7.Fhir.Serialization.JsonSerializationExtensions.SerializeToString(new Hl7.Fhir.Serialization.FhirJsonSerializer(), resource), Encoding.UTF8, "application/fhir+json");
}

[Collection(SharedNode.Name)]
public sealed class RestInteractionTestsOnSqlite(TestNode node) : RestInteractionTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class RestInteractionTestsOnPostgres(PostgresTestNode node) : RestInteractionTests(node);
