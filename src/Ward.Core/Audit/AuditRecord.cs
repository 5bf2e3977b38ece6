using System.Buffers;
using System.Globalization;
using System.Text.Json;

namespace Ward.Core.Audit;

/// <summary>What kind of activity an audit record describes (its AuditEvent.type).</summary>
internal enum AuditKind
{
    /// <summary>A FHIR REST interaction (read, search, create …), allowed or denied.</summary>
    Rest,

    /// <summary>An authentication: a sign-in, or a request refused for want of a valid token.</summary>
    Login,

    /// <summary>An administrative command (users, clients, token issue, key rotation, erasure).</summary>
    Admin,

    /// <summary>A security alert (DCM 110113): a replayed refresh token, code or client assertion, a rejected assertion, an account locked.</summary>
    SecurityAlert,
}

/// <summary>A resource an audit record is about: a reference (with its version for reads and writes) and, for writes, the stored version's digest.</summary>
internal readonly record struct AuditEntity(string Reference, byte[]? Digest = null);

/// <summary>
/// One audit event before it is sequenced: identifiers only, never names or clinical values (IHE BALP, minimal form).
/// <see cref="ToJson"/> writes it as the FHIR R4 AuditEvent that becomes the Merkle leaf; its id is the log index.
/// </summary>
internal sealed record AuditRecord
{
    public const string UserSystem = "urn:ward:user";
    public const string ClientSystem = "urn:ward:client";
    public const string RoleSystem = "urn:ward:role";
    public const string WardSubtypes = "urn:ward:audit";
    public const string DigestDetail = "sha256";
    public const string BreakGlassDetail = "break-the-glass";

    public required AuditKind Kind { get; init; }

    /// <summary>A FHIR restful-interaction code (read, search-type, create …) for REST; a Ward code for the others.</summary>
    public required string Subtype { get; init; }

    /// <summary>C, R, U, D or E (execute).</summary>
    public required char Action { get; init; }

    /// <summary>The HTTP status the interaction ended with (200 … 503).</summary>
    public required int Status { get; init; }

    public required long RecordedTicks { get; init; }

    /// <summary>The authenticated subject (a user id or a client id), or what a failed sign-in claimed to be; null when unknown.</summary>
    public string? Subject { get; init; }

    public string? Role { get; init; }

    /// <summary>The subject's FHIR identity (Practitioner/…, Patient/…), when the user has one.</summary>
    public string? FhirUser { get; init; }

    public string? ClientId { get; init; }

    public string? Address { get; init; }

    /// <summary>The purpose of use (HL7 v3 ActReason: TREAT, ETREAT …).</summary>
    public string? Purpose { get; init; }

    /// <summary>The justification given for a break-the-glass access (flagged with the BTG security label).</summary>
    public string? BreakGlass { get; init; }

    /// <summary>The patient whose data the event is about; null for events about no patient.</summary>
    public string? Patient { get; init; }

    /// <summary>The search query, identifying values already blinded.</summary>
    public string? Query { get; init; }

    public IReadOnlyList<AuditEntity> Entities { get; init; } = [];

    /// <summary>An administrative action (a command on the data folder, or the node's own scheduled work) by <paramref name="subject"/>.</summary>
    public static AuditRecord Admin(string subtype, char action, string target, string subject, long ticks, string? patient = null, int status = 200) => new()
    {
        Kind = AuditKind.Admin,
        Subtype = subtype,
        Action = action,
        Status = status,
        RecordedTicks = ticks,
        Subject = subject,
        Role = "admin",
        Patient = patient,
        Entities = [new AuditEntity(target)],
    };

    /// <summary>An event of an authenticated caller (REST interactions, and the HTTP APIs beside FHIR); the purpose is the caller's unless given.</summary>
    public static AuditRecord Of(AuditKind kind, Access.AccessGrant caller, string? address, string subtype, char action, int status, long ticks,
        IReadOnlyList<AuditEntity> entities, string? purpose = null, string? patient = null, string? query = null, string? breakGlass = null) => new()
    {
        Kind = kind,
        Subtype = subtype,
        Action = action,
        Status = status,
        RecordedTicks = ticks,
        Subject = caller.Subject,
        Role = caller.Role,
        FhirUser = caller.FhirUser,
        ClientId = caller.ClientId,
        Address = address,
        Purpose = purpose ?? caller.Purpose,
        BreakGlass = breakGlass,
        Patient = patient,
        Query = query,
        Entities = entities,
    };

    /// <summary>BALP outcome: 0 success, 4 minor failure (refused, not found, bad request), 8 serious failure (the server failed).</summary>
    public string Outcome => Status < 400 ? "0" : Status < 500 ? "4" : "8";

    private static readonly JsonWriterOptions Options = new()
    {
        Indented = false,
        SkipValidation = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>
    /// The AuditEvent JSON, the exact bytes hashed into the log: deterministic for a record, and without an id (an entry's
    /// id is its index, which only the log assigns; the FHIR API adds it when it serves the event, see <see cref="WithId"/>).
    /// </summary>
    public byte[] ToJson(string origin)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer, Options))
        {
            w.WriteStartObject();
            w.WriteString("resourceType", "AuditEvent");
            if (BreakGlass is not null)
            {
                w.WriteStartObject("meta");
                w.WriteStartArray("security");
                Coding(w, "http://terminology.hl7.org/CodeSystem/v3-ActCode", "BTG", "break the glass");
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteStartObject("type");
            switch (Kind)
            {
                case AuditKind.Rest: CodingFields(w, "http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"); break;
                case AuditKind.Login: CodingFields(w, "http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication"); break;
                case AuditKind.SecurityAlert: CodingFields(w, "http://dicom.nema.org/resources/ontology/DCM", "110113", "Security Alert"); break;
                default: CodingFields(w, "http://dicom.nema.org/resources/ontology/DCM", "110100", "Application Activity"); break;
            }
            w.WriteEndObject();
            w.WriteStartArray("subtype");
            Coding(w, Kind == AuditKind.Rest ? "http://hl7.org/fhir/restful-interaction" : WardSubtypes, Subtype, null);
            w.WriteEndArray();
            w.WriteString("action", Action.ToString());
            w.WriteString("recorded", new DateTime(RecordedTicks, DateTimeKind.Utc).ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
            w.WriteString("outcome", Outcome);
            w.WriteString("outcomeDesc", Status.ToString(CultureInfo.InvariantCulture));
            if (Purpose is not null)
            {
                w.WriteStartArray("purposeOfEvent");
                Concept(w, "http://terminology.hl7.org/CodeSystem/v3-ActReason", Purpose);
                w.WriteEndArray();
            }
            w.WriteStartArray("agent");
            WriteUser(w);
            if (ClientId is not null)
            {
                w.WriteStartObject();
                w.WriteStartObject("type");
                Codings(w, "http://dicom.nema.org/resources/ontology/DCM", "110153", "Source Role ID");
                w.WriteEndObject();
                w.WriteStartObject("who");
                Identifier(w, ClientSystem, ClientId);
                w.WriteEndObject();
                w.WriteBoolean("requestor", false);
                w.WriteEndObject();
            }
            w.WriteStartObject();
            w.WriteStartObject("type");
            Codings(w, "http://dicom.nema.org/resources/ontology/DCM", "110152", "Destination Role ID");
            w.WriteEndObject();
            w.WriteStartObject("who");
            w.WriteString("display", origin);
            w.WriteEndObject();
            w.WriteBoolean("requestor", false);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteStartObject("source");
            w.WriteStartObject("observer");
            w.WriteString("display", origin);
            w.WriteEndObject();
            w.WriteStartArray("type");
            Coding(w, "http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server");
            w.WriteEndArray();
            w.WriteEndObject();
            WriteEntities(w);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static readonly byte[] Head = System.Text.Encoding.UTF8.GetBytes("{\"resourceType\":\"AuditEvent\",");

    /// <summary>A logged entry as a FHIR resource: its bytes with <c>"id": index</c> added after the resource type.</summary>
    public static byte[] WithId(byte[] entry, long index)
    {
        if (!entry.AsSpan().StartsWith(Head))
        {
            return entry;
        }
        var id = System.Text.Encoding.UTF8.GetBytes($"\"id\":\"{index.ToString(CultureInfo.InvariantCulture)}\",");
        return [.. entry.AsSpan(0, Head.Length), .. id, .. entry.AsSpan(Head.Length)];
    }

    /// <summary>
    /// The patient a logged entry is about (its entity in the role of patient, as <see cref="ToJson"/> writes it), or null:
    /// read from the entry itself, which the audit key authenticates, rather than from an index column.
    /// </summary>
    public static string? PatientOf(byte[] entry)
    {
        using var json = JsonDocument.Parse(entry);
        if (!json.RootElement.TryGetProperty("entity", out var entities) || entities.ValueKind != JsonValueKind.Array)
        {
            return null;
        }
        foreach (var e in entities.EnumerateArray())
        {
            if (e.TryGetProperty("role", out var role) && role.TryGetProperty("code", out var code) && code.ValueEquals("1")
                && e.TryGetProperty("what", out var what) && what.TryGetProperty("reference", out var reference)
                && reference.GetString() is { } r && r.StartsWith("Patient/", StringComparison.Ordinal))
            {
                return r["Patient/".Length..];
            }
        }
        return null;
    }

    private void WriteUser(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteStartObject("type");
        Codings(w, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient");
        w.WriteEndObject();
        if (Role is not null)
        {
            w.WriteStartArray("role");
            Concept(w, RoleSystem, Role);
            w.WriteEndArray();
        }
        w.WriteStartObject("who");
        if (FhirUser is not null)
        {
            w.WriteString("reference", FhirUser);
        }
        if (Subject is not null)
        {
            Identifier(w, ClientId is not null && Subject == ClientId ? ClientSystem : UserSystem, Subject);
        }
        else
        {
            w.WriteString("display", "unauthenticated");
        }
        w.WriteEndObject();
        w.WriteBoolean("requestor", true);
        if (Address is not null)
        {
            w.WriteStartObject("network");
            w.WriteString("address", Address);
            w.WriteString("type", Address.Contains(':') || Address.All(c => char.IsDigit(c) || c == '.') ? "2" : "1");
            w.WriteEndObject();
        }
        if (Purpose is not null)
        {
            w.WriteStartArray("purposeOfUse");
            Concept(w, "http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse", Purpose);
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    private void WriteEntities(Utf8JsonWriter w)
    {
        if (Patient is null && Query is null && BreakGlass is null && Entities.Count == 0)
        {
            return;
        }
        w.WriteStartArray("entity");
        if (Patient is not null)
        {
            Entity(w, $"Patient/{Patient}", "1", "1", "Patient");
            w.WriteEndObject();
        }
        foreach (var e in Entities)
        {
            Entity(w, e.Reference, "2", "4", "Domain Resource");
            if (e.Digest is not null)
            {
                w.WriteStartArray("detail");
                w.WriteStartObject();
                w.WriteString("type", DigestDetail);
                w.WriteBase64String("valueBase64Binary", e.Digest);
                w.WriteEndObject();
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        if (Query is not null)
        {
            Entity(w, null, "2", "24", "Query");
            w.WriteBase64String("query", System.Text.Encoding.UTF8.GetBytes(Query));
            w.WriteEndObject();
        }
        if (BreakGlass is not null)
        {
            Entity(w, null, "2", "13", "Security Resource");
            w.WriteStartArray("detail");
            w.WriteStartObject();
            w.WriteString("type", BreakGlassDetail);
            w.WriteString("valueString", BreakGlass);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>Opens an entity object (the caller closes it).</summary>
    private static void Entity(Utf8JsonWriter w, string? reference, string type, string role, string roleDisplay)
    {
        w.WriteStartObject();
        if (reference is not null)
        {
            w.WriteStartObject("what");
            w.WriteString("reference", reference);
            w.WriteEndObject();
        }
        w.WriteStartObject("type");
        CodingFields(w, "http://terminology.hl7.org/CodeSystem/audit-entity-type", type, null);
        w.WriteEndObject();
        w.WriteStartObject("role");
        CodingFields(w, "http://terminology.hl7.org/CodeSystem/object-role", role, roleDisplay);
        w.WriteEndObject();
    }

    private static void Identifier(Utf8JsonWriter w, string system, string value)
    {
        w.WriteStartObject("identifier");
        w.WriteString("system", system);
        w.WriteString("value", value);
        w.WriteEndObject();
    }

    private static void Concept(Utf8JsonWriter w, string system, string code)
    {
        w.WriteStartObject();
        Codings(w, system, code, null);
        w.WriteEndObject();
    }

    private static void Codings(Utf8JsonWriter w, string system, string code, string? display)
    {
        w.WriteStartArray("coding");
        Coding(w, system, code, display);
        w.WriteEndArray();
    }

    private static void Coding(Utf8JsonWriter w, string system, string code, string? display)
    {
        w.WriteStartObject();
        CodingFields(w, system, code, display);
        w.WriteEndObject();
    }

    private static void CodingFields(Utf8JsonWriter w, string system, string code, string? display)
    {
        w.WriteString("system", system);
        w.WriteString("code", code);
        if (display is not null)
        {
            w.WriteString("display", display);
        }
    }
}
