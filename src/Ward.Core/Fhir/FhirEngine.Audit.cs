using System.Globalization;
using System.Net;
using System.Text.Json;
using Hl7.Fhir.Model;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// The audit log through the FHIR API: AuditEvent read and search (security officer and data protection officer: all;
/// a patient: their own entries), and <c>Patient/{id}/$access-log</c>, a patient's view of who opened their record,
/// each entry with its inclusion proof against the latest signed checkpoint. The log is written by the node only.
/// </summary>
internal sealed partial class FhirEngine
{
    public const string AccessLog = "$access-log";

    /// <summary>Whether a caller may read the whole audit log.</summary>
    internal static bool ReadsAudit(AccessGrant caller) => caller.Role is "security-officer" or "dpo";

    /// <summary>The patient whose entries alone a caller may read (null: all of them); 403 for callers who may read none.</summary>
    private static string? AuditReach(AccessGrant caller)
    {
        if (ReadsAudit(caller))
        {
            return null;
        }
        if (caller.Role == "patient" && caller.Patient is { } own)
        {
            return own;
        }
        throw FhirException.Forbidden("The audit log is open to the security officer and the data protection officer, and to each patient for their own entries.");
    }

    /// <summary>Refuses any change to AuditEvents (before a body is even read): only the node writes its log.</summary>
    internal static void CheckAuditWrite(string method, string[] segments)
    {
        if (segments is ["AuditEvent", ..] && method != "GET" && !(method == "POST" && segments is [_, "_search"]))
        {
            throw new FhirException(HttpStatusCode.MethodNotAllowed, OperationOutcome.IssueType.NotSupported,
                "AuditEvents are written by the node itself, in an append-only log: they cannot be created, changed or deleted through the API.");
        }
    }

    private FhirResponse AuditEvents(StoreSession s, FhirRequest request, string[] segments)
    {
        CheckAuditWrite(request.Method, segments);
        PermitScope(request.Caller, "AuditEvent", segments.Length == 1 ? Interaction.Search : Interaction.Read);
        var reach = AuditReach(request.Caller);
        switch (segments)
        {
            case [_] or [_, "_search"]:
                return SearchAuditEvents(s, request, reach);
            case [_, var id] when long.TryParse(id, NumberStyles.None, CultureInfo.InvariantCulture, out var index):
                if (s.AuditEntry(index) is not { } data || (reach is not null && AuditRecord.PatientOf(data) != reach))
                {
                    throw FhirException.NotFound($"AuditEvent/{id} does not exist{(reach is null ? "" : " among your entries")}.");
                }
                return new FhirResponse { Status = 200, Body = AuditRecord.WithId(data, index), Location = $"AuditEvent/{id}" };
            default:
                throw FhirException.NotFound($"AuditEvent ids are log indexes (whole numbers); {request.Path} is not one.");
        }
    }

    private FhirResponse SearchAuditEvents(StoreSession s, FhirRequest request, string? reach)
    {
        var where = new List<string>();
        var args = new List<(string Name, object? Value)>();
        var count = SearchQuery.DefaultCount;
        var offset = 0;
        if (reach is not null)
        {
            where.Add("patient = @reach");
            args.Add(("@reach", s.AuditPatientKey(reach)));
        }
        foreach (var (key, value) in request.Query)
        {
            var p = "@p" + args.Count.ToString(CultureInfo.InvariantCulture);
            switch (key)
            {
                case "patient":
                    where.Add($"patient = {p}");
                    args.Add((p, s.AuditPatientKey(value.StartsWith("Patient/", StringComparison.Ordinal) ? value[8..] : value)));
                    break;
                case "agent":
                    where.Add($"(agent = {p} OR agent_ref = {p})");
                    args.Add((p, s.AuditAgentKey(value)));
                    break;
                case "subtype":
                    where.Add($"subtype = {p}");
                    args.Add((p, value[(value.IndexOf('|') + 1)..]));
                    break;
                case "outcome":
                    where.Add($"outcome = {p}");
                    args.Add((p, value[(value.IndexOf('|') + 1)..]));
                    break;
                case "date":
                    var (op, text) = value.Length > 2 && char.IsLetter(value[0]) && char.IsLetter(value[1]) ? (value[..2], value[2..]) : ("eq", value);
                    if (!SearchValues.TryParseDateRange(text, out var lo, out var hi))
                    {
                        throw FhirException.BadRequest($"date={value} is not a FHIR date or dateTime (with an optional prefix such as ge or lt).");
                    }
                    (string sql, long bound) = op switch
                    {
                        "eq" => ($"recorded >= {p} AND recorded <= {p}h", lo),
                        "ge" => ($"recorded >= {p}", lo),
                        "gt" => ($"recorded > {p}", hi),
                        "le" => ($"recorded <= {p}", hi),
                        "lt" => ($"recorded < {p}", lo),
                        _ => throw FhirException.BadRequest($"date supports the prefixes eq, ge, gt, le and lt on AuditEvent, not '{op}'."),
                    };
                    where.Add(sql);
                    args.Add((p, bound));
                    if (op == "eq")
                    {
                        args.Add((p + "h", hi));
                    }
                    break;
                case "_count":
                    count = Math.Clamp(int.TryParse(value, CultureInfo.InvariantCulture, out var c) ? c : count, 0, SearchQuery.MaxCount);
                    break;
                case "_offset":
                    offset = Math.Max(0, int.TryParse(value, CultureInfo.InvariantCulture, out var o) ? o : 0);
                    break;
                case "_format" or "_total":
                    break;
                default:
                    throw FhirException.BadRequest($"AuditEvent search supports patient, agent, date, subtype and outcome (and _count, _offset), not '{key}'.");
            }
        }
        var filter = where.Count == 0 ? "1 = 1" : string.Join(" AND ", where);
        var total = s.AuditCount(filter, args);
        var rows = count == 0 ? [] : s.AuditQuery(filter, args, count, offset);
        using var bundle = new BundleWriter("searchset", NewId(), clock.GetUtcNow());
        bundle.Total(total);
        var self = $"{request.BaseUrl}/AuditEvent";
        var links = new List<(string, string)> { ("self", self + "?" + SearchQuery.Link(request.Query, offset, count)) };
        if (count > 0 && offset + rows.Count < total)
        {
            links.Add(("next", self + "?" + SearchQuery.Link(request.Query, offset + count, count)));
        }
        bundle.Links(links);
        // A patient's entries are found by the blinded column, and served only if the sealed entry itself names them.
        foreach (var (index, data) in rows.Where(r => reach is null || AuditRecord.PatientOf(r.Data) == reach))
        {
            bundle.SearchEntry($"{self}/{index.ToString(CultureInfo.InvariantCulture)}", AuditRecord.WithId(data, index), "match");
        }
        return FhirResponse.Of(200, bundle.ToArray());
    }

    /// <summary>
    /// <c>Patient/{id}/$access-log</c>: the accesses of others to a patient's record, newest first, as a Parameters resource
    /// with the latest checkpoint and, per entry, who (name and role, resolved now), when, what, why, break-the-glass,
    /// the outcome, the logged AuditEvent itself and its inclusion proof, so that the patient can check each entry
    /// against the signed checkpoint without trusting this server.
    /// </summary>
    private FhirResponse AccessLogOf(StoreSession s, FhirRequest request, string patientId)
    {
        var caller = request.Caller;
        if (!ReadsAudit(caller) && !(caller.Role == "patient" && caller.Patient == patientId))
        {
            throw FhirException.Forbidden($"The access log of Patient/{patientId} is open to that patient, the security officer and the data protection officer.");
        }
        request.Trail?.Patient(patientId);
        var (size, note) = s.AuditLatestCheckpoint() ?? throw FhirException.NotFound("The audit log has no checkpoint yet.");
        var count = request.Query.FirstOrDefault(q => q.Key == "_count").Value is { } c && int.TryParse(c, CultureInfo.InvariantCulture, out var n)
            ? Math.Clamp(n, 1, SearchQuery.MaxCount) : 100;
        var rows = s.AuditQuery("patient = @p AND idx < @size AND (agent_ref IS NULL OR agent_ref <> @self)",
            [("@p", s.AuditPatientKey(patientId)), ("@size", size), ("@self", s.AuditAgentKey($"Patient/{patientId}"))], count, 0);
        var result = new Parameters();
        result.Add("checkpoint", new FhirString(note));
        var names = new Dictionary<string, string?>(StringComparer.Ordinal);
        var subtrees = AuditLog.Subtrees(s);
        foreach (var (index, data) in rows)
        {
            using var json = JsonDocument.Parse(data);
            var e = json.RootElement;
            var user = e.GetProperty("agent").EnumerateArray().FirstOrDefault(a => a.TryGetProperty("requestor", out var r) && r.GetBoolean());
            var who = user.ValueKind == JsonValueKind.Object && user.TryGetProperty("who", out var w) ? w : default;
            var fhirUser = who.ValueKind == JsonValueKind.Object && who.TryGetProperty("reference", out var reference) ? reference.GetString() : null;
            var role = user.ValueKind == JsonValueKind.Object && user.TryGetProperty("role", out var roles) ? roles[0].GetProperty("coding")[0].GetProperty("code").GetString() : null;
            var parts = new List<Parameters.ParameterComponent>
            {
                Part("index", new FhirString(index.ToString(CultureInfo.InvariantCulture))),
                Part("recorded", new Instant(DateTimeOffset.Parse(e.GetProperty("recorded").GetString()!, CultureInfo.InvariantCulture))),
                Part("who", new FhirString(DisplayName(s, fhirUser, role, names))),
                Part("what", new FhirString(What(e))),
                Part("outcome", new Code(e.GetProperty("outcome").GetString())),
                Part("breakTheGlass", new FhirBoolean(e.TryGetProperty("meta", out var meta) && meta.GetRawText().Contains("\"BTG\"", StringComparison.Ordinal))),
            };
            if (role is not null)
            {
                parts.Add(Part("role", new Code(role)));
            }
            if (fhirUser is not null)
            {
                parts.Add(Part("agent", new ResourceReference(fhirUser)));
            }
            if (e.TryGetProperty("purposeOfEvent", out var purpose))
            {
                parts.Add(Part("purpose", new Code(purpose[0].GetProperty("coding")[0].GetProperty("code").GetString())));
            }
            parts.Add(Part("event", new Base64Binary(data)));
            parts.Add(Part("proof", new FhirString(string.Join(',', Merkle.InclusionProof(index, size, subtrees).Select(Convert.ToBase64String)))));
            result.Parameter.Add(new Parameters.ParameterComponent { Name = "entry", Part = parts });
        }
        return FhirResponse.Of(200, FhirJson.Serialize(result));
    }

    private static Parameters.ParameterComponent Part(string name, DataType value) => new() { Name = name, Value = value };

    /// <summary>A person's name from their Practitioner (or other FHIR) resource, read now; the role alone when there is none.</summary>
    private static string DisplayName(StoreSession s, string? fhirUser, string? role, Dictionary<string, string?> names)
    {
        string? name = null;
        if (fhirUser is not null && !names.TryGetValue(fhirUser, out name))
        {
            var humanNames = ReferenceParser.TryParseLocal(fhirUser, out var type, out var id) && s.Read(type, id) is { Deleted: false, Data: { } data }
                ? FhirJson.Parse(data) switch
                {
                    Practitioner p => p.Name,
                    Patient p => p.Name,
                    RelatedPerson r => r.Name,
                    _ => null,
                }
                : null;
            name = humanNames?.FirstOrDefault() is { } first
                ? first.Text ?? string.Join(' ', first.Prefix.Concat(first.Given).Append(first.Family).Where(x => !string.IsNullOrEmpty(x)))
                : null;
            names[fhirUser] = name;
        }
        return name ?? (role is null ? "the node" : $"a {role.Replace('-', ' ')}");
    }

    private static string What(JsonElement e)
    {
        var subtype = e.GetProperty("subtype")[0].GetProperty("code").GetString();
        var resources = e.TryGetProperty("entity", out var entities)
            ? entities.EnumerateArray().Where(x => x.GetProperty("role").GetProperty("code").GetString() == "4")
                .Select(x => x.GetProperty("what").GetProperty("reference").GetString()).ToList()
            : [];
        return resources.Count == 0 ? subtype! : $"{subtype} {string.Join(", ", resources.Take(5))}{(resources.Count > 5 ? $" and {resources.Count - 5} more" : "")}";
    }
}
