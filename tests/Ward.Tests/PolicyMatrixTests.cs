using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;
using Ward.Core.Fhir;

namespace Ward.Tests;

/// <summary>
/// A node loaded with one resource of each of 20 types, in each label N/R/V, for eight patients: with and without a care
/// relationship to the clinician and the nurse, and with no Consent, a research opt-out, a Consent that denies the
/// clinician and the nurse, or one that permits them V data. The policy is the default, except counts answered exactly.
/// </summary>
public sealed class PolicyMatrixNode : TestNode
{
    public static readonly string[] Types =
    [
        "Observation", "Condition", "Procedure", "MedicationRequest", "Immunization", "AllergyIntolerance", "DiagnosticReport", "Encounter",
        "CarePlan", "Goal", "DocumentReference", "ServiceRequest", "Claim", "Coverage", "Appointment", "Account", "EpisodeOfCare",
        "QuestionnaireResponse", "FamilyMemberHistory", "MedicationAdministration",
    ];

    public static readonly string[] Labels = ["N", "R", "V"];
    public static readonly string[] Consents = ["none", "opt-out", "deny-actor", "permit-v"];

    public PolicyMatrixNode() => PolicyYaml = Ward.Core.Policy.AccessPolicy.ReadDefault().Replace("small-cell: 10", "small-cell: 1", StringComparison.Ordinal);

    /// <summary>Patient id by (relationship, consent).</summary>
    public Dictionary<(bool Related, string Consent), string> Patients { get; } = [];

    /// <summary>Resource id by (patient, type, label).</summary>
    public Dictionary<(string Patient, string Type, string Label), string> Resources { get; } = [];

    public const string Clinician = "Practitioner/mx-clinician";
    public const string Nurse = "Practitioner/mx-nurse";

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        var entries = new List<string>
        {
            """{"resource":{"resourceType":"Practitioner","id":"mx-clinician","name":[{"family":"Matrix"}]},"request":{"method":"PUT","url":"Practitioner/mx-clinician"}}""",
            """{"resource":{"resourceType":"Practitioner","id":"mx-nurse","name":[{"family":"Matrix"}]},"request":{"method":"PUT","url":"Practitioner/mx-nurse"}}""",
            """{"resource":{"resourceType":"Organization","id":"mx-payer","name":"Payer"},"request":{"method":"PUT","url":"Organization/mx-payer"}}""",
        };
        foreach (var related in new[] { true, false })
        {
            foreach (var consent in Consents)
            {
                var pid = $"mx-{(related ? "rel" : "norel")}-{consent}";
                Patients[(related, consent)] = pid;
                entries.Add($$$"""{"resource":{"resourceType":"Patient","id":"{{{pid}}}","name":[{"family":"Matrix"}]},"request":{"method":"PUT","url":"Patient/{{{pid}}}"}}""");
                if (related)
                {
                    entries.Add($$$"""{"resource":{"resourceType":"CareTeam","id":"{{{pid}}}-team","status":"active","subject":{"reference":"Patient/{{{pid}}}"},"participant":[{"member":{"reference":"{{{Clinician}}}"}},{"member":{"reference":"{{{Nurse}}}"}}]},"request":{"method":"PUT","url":"CareTeam/{{{pid}}}-team"}}""");
                }
                var provision = consent switch
                {
                    "opt-out" => """{"type":"deny","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}]}""",
                    "deny-actor" => $$$"""{"type":"permit","provision":[{"type":"deny","actor":[{"role":{"text":"clinician"},"reference":{"reference":"{{{Clinician}}}"}},{"role":{"text":"nurse"},"reference":{"reference":"{{{Nurse}}}"}}]}]}""",
                    "permit-v" => $$$"""{"type":"permit","provision":[{"type":"permit","securityLabel":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"V"}],"actor":[{"role":{"text":"clinician"},"reference":{"reference":"{{{Clinician}}}"}},{"role":{"text":"nurse"},"reference":{"reference":"{{{Nurse}}}"}}]}]}""",
                    _ => null,
                };
                if (provision is not null)
                {
                    entries.Add($$$"""{"resource":{"resourceType":"Consent","id":"{{{pid}}}-consent","status":"active","scope":{"text":"privacy"},"category":[{"text":"privacy"}],"patient":{"reference":"Patient/{{{pid}}}"},"provision":{{{provision}}}},"request":{"method":"PUT","url":"Consent/{{{pid}}}-consent"}}""");
                }
                foreach (var type in Types)
                {
                    foreach (var label in Labels)
                    {
                        var id = $"{pid}-{type.ToLowerInvariant()}-{label.ToLowerInvariant()}";
                        Resources[(pid, type, label)] = id;
                        entries.Add($$$"""{"resource":{{{Resource(type, id, pid, label)}}},"request":{"method":"PUT","url":"{{{type}}}/{{{id}}}"}}""");
                    }
                }
            }
        }
        await AsOperator("POST", "", $$$"""{"resourceType":"Bundle","type":"transaction","entry":[{{{string.Join(',', entries)}}}]}""");
    }

    /// <summary>A minimal valid resource of a type, of a patient, with a confidentiality label.</summary>
    public static string Resource(string type, string id, string patient, string label)
    {
        var p = $$$"""{"reference":"Patient/{{{patient}}}"}""";
        const string code = """{"text":"matrix"}""";
        var body = type switch
        {
            "Observation" => $$$""","status":"final","code":{{{code}}},"subject":{{{p}}} """,
            "Condition" => $$$""","code":{{{code}}},"subject":{{{p}}} """,
            "Procedure" => $$$""","status":"completed","code":{{{code}}},"subject":{{{p}}} """,
            "MedicationRequest" => $$$""","status":"active","intent":"order","medicationCodeableConcept":{{{code}}},"subject":{{{p}}} """,
            "Immunization" => $$$""","status":"completed","vaccineCode":{{{code}}},"patient":{{{p}}},"occurrenceDateTime":"2024-01-01" """,
            "AllergyIntolerance" => $$$""","code":{{{code}}},"patient":{{{p}}} """,
            "DiagnosticReport" => $$$""","status":"final","code":{{{code}}},"subject":{{{p}}} """,
            "Encounter" => $$$""","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{{{p}}} """,
            "CarePlan" => $$$""","status":"active","intent":"plan","subject":{{{p}}} """,
            "Goal" => $$$""","lifecycleStatus":"active","description":{{{code}}},"subject":{{{p}}} """,
            "DocumentReference" => $$$""","status":"current","content":[{"attachment":{"contentType":"text/plain","data":"bWF0cml4"}}],"subject":{{{p}}} """,
            "ServiceRequest" => $$$""","status":"active","intent":"order","code":{{{code}}},"subject":{{{p}}} """,
            "Claim" => $$$""","status":"active","type":{{{code}}},"use":"claim","patient":{{{p}}},"created":"2024-01-01","provider":{"reference":"Organization/mx-payer"},"priority":{{{code}}},"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"Coverage/x"}}] """,
            "Coverage" => $$$""","status":"active","beneficiary":{{{p}}},"payor":[{"reference":"Organization/mx-payer"}] """,
            "Appointment" => $$$""","status":"booked","participant":[{"actor":{{{p}}},"status":"accepted"}] """,
            "Account" => $$$""","status":"active","subject":[{{{p}}}] """,
            "EpisodeOfCare" => $$$""","status":"active","patient":{{{p}}} """,
            "QuestionnaireResponse" => $$$""","status":"completed","subject":{{{p}}} """,
            "FamilyMemberHistory" => $$$""","status":"completed","patient":{{{p}}},"relationship":{{{code}}} """,
            "MedicationAdministration" => $$$""","status":"completed","medicationCodeableConcept":{{{code}}},"subject":{{{p}}},"effectiveDateTime":"2024-01-01" """,
            _ => throw new ArgumentException(type),
        };
        var meta = label == "N" ? "" : $$$""","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"{{{label}}}"}]}""";
        return $$$"""{"resourceType":"{{{type}}}","id":"{{{id}}}"{{{meta}}}{{{body}}}}""";
    }
}

public sealed class PolicyMatrixTests(PolicyMatrixNode node) : IClassFixture<PolicyMatrixNode>
{
    private static readonly string[] Roles = ["clinician", "nurse", "service", "management", "public-health", "researcher", "patient", "security-officer", "dpo", "admin"];
    private static readonly string[] Interactions = ["read", "search", "update"];

    // The decision table, written from the issue and the default policy file, not from the engine's code.
    private static readonly HashSet<string> ManagementTypes = ["Encounter", "Claim", "Coverage", "Appointment", "Account", "EpisodeOfCare"];

    private const string Self = "mx-norel-none";

    private static bool Expected(string role, string type, string interaction, bool related, string label, string consent, string patient, bool glass)
    {
        if (glass && role is not ("clinician" or "nurse"))
        {
            return false; // only care roles may break the glass
        }
        return role switch
        {
            "clinician" or "nurse" =>
                (label != "V" || consent == "permit-v")       // V needs a permit in the patient's Consent; break-the-glass does not open it
                && (consent != "deny-actor" || glass)          // the patient's denial of these practitioners yields to an emergency
                && (related || glass),                         // a care relationship, or break-the-glass
            "service" => label == "N",                         // no relationship: N only; the research opt-out is not about treatment
            "management" => interaction != "update" && ManagementTypes.Contains(type) && label == "N",
            "public-health" => false,                          // counts never isolate one record (the matrix asks by _id); what they count: AggregateViewTests
            "patient" => patient == Self && (interaction != "update" || type is "Observation" or "QuestionnaireResponse"), // their own record, every label; writes Consent and what they report
            _ => false,                                        // researcher, security officer, DPO, admin: no clinical data
        };
    }

    private sealed record Case(string Role, string Type, string Interaction, bool Related, string Label, string Consent, bool Glass)
    {
        public override string ToString() => $"{Role} {Interaction} {Type} relationship={Related} label={Label} consent={Consent} glass={Glass}";
    }

    private readonly ConcurrentDictionary<string, HttpClient> _clients = new();

    private HttpClient ClientFor(string role, bool glass) => _clients.GetOrAdd($"{role}/{glass}", _ =>
    {
        var (scopes, patient, fhirUser) = role switch
        {
            "clinician" => ("user/*.cruds", null, PolicyMatrixNode.Clinician),
            "nurse" => ("user/*.cruds", null, PolicyMatrixNode.Nurse),
            "service" => ("system/*.cruds", null, null),
            "patient" => ("patient/*.cruds", Self, "Patient/" + Self),
            _ => ("user/*.cruds", (string?)null, (string?)null),
        };
        // One user breaks the glass, another never does: an opening lasts hours, and must not bleed into the other cases.
        var grant = new AccessGrant($"mx-{role}{(glass ? "-glass" : "")}", "matrix", role, SmartScopes.Parse(scopes), patient, fhirUser);
        var http = node.NewHttp(node.Token(grant));
        if (glass)
        {
            http.DefaultRequestHeaders.Add("Ward-Break-Glass", "Matrix test: unconscious patient in the emergency room");
        }
        return http;
    });

    [Fact]
    public async Task Every_case_of_the_decision_matrix_is_decided_as_the_table_says()
    {
        var cases = (from role in Roles
                     from type in PolicyMatrixNode.Types
                     from interaction in Interactions
                     from related in new[] { true, false }
                     from label in PolicyMatrixNode.Labels
                     from consent in PolicyMatrixNode.Consents
                     from glass in new[] { false, true }
                     select new Case(role, type, interaction, related, label, consent, glass)).ToList();
        Assert.True(cases.Count >= 10_000, $"{cases.Count} cases");
        var unexpectedPermits = new ConcurrentBag<string>();
        var unexpectedDenials = new ConcurrentBag<string>();
        var unnamedRefusals = new ConcurrentBag<string>();
        await Parallel.ForEachAsync(cases, new ParallelOptions { MaxDegreeOfParallelism = 6 }, async (c, ct) =>
        {
            var patient = node.Patients[(c.Related, c.Consent)];
            var id = node.Resources[(patient, c.Type, c.Label)];
            var expected = Expected(c.Role, c.Type, c.Interaction, c.Related, c.Label, c.Consent, patient, c.Glass);
            var (permitted, status, body) = await RunAsync(ClientFor(c.Role, c.Glass), c, patient, id, ct);
            if (permitted && !expected)
            {
                unexpectedPermits.Add($"{c}: {status}");
            }
            else if (!permitted && expected)
            {
                unexpectedDenials.Add($"{c}: {status} {body[..Math.Min(300, body.Length)]}");
            }
            if (status == HttpStatusCode.Forbidden && !body.Contains("rule ", StringComparison.Ordinal) && !body.Contains("token", StringComparison.Ordinal))
            {
                unnamedRefusals.Add($"{c}: {body}");
            }
        });
        Assert.True(unexpectedPermits.IsEmpty, $"{unexpectedPermits.Count} unexpected permits of {cases.Count}, for example:\n" + string.Join('\n', unexpectedPermits.Take(15)));
        Assert.True(unexpectedDenials.IsEmpty, $"{unexpectedDenials.Count} unexpected denials of {cases.Count}, for example:\n" + string.Join('\n', unexpectedDenials.Take(15)));
        Assert.True(unnamedRefusals.IsEmpty, "403s that name no rule:\n" + string.Join('\n', unnamedRefusals.Take(5)));
    }

    /// <summary>Runs one case over HTTP: whether the caller got the resource (read, update) or found it (search, counted by total).</summary>
    private async Task<(bool Permitted, HttpStatusCode Status, string Body)> RunAsync(HttpClient http, Case c, string patient, string id, CancellationToken ct)
    {
        HttpResponseMessage response;
        switch (c.Interaction)
        {
            case "read":
                response = await http.GetAsync($"{node.BaseUrl}/{c.Type}/{id}", ct);
                break;
            case "search":
                // Break-the-glass opens one patient's record: the search names the patient.
                var url = $"{node.BaseUrl}/{c.Type}?_id={id}&_total=accurate" + (c.Role == "public-health" ? "&_summary=count" : "") + (c.Glass ? $"&patient={patient}" : "");
                response = await http.GetAsync(url, ct);
                break;
            default:
                var json = PolicyMatrixNode.Resource(c.Type, id, patient, c.Label);
                response = await http.PutAsync($"{node.BaseUrl}/{c.Type}/{id}", new StringContent(json, Encoding.UTF8, "application/fhir+json"), ct);
                break;
        }
        var body = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
        {
            Assert.True(response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.NotFound, $"{c}: {(int)response.StatusCode} {body}");
            return (false, response.StatusCode, body);
        }
        if (c.Interaction != "search")
        {
            return (true, response.StatusCode, body);
        }
        using var doc = JsonDocument.Parse(body);
        var total = doc.RootElement.TryGetProperty("total", out var t) ? t.GetInt32() : 0;
        Assert.True(total <= 1, $"{c}: total {total}");
        return (total == 1, response.StatusCode, body);
    }
}
