using System.Text;
using Ward.Core.Audit;
using Ward.Core.Crypto;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// What one FHIR interaction touched, collected as the engine works, then turned into audit records: one per patient
/// touched (plus one about no patient when nothing else), following IHE BALP. Reads name each resource and version,
/// searches and histories name the patients and the query (identifying values blinded), writes name each version with
/// the digest of what was stored.
/// </summary>
internal sealed class AuditTrail
{
    private const string NoPatient = "";
    private readonly FhirRequest _request;
    private readonly Blinder _blind;
    private readonly Dictionary<string, List<AuditEntity>> _byPatient = new(StringComparer.Ordinal);

    public AuditTrail(FhirRequest request, Blinder blind)
    {
        _request = request;
        _blind = blind;
        (Subtype, Action) = Classify(request);
    }

    public string Subtype { get; set; }

    public char Action { get; set; }

    /// <summary>The resource the request named (Type/id), so that a refusal is recorded against it and its patient.</summary>
    public (string Type, string Id)? Target { get; set; }

    /// <summary>Whether the records of the interaction's outcome were made (for the audit log), so that nothing records it a second time.</summary>
    public bool Recorded { get; private set; }

    /// <summary>Whether the interaction reaches no data at all (the CapabilityStatement): nothing to record.</summary>
    public bool Silent => Subtype == "capabilities";

    private bool IsSearch => Subtype is "search-type" or "history-type" or "history-system" or "history-instance" or "operation";

    /// <summary>Forgets what a write attempt collected: the store runs the work again after a conflict.</summary>
    public void Restart() => _byPatient.Clear();

    /// <summary>A resource version returned to the caller.</summary>
    public void Saw(StoredVersion v) => Add(v.Owner, new AuditEntity($"{v.Type}/{v.Id}/_history/{v.Version}"));

    /// <summary>Resources a search, history or operation returned: their patients are named, the query says what was asked.</summary>
    public void Touched(IEnumerable<StoredVersion> versions)
    {
        foreach (var v in versions)
        {
            Patient(v.Owner);
        }
    }

    /// <summary>A patient the interaction concerns even if nothing of theirs was returned (a compartment search, $everything).</summary>
    public void Patient(string? patient)
    {
        if (patient is not null && !_byPatient.ContainsKey(patient))
        {
            _byPatient[patient] = [];
        }
    }

    /// <summary>A version the interaction stored, with the digest the store computed for it.</summary>
    public void Wrote(string type, string id, int version, byte[] digest, string? owner) =>
        Add(owner, new AuditEntity($"{type}/{id}/_history/{version}", digest));

    private void Add(string? patient, AuditEntity entity)
    {
        var key = patient ?? NoPatient;
        if (!_byPatient.TryGetValue(key, out var list))
        {
            _byPatient[key] = list = [];
        }
        list.Add(entity);
    }

    /// <summary>The records of an interaction that ended with <paramref name="status"/>; <paramref name="targetOwner"/> is the refused target's patient.</summary>
    public List<AuditRecord> Records(int status, long ticks, string? targetOwner = null)
    {
        var records = new List<AuditRecord>();
        if (Silent)
        {
            return records;
        }
        Recorded = true;
        var query = IsSearch ? BlindQuery() : null;
        var failed = status >= 400;
        if (failed)
        {
            // Nothing was returned or kept: record the attempt, against the target and its patient when known.
            var target = Target is { } t ? new List<AuditEntity> { new($"{t.Type}/{t.Id}") } : [];
            records.Add(Record(status, ticks, targetOwner ?? (Target is ("Patient", var pid) ? pid : null), query, target));
            return records;
        }
        foreach (var (patient, entities) in _byPatient.Where(p => p.Key != NoPatient))
        {
            records.Add(Record(status, ticks, patient, query, entities));
        }
        // Data of no patient (a Practitioner, an Organization …), or an interaction that touched nothing.
        var shared = _byPatient.GetValueOrDefault(NoPatient);
        if (records.Count == 0 || shared is { Count: > 0 })
        {
            records.Add(Record(status, ticks, null, query, shared ?? []));
        }
        return records;
    }

    private AuditRecord Record(int status, long ticks, string? patient, string? query, IReadOnlyList<AuditEntity> entities) =>
        AuditRecord.Of(AuditKind.Rest, _request.Caller, _request.Address, Subtype, Action, status, ticks, entities,
            _request.Access?.AuditPurpose, patient, query, _request.Access?.GlassUsed);

    /// <summary>
    /// The query as asked, with every value that could identify someone replaced by its blind (HMAC under the index key):
    /// values of identifying parameters, of chained and reverse-chained parameters, and of unknown ones.
    /// </summary>
    private string? BlindQuery()
    {
        if (_request.Query.Count == 0)
        {
            return null;
        }
        var type = _request.Path.Split('/') switch
        {
            [var t] => t,
            [var t, "_search"] => t,
            ["Patient", _, var t] => t,
            [var t, ..] => t,
            [] => "",
        };
        var sb = new StringBuilder();
        foreach (var (key, value) in _request.Query)
        {
            if (sb.Length > 0)
            {
                sb.Append('&');
            }
            sb.Append(Uri.EscapeDataString(key)).Append('=');
            var code = key.Split(':')[0];
            var clear = key.StartsWith('_') && code is not "_has" and not "_content" and not "_text" and not "_filter"
                || (!key.Contains('.') && SearchParameters.IsKnownType(type) && SearchParameters.Find(type, code) is { } sp && !IdentifyingParams.IsIdentifying(sp));
            sb.Append(clear ? Uri.EscapeDataString(value) : "blind:" + _blind.Hash('a', key, value));
        }
        return sb.ToString();
    }

    private static (string Subtype, char Action) Classify(FhirRequest r) => Interaction(r.Method, r.Path);

    /// <summary>The FHIR interaction a method and path name (one of a fixed set of names), with its audit action code.</summary>
    internal static (string Subtype, char Action) Interaction(string method, string path)
    {
        var segments = path.Length == 0 ? [] : path.Split('/');
        return (method, segments) switch
        {
            ("POST", []) => ("batch", 'E'),
            ("GET", ["metadata"]) => ("capabilities", 'R'),
            ("GET", ["_history"]) => ("history-system", 'R'),
            ("GET", [_]) or ("POST", [_, "_search"]) => ("search-type", 'R'),
            ("GET", [_, "_history"]) => ("history-type", 'R'),
            ("GET", [_, _]) => ("read", 'R'),
            ("GET", [_, _, "_history"]) => ("history-instance", 'R'),
            ("GET", [_, _, "_history", _]) => ("vread", 'R'),
            ("GET", [_, _, var op]) when op.StartsWith('$') => ("operation", 'E'),
            ("GET", [_, _, _]) => ("search-type", 'R'),
            ("POST", [_]) => ("create", 'C'),
            ("PUT", _) => ("update", 'U'),
            ("PATCH", _) => ("patch", 'U'),
            ("DELETE", _) => ("delete", 'D'),
            _ => ("operation", 'E'),
        };
    }
}
