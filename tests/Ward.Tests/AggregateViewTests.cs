using System.Net;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;

namespace Ward.Tests;

/// <summary>
/// The aggregate views cannot single anyone out: public health (counts only) and management (pseudonymised records)
/// may not filter or chain on who a person is (names, identifiers, telecom, address, birth date, a patient or one of
/// their records), and counts are asked on fixed dimensions, so that differencing queries (<c>:not</c>, <c>:missing</c>,
/// overlapping or day-sized date ranges, <c>_id</c> and <c>_lastUpdated</c> slices, measured values) cannot isolate one
/// record. What remains answered is tested too, so that a refusal of everything would not pass.
/// </summary>
public sealed class AggregateViewTests(TestNode node) : IClassFixture<TestNode>
{
    private HttpClient As(string role) =>
        node.NewHttp(node.Token(new AccessGrant(role + "-" + Guid.NewGuid().ToString("N")[..6], "aggregate-tests", role, SmartScopes.Parse("user/*.rs"), null, null)));

    private async Task<string> CreateAsync(string json)
    {
        var type = JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!;
        var response = await node.AsOperator("POST", type, json);
        Assert.True(response.Status == 201, Encoding.UTF8.GetString(response.Body));
        return JsonDocument.Parse(response.Body).RootElement.GetProperty("id").GetString()!;
    }

    private async Task<(string Patient, string Code, string Encounter)> DataAsync()
    {
        var code = "agg" + Guid.NewGuid().ToString("N")[..8];
        var patient = await CreateAsync("""{"resourceType":"Patient","name":[{"family":"Lonely","given":["Ada"]}],"gender":"female","birthDate":"1970-06-15","identifier":[{"system":"urn:ssn","value":"1700675001234"}],"address":[{"postalCode":"75001"}],"telecom":[{"system":"phone","value":"+33 6 00 00 00 01"}]}""");
        var encounter = await CreateAsync($$$"""{"resourceType":"Encounter","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"period":{"start":"2023-03-14T10:00:00Z","end":"2023-03-14T11:00:00Z"},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        for (var i = 0; i < 12; i++)
        {
            var other = await CreateAsync("""{"resourceType":"Patient","gender":"male","name":[{"family":"Crowd"}]}""");
            await CreateAsync($$$"""{"resourceType":"Condition","code":{"coding":[{"system":"urn:agg","code":"{{{code}}}"}]},"onsetDateTime":"2024-0{{{1 + i % 9}}}-01","subject":{"reference":"Patient/{{{other}}}"}}""");
            // Restricted (R) data is never counted for public health.
            await CreateAsync($$$"""{"resourceType":"Condition","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"code":{"coding":[{"system":"urn:agg","code":"{{{code}}}"}]},"subject":{"reference":"Patient/{{{other}}}"}}""");
        }
        await CreateAsync($$$"""{"resourceType":"Condition","code":{"coding":[{"system":"urn:agg","code":"{{{code}}}"}]},"onsetDateTime":"2023-03-14","encounter":{"reference":"Encounter/{{{encounter}}}"},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"urn:agg","code":"{{{code}}}"}]},"valueQuantity":{"value":5.31,"unit":"mmol/L"},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        return (patient, code, encounter);
    }

    private static async Task Refused(HttpResponseMessage response, string rule, string query)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Forbidden && body.Contains($"(rule {rule})", StringComparison.Ordinal), $"{query}: {(int)response.StatusCode} {body}");
    }

    private static async Task<int> Total(HttpResponseMessage response, string query)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{query}: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("total").GetInt32();
    }

    [Fact]
    public async Task Public_health_cannot_single_out_a_person_by_who_they_are_or_by_differencing_counts()
    {
        var (patient, code, encounter) = await DataAsync();
        using var ph = As("public-health");
        var attacks = new[]
        {
            $"Condition?code=urn:agg|{code}&patient={patient}",
            $"Condition?code=urn:agg|{code}&subject=Patient/{patient}",
            $"Patient/{patient}/Condition?code=urn:agg|{code}",
            $"Condition?code=urn:agg|{code}&subject.birthdate=1970-06-15",
            $"Condition?code=urn:agg|{code}&subject:Patient.name=Lonely",
            $"Condition?code=urn:agg|{code}&subject:Patient.identifier=urn:ssn|1700675001234",
            "Patient?_has:Condition:subject:code=urn:agg|x&gender=female",
            "Patient?birthdate=1970-06-15",
            "Patient?birthdate=1970",
            "Patient?name=Lonely",
            "Patient?family=Lon",
            "Patient?identifier=urn:ssn|1700675001234",
            "Patient?address-postalcode=75001",
            "Patient?telecom=+33 6 00 00 00 01",
            $"Patient?_id={patient}",
            $"Condition?code:not=urn:agg|{code}",
            $"Condition?code=urn:agg|{code}&_id:not={patient}",
            $"Condition?code:missing=false&_id={patient}",
            $"Condition?code=urn:agg|{code}&_lastUpdated=ge{DateTime.UtcNow:yyyy-MM-dd}",
            $"Condition?code=urn:agg|{code}&onset-date=2023-03-14",
            $"Condition?code=urn:agg|{code}&onset-date=ge2023-03-14&onset-date=le2023-03-14",
            $"Condition?code=urn:agg|{code}&onset-date=ne2024",
            $"Condition?code=urn:agg|{code}&onset-date=2023-03",
            $"Condition?code=urn:agg|{code}&encounter=Encounter/{encounter}",
            $"Observation?code=urn:agg|{code}&value-quantity=gt5.3",
            $"Observation?code-value-quantity=urn:agg|{code}$gt5.3",
            $"Condition?code:below=urn:agg|{code}",
            $"Condition?code=urn:agg|{code}&_include=Condition:subject",
        };
        foreach (var query in attacks)
        {
            var separator = query.Contains('?') ? "&" : "?";
            await Refused(await ph.GetAsync($"{node.BaseUrl}/{query}{separator}_summary=count"), "view.counts-dimensions", query);
        }
        // Searched with POST, the same rules.
        using var form = new FormUrlEncodedContent([new("code", $"urn:agg|{code}"), new("patient", patient), new("_summary", "count")]);
        await Refused(await ph.PostAsync($"{node.BaseUrl}/Condition/_search", form), "view.counts-dimensions", "POST _search patient=");

        // What stays answered: codes, statuses, genders and whole years; only data of normal confidentiality is counted.
        Assert.Equal(13, await Total(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:agg|{code}&_summary=count"), "by code"));
        Assert.Equal(12, await Total(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:agg|{code}&onset-date=2024&_summary=count"), "by year"));
        Assert.Equal(12, await Total(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:agg|{code}&onset-date=ge2024&onset-date=lt2025&_summary=count"), "by years"));
        var small = await ph.GetAsync($"{node.BaseUrl}/Encounter?status=finished&class=AMB&date=2023&_summary=count");
        Assert.Equal(HttpStatusCode.OK, small.StatusCode);
        Assert.Contains("fewer than 10 resources match", await small.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Management_cannot_find_a_pseudonymised_patient_by_who_they_are_or_by_one_of_their_records()
    {
        var (patient, _, encounter) = await DataAsync();
        using var manager = As("management");
        var attacks = new[]
        {
            $"Encounter?subject=Patient/{patient}",
            $"Encounter?patient={patient}",
            $"Patient/{patient}/Encounter",
            "Encounter?subject.birthdate=1970-06-15",
            "Encounter?subject:Patient.name=Lonely",
            "Encounter?subject:Patient.identifier=urn:ssn|1700675001234",
            "Encounter?_has:Condition:encounter:code=urn:agg|x",
            $"Claim?encounter=Encounter/{encounter}",
            $"Account?subject=Patient/{patient}",
            "Encounter?_include=Encounter:subject",
            $"Encounter?participant=RelatedPerson/{patient}",
        };
        foreach (var query in attacks)
        {
            await Refused(await manager.GetAsync($"{node.BaseUrl}/{query}"), "view.pseudonymised", query);
        }
        // Operations still search by status, class and date, and see the encounter masked.
        var listed = await manager.GetAsync($"{node.BaseUrl}/Encounter?status=finished&class=AMB&date=2023-03-14&_count=100");
        var body = await listed.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, listed.StatusCode);
        Assert.Contains(encounter, body);
        Assert.DoesNotContain(patient, body);
    }
}
