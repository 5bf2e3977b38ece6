using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;

namespace Ward.Tests;

/// <summary>
/// Nobody grants themselves access: the facts the policy trusts to permit (CareTeam, Encounter, PractitionerRole,
/// Group, Consent, security labels, the patient a resource belongs to) are created, changed or deleted only by the roles
/// the policy file names for them (the ADT service client by default), never by a clinician or nurse, directly or
/// through a resource the fact references; ended or not yet active teams and encounters explain nothing; and no caller
/// confined to a compartment writes into another one.
/// </summary>
public abstract class SelfGrantTests(TestNode node)
{
    private const string Json = "application/fhir+json";

    private static string Unique(string prefix) => prefix + Guid.NewGuid().ToString("N")[..10];

    private HttpClient As(string role, string scopes = "user/*.cruds", string? fhirUser = null, string? patient = null) =>
        node.NewHttp(node.Token(new AccessGrant(fhirUser ?? patient ?? Unique(role), "self-grant-tests", role, SmartScopes.Parse(scopes), patient, fhirUser)));

    private HttpClient Service() => As("service", "system/*.cruds");

    private async Task<string> CreateAsync(string json)
    {
        var type = JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!;
        var response = await node.AsOperator("POST", type, json);
        Assert.True(response.Status == 201, Encoding.UTF8.GetString(response.Body));
        return JsonDocument.Parse(response.Body).RootElement.GetProperty("id").GetString()!;
    }

    private async Task<string> ReadAsOperator(string reference) => Encoding.UTF8.GetString((await node.AsOperator("GET", reference)).Body);

    private Task<string> PatientAsync() => CreateAsync("""{"resourceType":"Patient","name":[{"family":"Grant"}]}""");

    private Task<string> ObservationAsync(string patient, string label = "") => CreateAsync(
        $$$"""{"resourceType":"Observation","status":"final",{{{label}}}"code":{"text":"pulse"},"subject":{"reference":"Patient/{{{patient}}}"}}""");

    private static string Team(string patient, string member, string status = "active", string period = "") =>
        $$$"""{"resourceType":"CareTeam","status":"{{{status}}}",{{{period}}}"subject":{"reference":"Patient/{{{patient}}}"},"participant":[{"member":{"reference":"{{{member}}}"}}]}""";

    private static string Encounter(string patient, string participant, string status, string period) =>
        $$$"""{"resourceType":"Encounter","status":"{{{status}}}",{{{period}}}"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/{{{patient}}}"},"participant":[{"individual":{"reference":"{{{participant}}}"}}]}""";

    private static string Period(TimeSpan startAgo, TimeSpan? endAgo) =>
        $"\"period\":{{\"start\":\"{DateTimeOffset.UtcNow - startAgo:yyyy-MM-ddTHH:mm:ssZ}\"" + (endAgo is { } e ? $",\"end\":\"{DateTimeOffset.UtcNow - e:yyyy-MM-ddTHH:mm:ssZ}\"" : "") + "},";

    private static StringContent Body(string json) => new(json, Encoding.UTF8, Json);

    private static async Task Refused(HttpResponseMessage response, params string[] rules)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{(int)response.StatusCode} {body}");
        Assert.True(rules.Any(r => body.Contains($"(rule {r})", StringComparison.Ordinal)), body);
    }

    private async Task<HttpStatusCode> Reads(HttpClient http, string reference) => (await http.GetAsync($"{node.BaseUrl}/{reference}")).StatusCode;

    [Fact]
    public async Task A_clinician_cannot_put_themselves_or_a_colleague_on_a_care_team_or_an_encounter_by_any_route()
    {
        var patient = await PatientAsync();
        var obs = await ObservationAsync(patient);
        var me = "Practitioner/" + Unique("self");
        var colleague = "Practitioner/" + Unique("colleague");
        using var clinician = As("clinician", fhirUser: me);
        // Related for now through an encounter the ADT feed wrote (in progress): enough to read, not to make the relationship last.
        using var adt = Service();
        var visit = await adt.PostAsync($"{node.BaseUrl}/Encounter", Body(Encounter(patient, me, "in-progress", Period(TimeSpan.FromHours(2), null))));
        Assert.Equal(HttpStatusCode.Created, visit.StatusCode);
        var visitId = (await visit.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        Assert.Equal(HttpStatusCode.OK, await Reads(clinician, $"Observation/{obs}"));

        // A permanent team naming themselves: POST, PUT with a chosen id, in a transaction, in a batch, conditionally.
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/CareTeam", Body(Team(patient, me))), "facts.writer");
        var teamId = Unique("team");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/CareTeam/{teamId}", Body(Team(patient, me).Replace("{\"resourceType\":\"CareTeam\",", $"{{\"resourceType\":\"CareTeam\",\"id\":\"{teamId}\",", StringComparison.Ordinal))), "facts.writer");
        var transaction = $$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:4b7f3c2e-0000-4000-8000-000000000001","resource":{{{Team(patient, me)}}},"request":{"method":"POST","url":"CareTeam"}}]}""";
        await Refused(await clinician.PostAsync(node.BaseUrl, Body(transaction)), "facts.writer");
        var batch = await clinician.PostAsync(node.BaseUrl, Body(transaction.Replace("\"transaction\"", "\"batch\"", StringComparison.Ordinal)));
        Assert.Contains("\"403", await batch.Content.ReadAsStringAsync());
        using (var conditional = new HttpRequestMessage(HttpMethod.Put, $"{node.BaseUrl}/CareTeam?identifier=urn:team|{Unique("t")}") { Content = Body(Team(patient, colleague)) })
        {
            await Refused(await clinician.SendAsync(conditional), "facts.writer");
        }
        // Nor a colleague, nor a new encounter that would restart the window, nor the ADT's encounter kept open or reassigned.
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/CareTeam", Body(Team(patient, colleague))), "facts.writer");
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/Encounter", Body(Encounter(patient, me, "in-progress", Period(TimeSpan.Zero, null)))), "facts.writer");
        var current = await ReadAsOperator($"Encounter/{visitId}");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Encounter/{visitId}", Body(current.Replace(me, colleague, StringComparison.Ordinal))), "facts.writer");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Encounter/{visitId}", Body(current.Replace("\"in-progress\"", "\"onleave\"", StringComparison.Ordinal))), "facts.writer");
        var patch = """[{"op":"replace","path":"/status","value":"arrived"}]""";
        await Refused(await clinician.PatchAsync($"{node.BaseUrl}/Encounter/{visitId}", new StringContent(patch, Encoding.UTF8, "application/json-patch+json")), "facts.writer");
        await Refused(await clinician.DeleteAsync($"{node.BaseUrl}/Encounter/{visitId}"), "facts.writer", "role.delete");
        // The clinical content of the encounter stays theirs to write: a change that leaves its facts alone is accepted.
        var noted = current.Replace("\"class\":", "\"reasonCode\":[{\"text\":\"chest pain\"}],\"class\":", StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await clinician.PutAsync($"{node.BaseUrl}/Encounter/{visitId}", Body(noted))).StatusCode);

        // When the ADT feed ends the encounter without an end date, the relationship ends with it: nothing above outlived it.
        Assert.Equal(HttpStatusCode.OK, (await adt.PutAsync($"{node.BaseUrl}/Encounter/{visitId}", Body((await ReadAsOperator($"Encounter/{visitId}")).Replace("\"in-progress\"", "\"cancelled\"", StringComparison.Ordinal)))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, await Reads(clinician, $"Observation/{obs}"));
        // The ADT feed is the one that may put someone on a team.
        Assert.Equal(HttpStatusCode.Created, (await adt.PostAsync($"{node.BaseUrl}/CareTeam", Body(Team(patient, colleague)))).StatusCode);
        using var other = As("clinician", fhirUser: colleague);
        Assert.Equal(HttpStatusCode.OK, await Reads(other, $"Observation/{obs}"));
    }

    [Fact]
    public async Task A_clinician_cannot_take_over_a_colleagues_practitioner_role_that_a_care_team_lists()
    {
        var patient = await PatientAsync();
        var obs = await ObservationAsync(patient);
        var me = "Practitioner/" + Unique("thief");
        var colleague = "Practitioner/" + Unique("owner");
        var org = await CreateAsync("""{"resourceType":"Organization","name":"Cardiology"}""");
        var role = await CreateAsync($$$"""{"resourceType":"PractitionerRole","active":true,"practitioner":{"reference":"{{{colleague}}}"},"organization":{"reference":"Organization/{{{org}}}"}}""");
        await CreateAsync(Team(patient, $"PractitionerRole/{role}"));
        using var clinician = As("clinician", fhirUser: me);
        using var owner = As("clinician", fhirUser: colleague);
        Assert.Equal(HttpStatusCode.OK, await Reads(owner, $"Observation/{obs}"));
        Assert.Equal(HttpStatusCode.NotFound, await Reads(clinician, $"Observation/{obs}"));

        var stored = await ReadAsOperator($"PractitionerRole/{role}");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/PractitionerRole/{role}", Body(stored.Replace(colleague, me, StringComparison.Ordinal))), "facts.writer");
        var patch = $$$"""[{"op":"replace","path":"/practitioner/reference","value":"{{{me}}}"}]""";
        await Refused(await clinician.PatchAsync($"{node.BaseUrl}/PractitionerRole/{role}", new StringContent(patch, Encoding.UTF8, "application/json-patch+json")), "facts.writer");
        // A new role of their own for the organization a Consent may name, or a Group: the same rule.
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/PractitionerRole", Body($$$"""{"resourceType":"PractitionerRole","practitioner":{"reference":"{{{me}}}"},"organization":{"reference":"Organization/{{{org}}}"}}""")), "facts.writer");
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/Group", Body($$$"""{"resourceType":"Group","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/{{{patient}}}"}}]}""")), "facts.writer", "record.not-open");
        Assert.Contains(colleague, await ReadAsOperator($"PractitionerRole/{role}"));
        Assert.Equal(HttpStatusCode.NotFound, await Reads(clinician, $"Observation/{obs}"));
    }

    [Fact]
    public async Task Consents_and_labels_that_permit_are_not_written_by_the_people_they_would_let_in()
    {
        var patient = await PatientAsync();
        var me = "Practitioner/" + Unique("consent");
        var denied = "Practitioner/" + Unique("denied");
        await node.CareTeamAsync(patient, me);
        await node.CareTeamAsync(patient, denied);
        var secret = await ObservationAsync(patient, "\"meta\":{\"security\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-Confidentiality\",\"code\":\"V\"}]},");
        var psy = await ObservationAsync(patient, "\"meta\":{\"security\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ActCode\",\"code\":\"PSY\"}]},");
        using var clinician = As("clinician", fhirUser: me);
        Assert.Equal(HttpStatusCode.NotFound, await Reads(clinician, $"Observation/{secret}"));

        // A Consent permitting themselves very restricted data.
        var permitV = $$$"""{"resourceType":"Consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{patient}}}"},"provision":{"type":"permit","provision":[{"type":"permit","securityLabel":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"V"}],"actor":[{"role":{"text":"doctor"},"reference":{"reference":"{{{me}}}"}}]}]}}""";
        await Refused(await clinician.PostAsync($"{node.BaseUrl}/Consent", Body(permitV)), "facts.writer");
        Assert.Equal(HttpStatusCode.NotFound, await Reads(clinician, $"Observation/{secret}"));
        // Withdrawing the patient's denial of a colleague, or editing it away.
        var denial = await CreateAsync($$$"""{"resourceType":"Consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{patient}}}"},"provision":{"type":"permit","provision":[{"type":"deny","actor":[{"role":{"text":"doctor"},"reference":{"reference":"{{{denied}}}"}}]}]}}""");
        await Refused(await clinician.DeleteAsync($"{node.BaseUrl}/Consent/{denial}"), "facts.writer");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Consent/{denial}", Body((await ReadAsOperator($"Consent/{denial}")).Replace("\"active\"", "\"inactive\"", StringComparison.Ordinal))), "facts.writer");
        using (var colleague = As("clinician", fhirUser: denied))
        {
            Assert.Equal(HttpStatusCode.NotFound, await Reads(colleague, $"Observation/{psy}"));
        }
        // Removing a sensitivity label (PSY) lets the service roles in: refused; adding one restricts and is accepted.
        var labelled = await ReadAsOperator($"Observation/{psy}");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Observation/{psy}", Body(labelled.Replace("\"PSY\"", "\"N\"", StringComparison.Ordinal).Replace("v3-ActCode", "v3-Confidentiality", StringComparison.Ordinal))), "facts.writer");
        var unlabel = """[{"op":"remove","path":"/meta/security"}]""";
        await Refused(await clinician.PatchAsync($"{node.BaseUrl}/Observation/{psy}", new StringContent(unlabel, Encoding.UTF8, "application/json-patch+json")), "facts.writer");
        var plain = await ObservationAsync(patient);
        var restrict = """[{"op":"add","path":"/meta/security","value":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"HIV"}]}]""";
        Assert.Equal(HttpStatusCode.OK, (await clinician.PatchAsync($"{node.BaseUrl}/Observation/{plain}", new StringContent(restrict, Encoding.UTF8, "application/json-patch+json"))).StatusCode);
        using var service = Service();
        Assert.Equal(HttpStatusCode.NotFound, await Reads(service, $"Observation/{plain}"));
        Assert.Equal(HttpStatusCode.NotFound, await Reads(service, $"Observation/{psy}"));
    }

    [Fact]
    public async Task A_clinician_related_to_two_patients_cannot_move_a_record_from_one_to_the_other()
    {
        var first = await PatientAsync();
        var second = await PatientAsync();
        var me = "Practitioner/" + Unique("mover");
        await node.CareTeamAsync(first, me);
        await node.CareTeamAsync(second, me);
        var obs = await ObservationAsync(first);
        using var clinician = As("clinician", fhirUser: me);
        var stored = await ReadAsOperator($"Observation/{obs}");
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Observation/{obs}", Body(stored.Replace(first, second, StringComparison.Ordinal))), "facts.writer");
        var also = stored.Replace("\"subject\":", $"\"performer\":[{{\"reference\":\"Patient/{second}\"}}],\"subject\":", StringComparison.Ordinal);
        await Refused(await clinician.PutAsync($"{node.BaseUrl}/Observation/{obs}", Body(also)), "facts.writer");
        Assert.Contains($"Patient/{first}", await ReadAsOperator($"Observation/{obs}"));
        // A new record naming both patients is theirs to write: they may see both.
        var both = $$$"""{"resourceType":"Observation","status":"final","code":{"text":"twins"},"subject":{"reference":"Patient/{{{first}}}"},"performer":[{"reference":"Patient/{{{second}}}"}]}""";
        Assert.Equal(HttpStatusCode.Created, (await clinician.PostAsync($"{node.BaseUrl}/Observation", Body(both))).StatusCode);
    }

    [Fact]
    public async Task Ended_suspended_proposed_and_future_teams_and_encounters_explain_nothing()
    {
        var day = TimeSpan.FromDays(1);
        var cases = new (string Name, Func<string, string, string> Fact, bool Explains)[]
        {
            ("active team, open period", (p, m) => Team(p, m, "active", Period(10 * day, null)), true),
            ("active team, no period", (p, m) => Team(p, m), true),
            ("active team whose period ended", (p, m) => Team(p, m, "active", Period(100 * day, day)), false),
            ("active team whose period starts tomorrow", (p, m) => Team(p, m, "active", Period(-day, null)), false),
            ("proposed team", (p, m) => Team(p, m, "proposed"), false),
            ("suspended team", (p, m) => Team(p, m, "suspended"), false),
            ("inactive team", (p, m) => Team(p, m, "inactive"), false),
            ("encounter in progress", (p, m) => Encounter(p, m, "in-progress", Period(TimeSpan.FromHours(1), null)), true),
            ("encounter in progress whose period ended 60 days ago", (p, m) => Encounter(p, m, "in-progress", Period(90 * day, 60 * day)), false),
            ("encounter planned for next week marked arrived", (p, m) => Encounter(p, m, "arrived", Period(-7 * day, null)), false),
            ("encounter finished 10 days ago", (p, m) => Encounter(p, m, "finished", Period(11 * day, 10 * day)), true),
            ("encounter finished 40 days ago", (p, m) => Encounter(p, m, "finished", Period(41 * day, 40 * day)), false),
            ("encounter finished without an end", (p, m) => Encounter(p, m, "finished", Period(2 * day, null)), false),
            ("encounter cancelled", (p, m) => Encounter(p, m, "cancelled", Period(TimeSpan.FromHours(1), null)), false),
        };
        using var adt = Service();
        var wrong = new List<string>();
        foreach (var (name, fact, explains) in cases)
        {
            var patient = await PatientAsync();
            var obs = await ObservationAsync(patient);
            var me = "Practitioner/" + Unique("period");
            var json = fact(patient, me);
            var type = JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString();
            Assert.Equal(HttpStatusCode.Created, (await adt.PostAsync($"{node.BaseUrl}/{type}", Body(json))).StatusCode);
            using var clinician = As("clinician", fhirUser: me);
            var status = await Reads(clinician, $"Observation/{obs}");
            if ((status == HttpStatusCode.OK) != explains)
            {
                wrong.Add($"{name}: {(int)status}");
            }
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Fact]
    public async Task A_patient_or_a_patient_scoped_app_writes_into_no_other_patients_record()
    {
        var self = await PatientAsync();
        var victim = await PatientAsync();
        using var patient = As("patient", "patient/*.cruds", fhirUser: "Patient/" + self, patient: self);
        var attempts = new[]
        {
            ("Observation", $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{self}}}"},"performer":[{"reference":"Patient/{{{victim}}}"}]}"""),
            ("Observation", $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{self}}}"},"performer":[{"reference":"Patient/{{{victim}}}/_history/1"}]}"""),
            ("QuestionnaireResponse", $$$"""{"resourceType":"QuestionnaireResponse","status":"completed","subject":{"reference":"Patient/{{{self}}}"},"author":{"reference":"Patient/{{{victim}}}"}}"""),
            ("Observation", $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{victim}}}"}}"""),
            ("Consent", $$$"""{"resourceType":"Consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{victim}}}"},"provision":{"type":"deny"}}"""),
        };
        foreach (var (type, json) in attempts)
        {
            var response = await patient.PostAsync($"{node.BaseUrl}/{type}", Body(json));
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{type} {json}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            var inTransaction = await patient.PostAsync(node.BaseUrl, Body($$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{{{json}}},"request":{"method":"POST","url":"{{{type}}}"}}]}"""));
            Assert.Equal(HttpStatusCode.Forbidden, inTransaction.StatusCode);
        }
        // An update of their own record that adds the other patient.
        var own = await patient.PostAsync($"{node.BaseUrl}/Observation", Body($$$"""{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/{{{self}}}"}}"""));
        Assert.Equal(HttpStatusCode.Created, own.StatusCode);
        var ownId = (await own.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        var moved = $$$"""{"resourceType":"Observation","id":"{{{ownId}}}","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/{{{self}}}"},"performer":[{"reference":"Patient/{{{victim}}}"}]}""";
        Assert.Equal(HttpStatusCode.Forbidden, (await patient.PutAsync($"{node.BaseUrl}/Observation/{ownId}", Body(moved))).StatusCode);
        var patch = $$$"""[{"op":"replace","path":"/subject/reference","value":"Patient/{{{victim}}}"}]""";
        Assert.Equal(HttpStatusCode.Forbidden, (await patient.PatchAsync($"{node.BaseUrl}/Observation/{ownId}", new StringContent(patch, Encoding.UTF8, "application/json-patch+json"))).StatusCode);
        Assert.DoesNotContain(victim, await ReadAsOperator($"Observation/{ownId}"));
        using (var search = await node.Http.GetAsync($"{node.BaseUrl}/Observation?patient={victim}"))
        {
            Assert.DoesNotContain("\"entry\"", await search.Content.ReadAsStringAsync());
        }

        // A clinician's app launched for one patient (patient/ scopes) is held to that patient the same way.
        var doctor = "Practitioner/" + Unique("launch");
        await node.CareTeamAsync(self, doctor);
        await node.CareTeamAsync(victim, doctor);
        using var app = As("clinician", "patient/*.cruds", fhirUser: doctor, patient: self);
        var twoPatients = $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{self}}}"},"performer":[{"reference":"Patient/{{{victim}}}"}]}""";
        Assert.Equal(HttpStatusCode.Forbidden, (await app.PostAsync($"{node.BaseUrl}/Observation", Body(twoPatients))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await app.PutAsync($"{node.BaseUrl}/Observation/{ownId}", Body(moved))).StatusCode);
    }
}

[Collection(SharedNode.Name)]
public sealed class SelfGrantTestsOnSqlite(TestNode node) : SelfGrantTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class SelfGrantTestsOnPostgres(PostgresTestNode node) : SelfGrantTests(node);

/// <summary>A node whose policy lets clinicians manage care teams: they still cannot put themselves on one.</summary>
public sealed class SelfGrantWithClinicianWritersTests : IAsyncLifetime
{
    private readonly TestNode _node = new()
    {
        PolicyYaml = Ward.Core.Policy.AccessPolicy.ReadDefault().Replace("care-team: [service]", "care-team: [service, clinician]", StringComparison.Ordinal),
    };

    public Task InitializeAsync() => _node.InitializeAsync();

    public async Task DisposeAsync() => await _node.DisposeAsync();

    [Fact]
    public async Task A_clinician_the_policy_trusts_with_care_teams_adds_colleagues_but_never_themselves()
    {
        var patient = JsonDocument.Parse((await _node.AsOperator("POST", "Patient", """{"resourceType":"Patient","name":[{"family":"Lead"}]}""")).Body).RootElement.GetProperty("id").GetString();
        var me = "Practitioner/lead-" + Guid.NewGuid().ToString("N")[..8];
        var role = JsonDocument.Parse((await _node.AsOperator("POST", "PractitionerRole", $$$"""{"resourceType":"PractitionerRole","practitioner":{"reference":"{{{me}}}"}}""")).Body).RootElement.GetProperty("id").GetString();
        await _node.CareTeamAsync(patient!, me);
        using var lead = _node.NewHttp(_node.Token(new AccessGrant(me, "t", "clinician", SmartScopes.Parse("user/*.cruds"), null, me)));
        string Team(string member) => $$$"""{"resourceType":"CareTeam","status":"active","subject":{"reference":"Patient/{{{patient}}}"},"participant":[{"member":{"reference":"{{{member}}}"}}]}""";
        Assert.Equal(HttpStatusCode.Created, (await lead.PostAsync($"{_node.BaseUrl}/CareTeam", new StringContent(Team("Practitioner/junior"), Encoding.UTF8, "application/fhir+json"))).StatusCode);
        foreach (var self in new[] { me, $"PractitionerRole/{role}" })
        {
            var response = await lead.PostAsync($"{_node.BaseUrl}/CareTeam", new StringContent(Team(self), Encoding.UTF8, "application/fhir+json"));
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Contains("(rule facts.self-grant)", await response.Content.ReadAsStringAsync());
        }
    }
}
