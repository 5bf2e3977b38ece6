using System.Globalization;
using System.Text.Json;
using Ward.Core.Crypto;
using Ward.Core.Storage;

namespace Ward.Core.Privacy;

/// <summary>How a column's values come out of the source: kept, pseudonymised, shifted in time, or generalised.</summary>
internal enum ColumnKind
{
    Text,
    Number,
    Pseudonym,
    ShiftedDate,
    QuasiIdentifier,
}

/// <summary>One column of a research table, with how it is made (for the data dictionary).</summary>
internal sealed record ResearchColumn(string Name, ColumnKind Kind, string Source, string Description);

/// <summary>
/// One research table: the FHIR type it is made from and its columns. Columns are chosen (a whitelist), never stripped:
/// nothing leaves the node that a column does not name, so names, identifiers, contact details, addresses, free text
/// and notes of the source never reach an export.
/// </summary>
internal sealed record ResearchTable(string Name, string FhirType, IReadOnlyList<ResearchColumn> Columns)
{
    public static readonly IReadOnlyList<ResearchTable> All =
    [
        new("patients", "Patient",
        [
            new("patient", ColumnKind.Pseudonym, "Patient.id", "The patient's pseudonym in this project (HMAC-SHA-256 under the project's key)."),
            new("age", ColumnKind.QuasiIdentifier, "Patient.birthDate", "Age in years at the export (at death for the deceased; over 89 as 90+), generalised as the privacy model requires."),
            new("gender", ColumnKind.QuasiIdentifier, "Patient.gender", "Administrative gender."),
            new("department", ColumnKind.QuasiIdentifier, "Patient.address[0].postalCode", "The postal code reduced to its department (first two characters; three for overseas 97x/98x; 2A/2B for Corsica)."),
            new("race", ColumnKind.QuasiIdentifier, "Patient.extension(us-core-race).text", "Race as recorded (US Core), when present."),
            new("ethnicity", ColumnKind.QuasiIdentifier, "Patient.extension(us-core-ethnicity).text", "Ethnicity as recorded (US Core), when present."),
            new("marital_status", ColumnKind.QuasiIdentifier, "Patient.maritalStatus.coding[0].code", "Marital status code (v3-MaritalStatus)."),
            new("deceased", ColumnKind.Text, "Patient.deceased[x]", "yes when the patient has died, else no."),
        ]),
        new("conditions", "Condition",
        [
            new("id", ColumnKind.Pseudonym, "Condition.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "Condition.subject", "The patient's pseudonym."),
            new("code_system", ColumnKind.Text, "Condition.code.coding[0].system", "Code system."),
            new("code", ColumnKind.Text, "Condition.code.coding[0].code", "Condition code."),
            new("display", ColumnKind.Text, "Condition.code.coding[0].display", "The code's display text (from the terminology, not free text)."),
            new("clinical_status", ColumnKind.Text, "Condition.clinicalStatus.coding[0].code", "active, resolved, ..."),
            new("onset", ColumnKind.ShiftedDate, "Condition.onsetDateTime", "Onset, shifted by the patient's offset."),
            new("abatement", ColumnKind.ShiftedDate, "Condition.abatementDateTime", "Abatement, shifted by the patient's offset."),
        ]),
        new("observations", "Observation",
        [
            new("id", ColumnKind.Pseudonym, "Observation.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "Observation.subject", "The patient's pseudonym."),
            new("category", ColumnKind.Text, "Observation.category[0].coding[0].code", "vital-signs, laboratory, survey, ..."),
            new("code_system", ColumnKind.Text, "Observation.code.coding[0].system", "Code system."),
            new("code", ColumnKind.Text, "Observation.code.coding[0].code", "Observation code (LOINC for most)."),
            new("display", ColumnKind.Text, "Observation.code.coding[0].display", "The code's display text."),
            new("value", ColumnKind.Number, "Observation.valueQuantity.value", "Numeric value, when the value is a quantity."),
            new("unit", ColumnKind.Text, "Observation.valueQuantity.unit", "Unit of the value."),
            new("value_code", ColumnKind.Text, "Observation.valueCodeableConcept.coding[0].code", "Coded value, when the value is a code."),
            new("effective", ColumnKind.ShiftedDate, "Observation.effectiveDateTime", "When, shifted by the patient's offset."),
        ]),
        new("encounters", "Encounter",
        [
            new("id", ColumnKind.Pseudonym, "Encounter.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "Encounter.subject", "The patient's pseudonym."),
            new("class", ColumnKind.Text, "Encounter.class.code", "ambulatory, emergency, inpatient, ..."),
            new("type_code", ColumnKind.Text, "Encounter.type[0].coding[0].code", "Encounter type code."),
            new("type_display", ColumnKind.Text, "Encounter.type[0].coding[0].display", "The type's display text."),
            new("start", ColumnKind.ShiftedDate, "Encounter.period.start", "Start, shifted by the patient's offset."),
            new("end", ColumnKind.ShiftedDate, "Encounter.period.end", "End, shifted by the patient's offset."),
        ]),
        new("medications", "MedicationRequest",
        [
            new("id", ColumnKind.Pseudonym, "MedicationRequest.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "MedicationRequest.subject", "The patient's pseudonym."),
            new("code_system", ColumnKind.Text, "MedicationRequest.medicationCodeableConcept.coding[0].system", "Code system."),
            new("code", ColumnKind.Text, "MedicationRequest.medicationCodeableConcept.coding[0].code", "Medication code (RxNorm for most)."),
            new("display", ColumnKind.Text, "MedicationRequest.medicationCodeableConcept.coding[0].display", "The code's display text."),
            new("status", ColumnKind.Text, "MedicationRequest.status", "active, completed, stopped, ..."),
            new("authored", ColumnKind.ShiftedDate, "MedicationRequest.authoredOn", "When prescribed, shifted by the patient's offset."),
        ]),
        new("procedures", "Procedure",
        [
            new("id", ColumnKind.Pseudonym, "Procedure.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "Procedure.subject", "The patient's pseudonym."),
            new("code_system", ColumnKind.Text, "Procedure.code.coding[0].system", "Code system."),
            new("code", ColumnKind.Text, "Procedure.code.coding[0].code", "Procedure code."),
            new("display", ColumnKind.Text, "Procedure.code.coding[0].display", "The code's display text."),
            new("start", ColumnKind.ShiftedDate, "Procedure.performedPeriod.start | performedDateTime", "Start, shifted by the patient's offset."),
            new("end", ColumnKind.ShiftedDate, "Procedure.performedPeriod.end", "End, shifted by the patient's offset."),
        ]),
        new("immunizations", "Immunization",
        [
            new("id", ColumnKind.Pseudonym, "Immunization.id", "The record's pseudonym in this project."),
            new("patient", ColumnKind.Pseudonym, "Immunization.patient", "The patient's pseudonym."),
            new("code_system", ColumnKind.Text, "Immunization.vaccineCode.coding[0].system", "Code system."),
            new("code", ColumnKind.Text, "Immunization.vaccineCode.coding[0].code", "Vaccine code (CVX for most)."),
            new("display", ColumnKind.Text, "Immunization.vaccineCode.coding[0].display", "The code's display text."),
            new("date", ColumnKind.ShiftedDate, "Immunization.occurrenceDateTime", "When, shifted by the patient's offset."),
        ]),
    ];

    public static ResearchTable Named(string name) => All.FirstOrDefault(t => t.Name == name)
        ?? throw new PrivacyException($"There is no research table '{name}' (tables: {string.Join(", ", All.Select(t => t.Name))}).");
}

/// <summary>
/// The node's data as research may see it, for one project: the patients who did not opt out of research (a Consent
/// in force that denies the purpose HRESCH), each under a project pseudonym and a per-patient date offset, and the rows
/// of the research tables. Everything is derived from the node's index key and the project name, so that a project's
/// exports agree with each other and cannot be linked with another project's.
/// </summary>
internal sealed class ResearchData
{
    private readonly Blinder _blind;
    private readonly string _project;
    private readonly Dictionary<string, (string Pseudonym, int Shift)> _patients = new(StringComparer.Ordinal);

    private ResearchData(Blinder blind, string project, int maxShiftDays, DateTime asOf)
    {
        _blind = blind;
        _project = project;
        MaxShiftDays = maxShiftDays;
        AsOf = asOf;
    }

    public int MaxShiftDays { get; }
    public DateTime AsOf { get; }

    /// <summary>Patients left out because their Consent denies research.</summary>
    public int OptedOut { get; private set; }

    /// <summary>Rows per table (patients first), in the order of the table's columns; null for no value.</summary>
    public Dictionary<string, List<object?[]>> Rows { get; } = new(StringComparer.Ordinal);

    /// <summary>Reads the tables from the store (every current version, decrypted in memory only).</summary>
    public static ResearchData Load(StoreSession s, Blinder blind, string project, IReadOnlyList<ResearchTable> tables, int maxShiftDays, DateTime asOf)
    {
        var data = new ResearchData(blind, project, maxShiftDays, asOf);
        var optedOut = s.ConsentRules([], ["HRESCH"], asOf.Ticks)
            .Where(r => r.Effect == "deny" && r.Actor is null && r.Label is null)
            .Select(r => r.Patient).ToHashSet(StringComparer.Ordinal);
        var patients = new List<object?[]>();
        foreach (var bytes in s.CurrentData("Patient"))
        {
            using var doc = JsonDocument.Parse(bytes);
            var p = doc.RootElement;
            var id = p.GetProperty("id").GetString()!;
            if (optedOut.Contains(id))
            {
                data.OptedOut++;
                continue;
            }
            var pseudonym = blind.Hash('r', "research:" + project, id);
            data._patients[id] = (pseudonym, data.ShiftOf(id));
            patients.Add(data.PatientRow(p, pseudonym));
        }
        data.Rows["patients"] = patients;
        foreach (var table in tables.Where(t => t.Name != "patients"))
        {
            var rows = new List<object?[]>();
            foreach (var bytes in s.CurrentData(table.FhirType))
            {
                using var doc = JsonDocument.Parse(bytes);
                if (data.EventRow(table, doc.RootElement) is { } row)
                {
                    rows.Add(row);
                }
            }
            data.Rows[table.Name] = rows;
        }
        return data;
    }

    /// <summary>The number of days a patient's dates move: in [-max, max], never 0, fixed for the project.</summary>
    private int ShiftOf(string patientId)
    {
        if (MaxShiftDays == 0)
        {
            return 0;
        }
        var h = System.Buffers.Text.Base64Url.DecodeFromChars(_blind.Hash('s', "research-shift:" + _project, patientId));
        var v = (int)(BitConverter.ToUInt32(h, 0) % (uint)(2 * MaxShiftDays));
        return v < MaxShiftDays ? -(v + 1) : v - MaxShiftDays + 1;
    }

    private object?[] PatientRow(JsonElement p, string pseudonym)
    {
        var death = p.TryGetProperty("deceasedDateTime", out var dd) && DateTime.TryParse(dd.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal, out var when) ? when : (DateTime?)null;
        var deceased = death is not null || (p.TryGetProperty("deceasedBoolean", out var db) && db.ValueKind == JsonValueKind.True);
        string? age = null;
        if (Text(p, "birthDate") is { } birth && DateTime.TryParseExact(birth.Length == 4 ? birth + "-07-01" : birth.Length == 7 ? birth + "-15" : birth, "yyyy-MM-dd",
                CultureInfo.InvariantCulture, DateTimeStyles.None, out var born))
        {
            var at = death ?? AsOf;
            var years = at.Year - born.Year - (at.Month < born.Month || (at.Month == born.Month && at.Day < born.Day) ? 1 : 0);
            // HIPAA Safe Harbor: ages over 89 only as one group.
            age = years >= 90 ? Over89 : Math.Max(0, years).ToString(CultureInfo.InvariantCulture);
        }
        var postal = p.TryGetProperty("address", out var addresses) && addresses.ValueKind == JsonValueKind.Array && addresses.GetArrayLength() > 0
            ? Text(addresses[0], "postalCode") : null;
        return
        [
            pseudonym,
            age ?? Unknown,
            Text(p, "gender") ?? Unknown,
            Department(postal) ?? Unknown,
            UsCoreText(p, "us-core-race") ?? Unknown,
            UsCoreText(p, "us-core-ethnicity") ?? Unknown,
            FirstCode(p, "maritalStatus") ?? Unknown,
            deceased ? "yes" : "no",
        ];
    }

    /// <summary>The age of every patient over 89 (HIPAA Safe Harbor).</summary>
    public const string Over89 = "90+";

    /// <summary>The value of a quasi-identifier that the source does not record.</summary>
    public const string Unknown = "unknown";

    /// <summary>A postal code reduced to its French department: two characters, three overseas (97x, 98x), 2A/2B for Corsica (20xxx).</summary>
    public static string? Department(string? postal)
    {
        var code = postal?.Trim();
        if (string.IsNullOrEmpty(code) || code.Length < 2)
        {
            return null;
        }
        if (code.Length >= 3 && (code.StartsWith("97", StringComparison.Ordinal) || code.StartsWith("98", StringComparison.Ordinal)))
        {
            return code[..3];
        }
        if (code.StartsWith("20", StringComparison.Ordinal) && code.Length >= 3 && char.IsAsciiDigit(code[2]))
        {
            return code[2] < '2' ? "2A" : "2B";
        }
        return code[..2];
    }

    private object?[]? EventRow(ResearchTable table, JsonElement r)
    {
        var reference = table.FhirType == "Immunization" ? Reference(r, "patient") : Reference(r, "subject");
        if (reference is null || !reference.StartsWith("Patient/", StringComparison.Ordinal) || !_patients.TryGetValue(reference[8..], out var patient))
        {
            return null;
        }
        var id = _blind.Hash('r', $"research:{_project}:{table.FhirType}", r.GetProperty("id").GetString()!);
        string? Shifted(string? value) => Shift(value, patient.Shift);
        return table.Name switch
        {
            "conditions" => [id, patient.Pseudonym, .. Coding(r, "code"), FirstCode(r, "clinicalStatus"), Shifted(Text(r, "onsetDateTime")), Shifted(Text(r, "abatementDateTime"))],
            "observations" => [id, patient.Pseudonym, FirstCategory(r), .. Coding(r, "code"),
                Quantity(r, "value"), r.TryGetProperty("valueQuantity", out var q) ? Text(q, "unit") : null, FirstCode(r, "valueCodeableConcept"), Shifted(Text(r, "effectiveDateTime"))],
            "encounters" => [id, patient.Pseudonym, r.TryGetProperty("class", out var c) ? Text(c, "code") : null, .. FirstOfArray(r, "type"),
                Shifted(Period(r, "period", "start")), Shifted(Period(r, "period", "end"))],
            "medications" => [id, patient.Pseudonym, .. Coding(r, "medicationCodeableConcept"), Text(r, "status"), Shifted(Text(r, "authoredOn"))],
            "procedures" => [id, patient.Pseudonym, .. Coding(r, "code"), Shifted(Period(r, "performedPeriod", "start") ?? Text(r, "performedDateTime")), Shifted(Period(r, "performedPeriod", "end"))],
            "immunizations" => [id, patient.Pseudonym, .. Coding(r, "vaccineCode"), Shifted(Text(r, "occurrenceDateTime"))],
            _ => throw new PrivacyException($"No extraction for the table '{table.Name}'."),
        };
    }

    /// <summary>
    /// A FHIR date or dateTime moved by whole days, in its own precision: full dates and times exactly (intervals between
    /// a patient's events are kept to the second); a year-month or a year moves with the middle of its period.
    /// </summary>
    public static string? Shift(string? value, int days)
    {
        if (value is null)
        {
            return null;
        }
        var inv = CultureInfo.InvariantCulture;
        switch (value.Length)
        {
            case 4 when int.TryParse(value, NumberStyles.None, inv, out var year):
                return new DateTime(year, 7, 1).AddDays(days).Year.ToString("D4", inv);
            case 7 when DateTime.TryParseExact(value, "yyyy-MM", inv, DateTimeStyles.None, out var month):
                return month.AddDays(14 + days).ToString("yyyy-MM", inv);
            case 10 when DateTime.TryParseExact(value, "yyyy-MM-dd", inv, DateTimeStyles.None, out var date):
                return date.AddDays(days).ToString("yyyy-MM-dd", inv);
        }
        if (DateTimeOffset.TryParse(value, inv, DateTimeStyles.None, out var instant) && value.Length > 10)
        {
            var shifted = instant.AddDays(days);
            var fraction = value.IndexOf('.', StringComparison.Ordinal) > 0 ? ".fff" : "";
            return shifted.ToString($"yyyy-MM-ddTHH:mm:ss{fraction}", inv) + (value.EndsWith('Z') ? "Z" : shifted.ToString("zzz", inv));
        }
        // Not a FHIR date: left out rather than released unshifted.
        return null;
    }

    private static string? Text(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string? Reference(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Object ? Text(v, "reference") : null;

    private static string? Period(JsonElement e, string name, string end) => e.TryGetProperty(name, out var p) && p.ValueKind == JsonValueKind.Object ? Text(p, end) : null;

    private static double? Quantity(JsonElement e, string name) =>
        e.TryGetProperty(name + "Quantity", out var q) && q.TryGetProperty("value", out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    /// <summary>System, code and display of a CodeableConcept's first coding.</summary>
    private static object?[] Coding(JsonElement e, string name) =>
        e.TryGetProperty(name, out var cc) && FirstCoding(cc) is { } c ? [Text(c, "system"), Text(c, "code"), Text(c, "display")] : [null, null, null];

    private static object?[] FirstOfArray(JsonElement e, string name)
    {
        var c = First(e, name) is { } cc ? FirstCoding(cc) : null;
        return c is { } coding ? [Text(coding, "code"), Text(coding, "display")] : [null, null];
    }

    private static string? FirstCode(JsonElement e, string name) =>
        e.TryGetProperty(name, out var cc) && cc.ValueKind == JsonValueKind.Object && FirstCoding(cc) is { } c ? Text(c, "code") : null;

    private static string? FirstCategory(JsonElement e) => First(e, "category") is { } cc && FirstCoding(cc) is { } c ? Text(c, "code") : null;

    private static JsonElement? First(JsonElement e, string name) =>
        e.TryGetProperty(name, out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0 ? a[0] : null;

    private static JsonElement? FirstCoding(JsonElement codeableConcept) =>
        codeableConcept.ValueKind == JsonValueKind.Object ? First(codeableConcept, "coding") : null;

    /// <summary>The text of a US Core race or ethnicity extension.</summary>
    private static string? UsCoreText(JsonElement p, string name)
    {
        if (!p.TryGetProperty("extension", out var extensions) || extensions.ValueKind != JsonValueKind.Array)
        {
            return null;
        }
        foreach (var ext in extensions.EnumerateArray())
        {
            if (Text(ext, "url") is { } url && url.EndsWith("/" + name, StringComparison.Ordinal) && ext.TryGetProperty("extension", out var parts))
            {
                foreach (var part in parts.EnumerateArray())
                {
                    if (Text(part, "url") == "text")
                    {
                        return Text(part, "valueString");
                    }
                }
            }
        }
        return null;
    }
}
