using System.Globalization;
using System.Text;
using System.Text.Json;
using Parquet;
using Parquet.Schema;
using Ward.Core.Crypto;
using Ward.Core.Storage;

namespace Ward.Core.Privacy;

/// <summary>The settings of one research export (<c>ward research export --config FILE.yaml</c>), validated.</summary>
internal sealed record ExportSettings(
    string Project, IReadOnlyList<ResearchTable> Tables, IReadOnlySet<string> Formats, int MaxShiftDays, IReadOnlyList<string> QuasiIdentifiers,
    PrivacyModel Model, LossMetric Metric, string? Sensitive, string? HierarchyFolder, char Separator, double RiskThreshold)
{
    public static readonly string[] KnownFormats = ["parquet", "csv", "ndjson"];

    /// <summary>The quasi-identifiers of the patients table that the configuration does not name: not released at all.</summary>
    public IReadOnlySet<string> Withheld { get; } = ResearchTable.Named("patients").Columns
        .Where(c => c.Kind == ColumnKind.QuasiIdentifier && !QuasiIdentifiers.Contains(c.Name)).Select(c => c.Name).ToHashSet(StringComparer.Ordinal);

    public static ExportSettings Parse(string yaml, string source, string? baseDir = null)
    {
        var doc = Node.Yaml.Read<ExportDocument>(yaml, source);
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(doc.Project) || doc.Project.Any(c => !char.IsAsciiLetterOrDigit(c) && c is not '-' and not '_' and not '.'))
        {
            errors.Add("project: name the project (letters, digits, '-', '_', '.'); its name keys the pseudonyms and date shifts.");
        }
        var tables = new List<ResearchTable>();
        foreach (var name in doc.Tables.Prepend("patients").Distinct(StringComparer.Ordinal))
        {
            if (ResearchTable.All.FirstOrDefault(t => t.Name == name) is { } table)
            {
                tables.Add(table);
            }
            else
            {
                errors.Add($"tables: '{name}' is not a research table ({string.Join(", ", ResearchTable.All.Select(t => t.Name))}).");
            }
        }
        errors.AddRange(doc.Formats.Where(f => !KnownFormats.Contains(f)).Select(f => $"formats: '{f}' is not one of {string.Join(", ", KnownFormats)}."));
        if (doc.Formats.Count == 0)
        {
            errors.Add($"formats: name at least one of {string.Join(", ", KnownFormats)}.");
        }
        if (doc.DateShiftDays is < 0 or > 3650)
        {
            errors.Add("date-shift-days: between 0 (no shift) and 3650.");
        }
        var qiColumns = ResearchTable.Named("patients").Columns.Where(c => c.Kind == ColumnKind.QuasiIdentifier).Select(c => c.Name).ToList();
        errors.AddRange(doc.QuasiIdentifiers.Where(q => !qiColumns.Contains(q)).Select(q => $"quasi-identifiers: '{q}' is not a quasi-identifier of the patients table ({string.Join(", ", qiColumns)})."));
        if (doc.QuasiIdentifiers.Count == 0)
        {
            errors.Add($"quasi-identifiers: name at least one of {string.Join(", ", qiColumns)}.");
        }
        var p = doc.Privacy;
        if (p.K < 1 || p.L < 1 || p.Suppression is < 0 or > 1 || p.T is < 0 or > 1)
        {
            errors.Add("privacy: k and l at least 1, suppression and t between 0 and 1.");
        }
        if ((p.L > 1 || p.T is not null) && (p.Sensitive is null || !ResearchTable.Named("patients").Columns.Any(c => c.Name == p.Sensitive) || doc.QuasiIdentifiers.Contains(p.Sensitive)))
        {
            errors.Add("privacy.sensitive: l-diversity and t-closeness need a sensitive column of the patients table that is not a quasi-identifier (for example deceased).");
        }
        if (!Enum.TryParse<LossMetric>(p.Metric, ignoreCase: true, out var metric) || int.TryParse(p.Metric, out _))
        {
            errors.Add("privacy.metric: one of loss, entropy, dm, aecs, height, precision.");
        }
        if (doc.Separator.Length != 1)
        {
            errors.Add("separator: one character (the hierarchies' field separator).");
        }
        if (errors.Count > 0)
        {
            throw new PrivacyException($"{source} is not a valid export configuration:\n  " + string.Join("\n  ", errors));
        }
        var folder = doc.Hierarchies is null ? null : Path.GetFullPath(doc.Hierarchies, baseDir ?? Directory.GetCurrentDirectory());
        return new ExportSettings(doc.Project!, tables, doc.Formats.ToHashSet(StringComparer.Ordinal), doc.DateShiftDays, doc.QuasiIdentifiers,
            new PrivacyModel(p.K, p.Suppression, p.L, p.T), metric, p.Sensitive, folder, doc.Separator[0], p.RiskThreshold);
    }

    private sealed class ExportDocument
    {
        public string? Project { get; set; }
        public List<string> Tables { get; set; } = [.. ResearchTable.All.Select(t => t.Name)];
        public List<string> Formats { get; set; } = ["parquet", "csv"];
        public int DateShiftDays { get; set; } = 180;
        public List<string> QuasiIdentifiers { get; set; } = ["age", "gender", "department"];
        public PrivacySection Privacy { get; set; } = new();
        public string? Hierarchies { get; set; }
        public string Separator { get; set; } = ";";
    }

    private sealed class PrivacySection
    {
        public int K { get; set; } = 5;
        public double Suppression { get; set; } = 0.05;
        public int L { get; set; } = 1;
        public double? T { get; set; }
        public string? Sensitive { get; set; }
        public string Metric { get; set; } = "loss";
        public double RiskThreshold { get; set; } = 0.2;
    }
}

/// <summary>
/// <c>ward research export</c>: the research tables of one project, de-identified (chosen columns only, project
/// pseudonyms, per-patient date shifts, departments for postal codes), with the patients' quasi-identifiers released
/// under the configured privacy model, written as Parquet, CSV and FHIR NDJSON, with the risk report (JSON and HTML)
/// and the data dictionary.
/// </summary>
internal static class ResearchExport
{
    public sealed record Result(Dictionary<string, int> Rows, int OptedOut, TableAnonymization.Outcome Outcome);

    public static async Task<Result> RunAsync(RecordStore store, Blinder blind, ExportSettings settings, string outDir, DateTime asOf, CancellationToken ct)
    {
        var data = store.Read(s => ResearchData.Load(s, blind, settings.Project, settings.Tables, settings.MaxShiftDays, asOf));
        var patients = ResearchTable.Named("patients");
        var header = patients.Columns.Select(c => c.Name).ToArray();
        var records = data.Rows["patients"].Select(r => r.Select(v => (string)v!).ToArray()).ToList();
        var hierarchies = settings.QuasiIdentifiers.Select(q => HierarchyOf(settings, q, records.Select(r => r[Array.IndexOf(header, q)]))).ToArray();
        var release = TableAnonymization.Anonymize(header, records, settings.QuasiIdentifiers, hierarchies, settings.Model, settings.Metric, settings.Sensitive,
            settings.RiskThreshold, "the patients table");
        data.Rows["patients"] = [.. release.Records.Select(r => r.Select((v, i) => settings.Withheld.Contains(header[i]) ? null : (object?)v).ToArray())];

        Directory.CreateDirectory(outDir);
        foreach (var table in settings.Tables)
        {
            var rows = data.Rows[table.Name];
            if (settings.Formats.Contains("csv"))
            {
                WriteCsv(outDir, table, rows);
            }
            if (settings.Formats.Contains("parquet"))
            {
                await WriteParquetAsync(outDir, table, rows, ct);
            }
            if (settings.Formats.Contains("ndjson"))
            {
                WriteNdjson(outDir, table, rows);
            }
        }
        var counts = settings.Tables.ToDictionary(t => t.Name, t => data.Rows[t.Name].Count, StringComparer.Ordinal);
        var result = new Result(counts, data.OptedOut, release.Outcome);
        WriteDictionary(outDir, settings);
        WriteReport(outDir, settings, result, asOf, records.Count);
        ResearchReportPage.Write(outDir, settings, result, asOf);
        return result;
    }

    /// <summary>The hierarchy of a quasi-identifier: the configured folder's file when it has one, else Ward's built-in one.</summary>
    private static Hierarchy HierarchyOf(ExportSettings settings, string column, IEnumerable<string> values)
    {
        if (settings.HierarchyFolder is { } folder && Directory.GetFiles(folder, $"*_hierarchy_{column}.csv").Length > 0)
        {
            return Hierarchy.Load(folder, column, settings.Separator);
        }
        if (column == "age")
        {
            // 0 to 89, then 90+ (which the 20-year level joins with 80 to 89), and unknown.
            return Hierarchy.Of(column, [.. Enumerable.Range(0, 90).Select(AgeLevels),
                [ResearchData.Over89, ResearchData.Over89, ResearchData.Over89, "[80-100[", "*"],
                [ResearchData.Unknown, ResearchData.Unknown, ResearchData.Unknown, ResearchData.Unknown, "*"]]);
        }
        return Hierarchy.Of(column, [.. values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).Select(v => new[] { v, "*" })]);
    }

    /// <summary>An age, its 5-year, 10-year and 20-year bands, and *.</summary>
    private static string[] AgeLevels(int age)
    {
        static string Band(int age, int width) => $"[{age / width * width}-{age / width * width + width}[";
        return [age.ToString(CultureInfo.InvariantCulture), Band(age, 5), Band(age, 10), Band(age, 20), "*"];
    }

    private static string Cell(object? v) => v switch
    {
        null => "",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        _ => (string)v,
    };

    private static void WriteCsv(string dir, ResearchTable table, List<object?[]> rows)
    {
        var path = Path.Combine(dir, table.Name + ".csv");
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false));
        writer.WriteLine(Csv.Line(table.Columns.Select(c => c.Name).ToArray(), ','));
        foreach (var row in rows)
        {
            writer.WriteLine(Csv.Line(row.Select(Cell).ToArray(), ','));
        }
    }

    private static async Task WriteParquetAsync(string dir, ResearchTable table, List<object?[]> rows, CancellationToken ct)
    {
        var path = Path.Combine(dir, table.Name + ".parquet");
        var fields = table.Columns.Select(c => c.Kind == ColumnKind.Number ? (DataField)new DataField<double?>(c.Name) : new DataField<string>(c.Name)).ToArray();
        var schema = new ParquetSchema(fields);
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream, new ParquetOptions { CompressionMethod = CompressionMethod.Snappy }, false, ct);
        using var group = writer.CreateRowGroup();
        for (var c = 0; c < fields.Length; c++)
        {
            if (table.Columns[c].Kind == ColumnKind.Number)
            {
                await group.WriteAsync<double>(fields[c], rows.Select(r => (double?)r[c]).ToArray(), null, null, ct);
            }
            else
            {
                await group.WriteAsync(fields[c], rows.Select(r => (string)r[c]!).ToArray(), null);
            }
        }
    }

    /// <summary>FHIR R4 resources rebuilt from the released rows only (never the source resources), one per line.</summary>
    private static void WriteNdjson(string dir, ResearchTable table, List<object?[]> rows)
    {
        var path = Path.Combine(dir, table.FhirType + ".ndjson");
        using var stream = File.Create(path);
        var index = table.Columns.Select((c, i) => (c.Name, i)).ToDictionary(x => x.Name, x => x.i);
        string? V(object?[] row, string column) => row[index[column]] as string;
        foreach (var row in rows)
        {
            using (var json = new Utf8JsonWriter(stream))
            {
                json.WriteStartObject();
                json.WriteString("resourceType", table.FhirType);
                if (table.Name == "patients")
                {
                    json.WriteString("id", V(row, "patient"));
                    WriteFhirPatient(json, row, table, index);
                }
                else
                {
                    json.WriteString("id", V(row, "id"));
                    json.WriteStartObject(table.FhirType == "Immunization" ? "patient" : "subject");
                    json.WriteString("reference", "Patient/" + V(row, "patient"));
                    json.WriteEndObject();
                    WriteFhirEvent(json, table, row, index);
                }
                json.WriteEndObject();
            }
            stream.WriteByte((byte)'\n');
        }
    }

    private static void WriteFhirPatient(Utf8JsonWriter json, object?[] row, ResearchTable table, Dictionary<string, int> index)
    {
        string? V(string column) => row[index[column]] as string;
        if (V("gender") is { } gender && gender is "male" or "female" or "other" or "unknown")
        {
            json.WriteString("gender", gender);
        }
        if (V("deceased") is { } deceased)
        {
            json.WriteBoolean("deceasedBoolean", deceased == "yes");
        }
        // Generalised values have no FHIR element of their own: each goes in an extension named after its column.
        var generalised = table.Columns.Where(c => c.Kind == ColumnKind.QuasiIdentifier && V(c.Name) is not null && !(c.Name == "gender" && V("gender") is "male" or "female" or "other" or "unknown")).ToList();
        if (generalised.Count > 0)
        {
            json.WriteStartArray("extension");
            foreach (var c in generalised)
            {
                json.WriteStartObject();
                json.WriteString("url", "urn:ward:research:" + c.Name);
                json.WriteString("valueString", V(c.Name));
                json.WriteEndObject();
            }
            json.WriteEndArray();
        }
    }

    private static void WriteFhirEvent(Utf8JsonWriter json, ResearchTable table, object?[] row, Dictionary<string, int> index)
    {
        object? V(string column) => row[index[column]];
        void Concept(string name, string? system, string? code, string? display, bool array = false)
        {
            if (code is null)
            {
                return;
            }
            if (array)
            {
                json.WriteStartArray(name);
            }
            else
            {
                json.WritePropertyName(name);
            }
            json.WriteStartObject();
            json.WriteStartArray("coding");
            json.WriteStartObject();
            if (system is not null)
            {
                json.WriteString("system", system);
            }
            json.WriteString("code", code);
            if (display is not null)
            {
                json.WriteString("display", display);
            }
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            if (array)
            {
                json.WriteEndArray();
            }
        }
        void Text(string name, object? value)
        {
            if (value is string s)
            {
                json.WriteString(name, s);
            }
        }
        void Period(string name, object? start, object? end)
        {
            if (start is null && end is null)
            {
                return;
            }
            json.WriteStartObject(name);
            Text("start", start);
            Text("end", end);
            json.WriteEndObject();
        }
        switch (table.Name)
        {
            case "conditions":
                Concept("code", V("code_system") as string, V("code") as string, V("display") as string);
                Concept("clinicalStatus", "http://terminology.hl7.org/CodeSystem/condition-clinical", V("clinical_status") as string, null);
                Text("onsetDateTime", V("onset"));
                Text("abatementDateTime", V("abatement"));
                break;
            case "observations":
                json.WriteString("status", "final");
                Concept("category", "http://terminology.hl7.org/CodeSystem/observation-category", V("category") as string, null, array: true);
                Concept("code", V("code_system") as string, V("code") as string, V("display") as string);
                Text("effectiveDateTime", V("effective"));
                if (V("value") is double value)
                {
                    json.WriteStartObject("valueQuantity");
                    json.WriteNumber("value", value);
                    Text("unit", V("unit"));
                    json.WriteEndObject();
                }
                Concept("valueCodeableConcept", null, V("value_code") as string, null);
                break;
            case "encounters":
                json.WriteString("status", "finished");
                if (V("class") is string cls)
                {
                    json.WriteStartObject("class");
                    json.WriteString("system", "http://terminology.hl7.org/CodeSystem/v3-ActCode");
                    json.WriteString("code", cls);
                    json.WriteEndObject();
                }
                Concept("type", null, V("type_code") as string, V("type_display") as string, array: true);
                Period("period", V("start"), V("end"));
                break;
            case "medications":
                Text("status", V("status"));
                json.WriteString("intent", "order");
                Concept("medicationCodeableConcept", V("code_system") as string, V("code") as string, V("display") as string);
                Text("authoredOn", V("authored"));
                break;
            case "procedures":
                json.WriteString("status", "completed");
                Concept("code", V("code_system") as string, V("code") as string, V("display") as string);
                Period("performedPeriod", V("start"), V("end"));
                break;
            case "immunizations":
                json.WriteString("status", "completed");
                Concept("vaccineCode", V("code_system") as string, V("code") as string, V("display") as string);
                Text("occurrenceDateTime", V("date"));
                break;
        }
    }

    private static void WriteDictionary(string dir, ExportSettings settings)
    {
        var path = Path.Combine(dir, "dictionary.csv");
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false));
        writer.WriteLine("table,column,type,transformation,source,description");
        foreach (var table in settings.Tables)
        {
            foreach (var c in table.Columns)
            {
                writer.WriteLine(Csv.Line([table.Name, c.Name, c.Kind == ColumnKind.Number ? "number" : "text", Transformation(settings, c), c.Source, c.Description], ','));
            }
        }
    }

    /// <summary>What was done to a column's values, for the data dictionary.</summary>
    public static string Transformation(ExportSettings settings, ResearchColumn c) => c.Kind switch
    {
        ColumnKind.Pseudonym => "pseudonymised (HMAC-SHA-256, project key)",
        ColumnKind.ShiftedDate => settings.MaxShiftDays == 0 ? "as recorded" : $"shifted by the patient's offset (±1 to {settings.MaxShiftDays} days)",
        ColumnKind.QuasiIdentifier when settings.Withheld.Contains(c.Name) => "withheld (not a configured quasi-identifier)",
        ColumnKind.QuasiIdentifier => $"generalised ({settings.Model.K}-anonymity{(settings.Model.L > 1 ? $", {settings.Model.L}-diversity" : "")}{(settings.Model.T is { } t ? $", {t}-closeness" : "")})",
        _ => "as recorded",
    };

    private static void WriteReport(string dir, ExportSettings settings, Result result, DateTime asOf, int patients)
    {
        var path = Path.Combine(dir, "risk-report.json");
        using var stream = File.Create(path);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("project", settings.Project);
        json.WriteString("exported", asOf.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
        json.WriteNumber("patients", patients);
        json.WriteNumber("optedOut", result.OptedOut);
        json.WriteStartObject("rows");
        foreach (var (table, count) in result.Rows)
        {
            json.WriteNumber(table, count);
        }
        json.WriteEndObject();
        json.WriteStartObject("deidentification");
        json.WriteString("pseudonyms", "HMAC-SHA-256 of the source id under a key derived from the node's index key and the project name: stable within the project, unlinkable across projects");
        json.WriteNumber("dateShiftDays", settings.MaxShiftDays);
        json.WriteString("dateShift", "one offset per patient (never 0), applied to all of the patient's dates: intervals are kept");
        json.WriteString("directIdentifiers", "removed: only the columns of the data dictionary leave the node (no names, identifiers, contact details, addresses, free text, notes, photos, contacts)");
        json.WriteString("postalCodes", "reduced to the department");
        json.WriteEndObject();
        json.WriteStartObject("anonymisation");
        json.WriteString("table", "patients");
        TableAnonymization.WriteOutcome(json, result.Outcome, settings.Model, settings.Metric, settings.Sensitive, settings.RiskThreshold, patients);
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
