using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;

namespace Ward.Tests;

/// <summary>
/// The access policy over HTTP, path by path: care relationships and break-the-glass, Consent written by the patient,
/// the views of management and public health, the roles without clinical data, and the leaks a clinician could try.
/// </summary>
public sealed class PolicyTests(TestNode node) : IClassFixture<TestNode>
{
    private const string Hiv = "http://snomed.info/sct|86406008";

    private static string Unique(string prefix) => prefix + Guid.NewGuid().ToString("N")[..10];

    private HttpClient As(string role, string scopes = "user/*.cruds", string? fhirUser = null, string? patient = null, string? subject = null, string? glass = null, string? purpose = null)
    {
        var http = node.NewHttp(node.Token(new AccessGrant(subject ?? Unique(role + "-"), "policy-tests", role, SmartScopes.Parse(scopes), patient, fhirUser)));
        if (glass is not null)
        {
            http.DefaultRequestHeaders.Add("Ward-Break-Glass", glass);
        }
        if (purpose is not null)
        {
            http.DefaultRequestHeaders.Add("Ward-Purpose", purpose);
        }
        return http;
    }

    private async Task<string> CreateAsync(string json)
    {
        var response = await node.AsOperator("POST", JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!, json);
        Assert.Equal(201, response.Status);
        return JsonDocument.Parse(response.Body).RootElement.GetProperty("id").GetString()!;
    }

    private Task<string> PatientAsync() => CreateAsync("""{"resourceType":"Patient","name":[{"family":"Policy","given":["Pat"]}],"birthDate":"1970-06-15","telecom":[{"system":"phone","value":"+33 1 23 45 67 89"}]}""");

    private Task<string> ObservationAsync(string patient, string? label = null) => CreateAsync(
        $$$"""{"resourceType":"Observation","status":"final",{{{Meta(label)}}}"code":{"text":"pulse"},"subject":{"reference":"Patient/{{{patient}}}"}}""");

    /// <summary>A meta element with one security label: a confidentiality code (N, R, V) or a sensitivity code (HIV, PSY …).</summary>
    private static string Meta(string? label) => label is null ? "" :
        "\"meta\":{\"security\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/" + (label.Length == 1 ? "v3-Confidentiality" : "v3-ActCode") + "\",\"code\":\"" + label + "\"}]},";

    /// <summary>The rules that deny a record for whose it is, its labels or its patient's Consent: not disclosed (issue 29, point 6).</summary>
    private static readonly string[] RecordRules = ["relationship.required", "consent.deny", "consent.deny-label", "label.very-restricted", "label.restricted", "patient.own-compartment"];

    /// <summary>
    /// A refusal by <paramref name="rule"/>: a 403 naming it, or for the rules about the record itself, the answer that does
    /// not tell it from a missing one (404 for a resource named by id, else a 403 under the one rule record.not-open).
    /// </summary>
    private static async Task<string> Refusal(HttpResponseMessage response, string rule)
    {
        var body = await response.Content.ReadAsStringAsync();
        if (RecordRules.Contains(rule))
        {
            Assert.True(response.StatusCode == HttpStatusCode.NotFound && body.Contains("does not exist, or is not open to you", StringComparison.Ordinal)
                || response.StatusCode == HttpStatusCode.Forbidden && body.Contains("(rule record.not-open)", StringComparison.Ordinal), $"{(int)response.StatusCode} {body}");
            Assert.DoesNotContain("care relationship", body);
            Assert.DoesNotContain("Consent", body);
            return body;
        }
        Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{(int)response.StatusCode} {body}");
        Assert.Contains($"(rule {rule})", body);
        return body;
    }

    private static async Task<JsonElement> Bundle(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement;
    }

    private static List<string> Ids(JsonElement bundle) => bundle.TryGetProperty("entry", out var entries)
        ? entries.EnumerateArray().Select(e => e.GetProperty("resource")).Where(r => r.GetProperty("resourceType").GetString() != "OperationOutcome")
            .Select(r => $"{r.GetProperty("resourceType").GetString()}/{r.GetProperty("id").GetString()}").ToList()
        : [];

    [Fact]
    public async Task A_clinician_without_a_care_relationship_is_refused_and_break_the_glass_opens_the_record_for_a_while_with_a_review_item()
    {
        var patient = await PatientAsync();
        var obs = await ObservationAsync(patient);
        var practitioner = "Practitioner/" + Unique("doc");
        using var plain = As("clinician", fhirUser: practitioner, subject: practitioner);
        var refused = await Refusal(await plain.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "relationship.required");
        Assert.Contains("Ward-Break-Glass", refused);

        using var vague = As("clinician", fhirUser: practitioner, subject: practitioner, glass: "urgent");
        var tooShort = await vague.GetAsync($"{node.BaseUrl}/Observation/{obs}");
        Assert.Equal(HttpStatusCode.BadRequest, tooShort.StatusCode);
        Assert.Contains("at least 20 characters", await tooShort.Content.ReadAsStringAsync());
        using (var manager = As("management", glass: "Management wants to see this record now"))
        {
            await Refusal(await manager.GetAsync($"{node.BaseUrl}/Encounter?_count=1"), "break-glass.role");
        }
        using (var wrongPurpose = As("clinician", fhirUser: practitioner, purpose: "HRESCH"))
        {
            await Refusal(await wrongPurpose.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "purpose.not-allowed");
        }
        using (var emergencyWithoutGlass = As("clinician", fhirUser: practitioner, purpose: "ETREAT"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, (await emergencyWithoutGlass.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        }

        const string why = "Unconscious patient brought in by ambulance, no team on call";
        using var glass = As("clinician", fhirUser: practitioner, subject: practitioner, glass: why);
        Assert.Equal(HttpStatusCode.OK, (await glass.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        // The opening holds for this user and this patient: later requests need no header, and are still flagged.
        Assert.Equal(HttpStatusCode.OK, (await plain.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        Assert.Contains("Observation/" + obs, Ids(await Bundle(await plain.GetAsync($"{node.BaseUrl}/Patient/{patient}/Observation"))));
        var other = await ObservationAsync(await PatientAsync());
        await Refusal(await plain.GetAsync($"{node.BaseUrl}/Observation/{other}"), "relationship.required");
        // A search that names no patient opens nothing.
        Assert.Equal(HttpStatusCode.BadRequest, (await glass.GetAsync($"{node.BaseUrl}/Observation?code=x")).StatusCode);

        using var officer = As("security-officer");
        var events = await Bundle(await officer.GetAsync($"{node.BaseUrl}/AuditEvent?patient={patient}&subtype=read&_count=100"));
        var flagged = events.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource").ToString()).Where(e => e.Contains("break-the-glass")).ToList();
        Assert.Equal(2, flagged.Count);
        Assert.All(flagged, e => Assert.Contains(why, e));
        Assert.All(flagged, e => Assert.Contains("\"ETREAT\"", e));

        var list = await WardProcess.OutputAsync(["breakglass", "list", "--data", node.DataDir]);
        Assert.True(list.Code == 0, list.Output);
        Assert.Contains("ambulance", list.Output);
        string id;
        using (var db = node.Db())
        {
            // One opening (a review item) for this user and patient; the requests it let through are in the audit log.
            Assert.Equal(1L, Convert.ToInt64(TestNode.Scalar(db, "SELECT uses FROM break_glass WHERE subject = @s AND patient_id = @p", ("@s", practitioner), ("@p", patient))));
            id = Convert.ToString(TestNode.Scalar(db, "SELECT id FROM break_glass WHERE subject = @s", ("@s", practitioner)), System.Globalization.CultureInfo.InvariantCulture)!;
        }
        var review = await WardProcess.OutputAsync(["breakglass", "review", id, "--data", node.DataDir, "--note", "justified: ER admission", "--reviewer", "so-1"]);
        Assert.True(review.Code == 0, review.Output);
        Assert.Equal(2, (await WardProcess.OutputAsync(["breakglass", "review", id, "--data", node.DataDir, "--note", "again"])).Code);
        var after = await WardProcess.OutputAsync(["breakglass", "list", "--data", node.DataDir, "--all"]);
        Assert.Contains("so-1", after.Output);
    }

    [Fact]
    public async Task A_break_the_glass_opening_ends_when_its_time_is_up()
    {
        var shortLived = new TestNode { PolicyYaml = Ward.Core.Policy.AccessPolicy.ReadDefault().Replace("hours: 4", "hours: 0.0005", StringComparison.Ordinal) };
        await shortLived.InitializeAsync();
        try
        {
        var created = await shortLived.AsOperator("POST", "Patient", """{"resourceType":"Patient","gender":"unknown"}""");
        var patient = JsonDocument.Parse(created.Body).RootElement.GetProperty("id").GetString()!;
        using var glass = shortLived.NewHttp(shortLived.Token(new AccessGrant("er-doc", "t", "clinician", SmartScopes.Parse("user/*.rs"), null, "Practitioner/er")));
        using var request = new HttpRequestMessage(HttpMethod.Get, $"{shortLived.BaseUrl}/Patient/{patient}");
        request.Headers.Add("Ward-Break-Glass", "Cardiac arrest in the waiting room, no record");
        Assert.Equal(HttpStatusCode.OK, (await glass.SendAsync(request)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await glass.GetAsync($"{shortLived.BaseUrl}/Patient/{patient}")).StatusCode);
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        await Refusal(await glass.GetAsync($"{shortLived.BaseUrl}/Patient/{patient}"), "relationship.required");
        }
        finally
        {
            await shortLived.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_patient_writes_and_withdraws_their_own_consent_and_the_clinician_named_in_it_is_denied_meanwhile()
    {
        var patient = await PatientAsync();
        var obs = await ObservationAsync(patient);
        var practitioner = "Practitioner/" + Unique("gp");
        await node.CareTeamAsync(patient, practitioner);
        using var clinician = As("clinician", fhirUser: practitioner);
        Assert.Equal(HttpStatusCode.OK, (await clinician.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);

        using var self = As("patient", "patient/*.cruds", fhirUser: "Patient/" + patient, patient: patient);
        var consent = $$$"""
            {"resourceType":"Consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{patient}}}"},
             "provision":{"type":"permit","provision":[{"type":"deny","actor":[{"role":{"text":"doctor"},"reference":{"reference":"{{{practitioner}}}"}}]}]}}
            """;
        var created = await self.PostAsync($"{node.BaseUrl}/Consent", new StringContent(consent, Encoding.UTF8, "application/fhir+json"));
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var consentId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString();
        await Refusal(await clinician.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "consent.deny");
        Assert.Empty(Ids(await Bundle(await clinician.GetAsync($"{node.BaseUrl}/Observation?patient={patient}"))));
        // Nobody else's consent: a patient writes into their own record only.
        var someoneElse = await PatientAsync();
        var forged = await self.PostAsync($"{node.BaseUrl}/Consent", new StringContent(consent.Replace(patient, someoneElse, StringComparison.Ordinal), Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Forbidden, forged.StatusCode);
        // A patient writes no other type than the policy lets them.
        var condition = $$$"""{"resourceType":"Condition","subject":{"reference":"Patient/{{{patient}}}"}}""";
        await Refusal(await self.PostAsync($"{node.BaseUrl}/Condition", new StringContent(condition, Encoding.UTF8, "application/fhir+json")), "role.write-types");

        Assert.Equal(HttpStatusCode.NoContent, (await self.DeleteAsync($"{node.BaseUrl}/Consent/{consentId}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await clinician.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
    }

    [Fact]
    public async Task A_research_opt_out_does_not_touch_care_and_sensitivity_labels_need_a_relationship()
    {
        var patient = await PatientAsync();
        await CreateAsync($$$"""{"resourceType":"Consent","status":"active","scope":{"text":"research"},"category":[{"text":"research"}],"patient":{"reference":"Patient/{{{patient}}}"},"provision":{"type":"deny","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}]}}""");
        var normal = await ObservationAsync(patient);
        var psy = await ObservationAsync(patient, "PSY");
        using var service = As("service", "system/*.cruds");
        Assert.Equal(HttpStatusCode.OK, (await service.GetAsync($"{node.BaseUrl}/Observation/{normal}")).StatusCode);
        await Refusal(await service.GetAsync($"{node.BaseUrl}/Observation/{psy}"), "label.restricted");
        Assert.Equal(["Observation/" + normal], Ids(await Bundle(await service.GetAsync($"{node.BaseUrl}/Observation?patient={patient}"))));
        // The interface engine feeds results without a care relationship.
        var fed = await service.PostAsync($"{node.BaseUrl}/Observation", new StringContent(
            $$$"""{"resourceType":"Observation","status":"final","code":{"text":"potassium"},"subject":{"reference":"Patient/{{{patient}}}"}}""", Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Created, fed.StatusCode);
    }

    [Fact]
    public async Task Management_sees_administrative_types_masked_and_cannot_find_a_patient()
    {
        var patient = await PatientAsync();
        var encounter = await CreateAsync($$$"""{"resourceType":"Encounter","status":"finished","identifier":[{"system":"urn:visit","value":"V-1234"}],"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"IMP"},"subject":{"reference":"Patient/{{{patient}}}","display":"Pat Policy"}}""");
        var obs = await ObservationAsync(patient);
        using var manager = As("management");
        var read = await manager.GetAsync($"{node.BaseUrl}/Encounter/{encounter}");
        var body = await read.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.DoesNotContain(patient, body);
        Assert.DoesNotContain("Pat Policy", body);
        Assert.DoesNotContain("V-1234", body);
        Assert.Matches("\"reference\":\"Patient/p-[A-Za-z0-9.-]{22}\"", body);
        var search = await manager.GetAsync($"{node.BaseUrl}/Encounter?_id={encounter}");
        Assert.DoesNotContain(patient, await search.Content.ReadAsStringAsync());
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Encounter?patient={patient}"), "view.pseudonymised");
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Encounter?subject:Patient.name=Policy"), "view.pseudonymised");
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Patient/{patient}/Encounter"), "view.pseudonymised");
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Encounter/{encounter}/_history"), "view.no-history");
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Patient/{patient}"), "role.read-types");
        await Refusal(await manager.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "role.read-types");
        await Refusal(await manager.PutAsync($"{node.BaseUrl}/Encounter/{encounter}", new StringContent(body, Encoding.UTF8, "application/fhir+json")), "role.write-types");
    }

    [Fact]
    public async Task Public_health_gets_counts_only_and_small_cells_are_not_given()
    {
        var code = Unique("ph");
        var patient = await PatientAsync();
        for (var i = 0; i < 12; i++)
        {
            await CreateAsync($$$"""{"resourceType":"Condition","code":{"coding":[{"system":"urn:ph","code":"{{{code}}}"}]},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        }
        await CreateAsync($$$"""{"resourceType":"Condition","code":{"coding":[{"system":"urn:ph","code":"{{{code}}}-rare"}]},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        using var ph = As("public-health");
        var large = await Bundle(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:ph|{code}&_summary=count"));
        Assert.Equal(12, large.GetProperty("total").GetInt32());
        var small = await Bundle(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:ph|{code}-rare&_summary=count"));
        Assert.False(small.TryGetProperty("total", out _));
        var note = small.GetProperty("entry")[0].GetProperty("resource").GetProperty("issue")[0].GetProperty("diagnostics").GetString();
        Assert.StartsWith("<10", note);
        await Refusal(await ph.GetAsync($"{node.BaseUrl}/Condition?code=urn:ph|{code}"), "view.counts-only");
        await Refusal(await ph.GetAsync($"{node.BaseUrl}/Patient/{patient}"), "view.counts-only");
        await Refusal(await ph.GetAsync($"{node.BaseUrl}/Claim?_summary=count"), "role.read-types");
    }

    [Fact]
    public async Task Roles_without_clinical_data_are_refused_with_the_rule()
    {
        var patient = await PatientAsync();
        var obs = await ObservationAsync(patient);
        var practitioner = await CreateAsync("""{"resourceType":"Practitioner","name":[{"family":"Directory"}]}""");
        using (var researcher = As("researcher"))
        {
            var body = await Refusal(await researcher.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "role.researcher");
            Assert.Contains("research export", body);
        }
        using (var admin = As("admin"))
        {
            await Refusal(await admin.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "role.no-clinical-data");
            await Refusal(await admin.GetAsync($"{node.BaseUrl}/Patient?_count=1"), "role.no-clinical-data");
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync($"{node.BaseUrl}/Practitioner/{practitioner}")).StatusCode);
        }
        using (var officer = As("security-officer"))
        {
            await Refusal(await officer.GetAsync($"{node.BaseUrl}/Observation/{obs}"), "role.no-clinical-data");
            Assert.Equal(HttpStatusCode.OK, (await officer.GetAsync($"{node.BaseUrl}/AuditEvent?patient={patient}")).StatusCode);
        }
        using var dpo = As("dpo");
        await Refusal(await dpo.GetAsync($"{node.BaseUrl}/Patient/{patient}/$everything"), "role.no-clinical-data");
    }

    [Fact]
    public async Task A_clinician_learns_nothing_of_what_the_policy_hides_through_any_search_path()
    {
        var related = await PatientAsync();
        var stranger = await PatientAsync();
        var practitioner = "Practitioner/" + Unique("leak");
        await node.CareTeamAsync(related, practitioner);
        var doctor = await CreateAsync("""{"resourceType":"Practitioner","name":[{"family":"Asserter"}]}""");
        var visit = Unique("v");
        // A very restricted encounter of the related patient (V needs the patient's Consent), for HIV care.
        var hidden = await CreateAsync($$$"""{"resourceType":"Encounter","status":"finished",{{{Meta("V")}}}"identifier":[{"system":"urn:visit","value":"{{{visit}}}"}],"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"reasonCode":[{"coding":[{"system":"http://snomed.info/sct","code":"86406008"}]}],"subject":{"reference":"Patient/{{{related}}}"}}""");
        var obs = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"text":"viral load"},"subject":{"reference":"Patient/{{{related}}}"},"encounter":{"reference":"Encounter/{{{hidden}}}"}}""");
        // An HIV-labelled condition of a patient the clinician has no relationship with, asserted by a practitioner anyone may read.
        await CreateAsync($$$"""{"resourceType":"Condition",{{{Meta("HIV")}}}"code":{"coding":[{"system":"http://snomed.info/sct","code":"86406008"}]},"subject":{"reference":"Patient/{{{stranger}}}"},"asserter":{"reference":"Practitioner/{{{doctor}}}"}}""");
        using var clinician = As("clinician", fhirUser: practitioner);

        async Task Hidden(string query, string hiddenRef, bool operatorFinds = true)
        {
            var seen = Ids(await Bundle(await clinician.GetAsync($"{node.BaseUrl}/{query}")));
            Assert.DoesNotContain(hiddenRef, seen);
            if (operatorFinds)
            {
                // The same query finds it without the policy: the test would notice a leak.
                var (path, q) = Ward.Core.Fhir.FhirRequest.SplitUrl(query);
                var all = await node.AsOperator("GET", path, query: q);
                Assert.Contains(hiddenRef, Ids(JsonDocument.Parse(all.Body).RootElement));
            }
        }

        await Hidden($"Practitioner?_id={doctor}&_has:Condition:asserter:code={Hiv}", "Practitioner/" + doctor);
        await Hidden($"Observation?_id={obs}&encounter:Encounter.reason-code={Hiv}", "Observation/" + obs);
        await Hidden($"Patient?_id={related}&_revinclude=Encounter:patient", "Encounter/" + hidden);
        await Hidden($"Observation?_id={obs}&_include=Observation:encounter", "Encounter/" + hidden);
        await Hidden($"Patient/{related}/Encounter", "Encounter/" + hidden);
        await Hidden($"Patient/{related}/$everything", "Encounter/" + hidden);
        foreach (var count in new[] { $"Encounter?patient={related}&_summary=count", $"Encounter?patient={related}&_total=accurate", $"Condition?code={Hiv}&_summary=count" })
        {
            var bundle = await Bundle(await clinician.GetAsync($"{node.BaseUrl}/{count}"));
            Assert.Equal(0, bundle.GetProperty("total").GetInt32());
        }
        await Refusal(await clinician.GetAsync($"{node.BaseUrl}/Encounter/{hidden}"), "label.very-restricted");
        await Refusal(await clinician.GetAsync($"{node.BaseUrl}/Encounter/{hidden}/_history"), "label.very-restricted");
        await Refusal(await clinician.GetAsync($"{node.BaseUrl}/Encounter/{hidden}/_history/1"), "label.very-restricted");
        await Refusal(await clinician.GetAsync($"{node.BaseUrl}/Encounter/_history"), "history.across-resources");

        var batch = $$$"""{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Encounter/{{{hidden}}}"}},{"request":{"method":"GET","url":"Observation/{{{obs}}}"}}]}""";
        var statuses = (await Bundle(await clinician.PostAsync(node.BaseUrl, new StringContent(batch, Encoding.UTF8, "application/fhir+json"))))
            .GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("response").GetProperty("status").GetString()).ToList();
        Assert.Equal(["404", "200 OK"], statuses);
        var current = Encoding.UTF8.GetString((await node.AsOperator("GET", $"Encounter/{hidden}")).Body);
        var transaction = $$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{{{current.Replace("\"finished\"", "\"cancelled\"", StringComparison.Ordinal)}}},"request":{"method":"PUT","url":"Encounter/{{{hidden}}}"}}]}""";
        await Refusal(await clinician.PostAsync(node.BaseUrl, new StringContent(transaction, Encoding.UTF8, "application/fhir+json")), "label.very-restricted");
        Assert.Contains("\"finished\"", Encoding.UTF8.GetString((await node.AsOperator("GET", $"Encounter/{hidden}")).Body));

        // A conditional create that matches only the hidden encounter creates another one instead of revealing it.
        using var conditional = new HttpRequestMessage(HttpMethod.Post, $"{node.BaseUrl}/Encounter")
        {
            Content = new StringContent($$$"""{"resourceType":"Encounter","status":"planned","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/{{{related}}}"}}""", Encoding.UTF8, "application/fhir+json"),
        };
        conditional.Headers.Add("If-None-Exist", $"identifier=urn:visit|{visit}");
        var made = await clinician.SendAsync(conditional);
        Assert.Equal(HttpStatusCode.Created, made.StatusCode);
        Assert.NotEqual(hidden, (await made.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString());
    }

    [Fact]
    public async Task Ward_policy_check_accepts_the_default_and_names_every_mistake_of_a_bad_file()
    {
        var good = await WardProcess.OutputAsync(["policy", "check", "--data", node.DataDir]);
        Assert.True(good.Code == 0, good.Output);
        Assert.Contains("The policy is valid", good.Output);
        Assert.Contains("clinician", good.Output);
        var file = Path.Combine(Path.GetTempPath(), Unique("policy-") + ".yaml");
        await File.WriteAllTextAsync(file, Ward.Core.Policy.AccessPolicy.ReadDefault()
            .Replace("access: counts", "access: everything", StringComparison.Ordinal)
            .Replace("purposes: [HRESCH]", "purposes: [RESEARCH]", StringComparison.Ordinal)
            .Replace("read: [Practitioner,", "read: [AuditEvent, Observation, Practitioner,", StringComparison.Ordinal)
            .Replace("read: [ImagingStudy]", "read: [ImagingStudy, Condition]", StringComparison.Ordinal)
            .Replace("hours: 4", "hours: 400", StringComparison.Ordinal));
        try
        {
            var bad = await WardProcess.OutputAsync(["policy", "check", "--data", node.DataDir, "--file", file]);
            Assert.Equal(2, bad.Code);
            var text = bad.Output.ReplaceLineEndings(" ");
            Assert.Contains("roles.public-health.access: 'everything'", text);
            Assert.Contains("'RESEARCH' is not a purpose of use", text);
            Assert.Contains("AuditEvent is read through the audit rules", text);
            Assert.Contains("lists Observation, which belongs to patients", text);
            Assert.Contains("roles.researcher.read: a research role reads images de-identified", text);
            Assert.Contains("break-glass.hours", text);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
