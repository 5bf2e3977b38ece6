using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Ward.Core.Privacy;

/// <summary>The settings of <c>ward deid kanon</c>.</summary>
internal sealed record TableSettings(
    string Input, char Separator, string HierarchyFolder, IReadOnlyList<string> QuasiIdentifiers, PrivacyModel Model,
    LossMetric Metric, string Output, string Report, string? Sensitive = null, double RiskThreshold = 0.2);

/// <summary>Re-identification risk of a table released as equivalence classes (prosecutor model: the attacker knows the person is in it).</summary>
internal sealed record Risk(double AverageProsecutor, double HighestProsecutor, double RecordsAtRisk, double SampleUniques, double Marketer)
{
    public static Risk Of(IReadOnlyCollection<int> classSizes, double threshold)
    {
        var records = classSizes.Sum();
        if (records == 0)
        {
            return new Risk(0, 0, 0, 0, 0);
        }
        return new Risk(
            AverageProsecutor: (double)classSizes.Count / records,
            HighestProsecutor: 1d / classSizes.Min(),
            RecordsAtRisk: (double)classSizes.Where(s => 1d / s > threshold).Sum() / records,
            SampleUniques: (double)classSizes.Where(s => s == 1).Sum() / records,
            Marketer: (double)classSizes.Count / records);
    }
}

/// <summary>Reads a CSV table, finds the optimal transformation, writes the released table and the risk report.</summary>
internal static class TableAnonymization
{
    public sealed record Outcome(NodeResult Best, Risk Before, Risk After, int Evaluated, long LatticeSize, bool Optimal, IReadOnlyList<string> Columns);

    /// <summary>A released table: the outcome of the search and the records with their quasi-identifiers generalised (suppressed ones as <c>*</c>).</summary>
    public sealed record Release(Outcome Outcome, List<string[]> Records);

    public static Outcome Run(TableSettings s)
    {
        var lines = Csv.Read(s.Input, s.Separator).ToList();
        if (lines.Count < 2)
        {
            throw new PrivacyException($"{s.Input} holds no records (a header line, then one line per record).");
        }
        var header = lines[0];
        var records = lines.Skip(1).Select((fields, i) => fields.Length == header.Length
            ? fields
            : throw new PrivacyException($"Record {i + 1} has {fields.Length} fields; the header has {header.Length}.")).ToList();
        var hierarchies = s.QuasiIdentifiers.Select(q => Hierarchy.Load(s.HierarchyFolder, q, s.Separator)).ToArray();
        var release = Anonymize(header, records, s.QuasiIdentifiers, hierarchies, s.Model, s.Metric, s.Sensitive, s.RiskThreshold, s.Input);
        using (var writer = new StreamWriter(s.Output, false, new UTF8Encoding(false)))
        {
            writer.WriteLine(Csv.Line(header, s.Separator));
            foreach (var record in release.Records)
            {
                writer.WriteLine(Csv.Line(record, s.Separator));
            }
        }
        using var stream = File.Create(s.Report);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        WriteOutcome(json, release.Outcome, s.Model, s.Metric, s.Sensitive, s.RiskThreshold, records.Count);
        json.WriteEndObject();
        return release.Outcome;
    }

    /// <summary>
    /// Finds the optimal transformation of a table in memory: <paramref name="qis"/> name columns of <paramref name="header"/>,
    /// each generalised by the hierarchy at the same position; <paramref name="source"/> names the table in errors.
    /// </summary>
    public static Release Anonymize(string[] header, List<string[]> records, IReadOnlyList<string> qis, Hierarchy[] hierarchies, PrivacyModel model,
        LossMetric metric, string? sensitiveColumn, double riskThreshold, string source)
    {
        if (model.K < 1 || model.SuppressionLimit is < 0 or > 1 || model.L < 1 || model.T is < 0 or > 1)
        {
            throw new PrivacyException("k and l must be at least 1, the suppression limit and t between 0 and 1.");
        }
        if (records.Count == 0)
        {
            throw new PrivacyException($"{source} holds no records.");
        }
        int Column(string name) => Array.IndexOf(header, name) is var c and >= 0 ? c : throw new PrivacyException($"No column '{name}' in {source} (columns: {string.Join(", ", header)}).");
        var qi = qis.Select(Column).ToArray();
        var rows = records.Select((r, i) => qi.Select((c, q) => hierarchies[q].Leaf(r[c], i)).ToArray()).ToList();
        Anonymizer anonymizer;
        if (model.NeedsSensitive)
        {
            var sc = Column(sensitiveColumn ?? throw new PrivacyException("l-diversity and t-closeness need a sensitive column."));
            var codes = new Dictionary<string, int>(StringComparer.Ordinal);
            var sensitive = records.Select(r => codes.TryGetValue(r[sc], out var v) ? v : codes[r[sc]] = codes.Count).ToList();
            anonymizer = new Anonymizer(hierarchies, rows, sensitive, codes.Count);
        }
        else
        {
            anonymizer = new Anonymizer(hierarchies, rows);
        }
        var (best, evaluated, optimal) = anonymizer.Search(model, metric);
        if (best is null)
        {
            throw new PrivacyException($"No transformation of the {anonymizer.LatticeSize:N0} in the lattice satisfies the privacy model within the suppression limit; "
                + "allow more suppression, lower k, l or raise t, or give the hierarchies more levels.");
        }
        var before = anonymizer.Classes(new int[qi.Length]).Select(c => c.Count).ToArray();
        var outcome = new Outcome(best, Risk.Of(before, riskThreshold), Risk.Of(best.ClassSizes, riskThreshold), evaluated, anonymizer.LatticeSize, optimal, qis);
        return new Release(outcome, Generalise(records, rows, qi, hierarchies, anonymizer, best, model));
    }

    /// <param name="rows">Each record's quasi-identifiers as leaf codes, as the search read them.</param>
    private static List<string[]> Generalise(List<string[]> records, List<int[]> rows, int[] qi, Hierarchy[] h, Anonymizer anonymizer, NodeResult best, PrivacyModel model)
    {
        var suppressedTuples = anonymizer.Release(best.Levels, model).Where(c => c.Suppressed).SelectMany(c => c.Tuples).ToHashSet();
        var released = new List<string[]>(records.Count);
        for (var r = 0; r < records.Count; r++)
        {
            var leaves = rows[r];
            var suppressed = suppressedTuples.Contains(anonymizer.TupleOf(leaves));
            var record = (string[])records[r].Clone();
            for (var q = 0; q < qi.Length; q++)
            {
                record[qi[q]] = suppressed ? "*" : h[q].Values[best.Levels[q]][h[q].Map[best.Levels[q]][leaves[q]]];
            }
            released.Add(record);
        }
        return released;
    }

    /// <summary>Writes the properties of a release's report (levels, metric, model, classes, risk, search) into the open JSON object.</summary>
    public static void WriteOutcome(Utf8JsonWriter json, Outcome o, PrivacyModel model, LossMetric metric, string? sensitive, double riskThreshold, int records)
    {
        json.WriteStartObject("levels");
        for (var q = 0; q < o.Columns.Count; q++)
        {
            json.WriteNumber(o.Columns[q], o.Best.Levels[q]);
        }
        json.WriteEndObject();
        json.WriteString("metric", metric.ToString().ToLowerInvariant());
        json.WriteNumber("value", o.Best.Value);
        json.WriteNumber("records", records);
        json.WriteNumber("suppressed", o.Best.Suppressed);
        json.WriteStartObject("model");
        json.WriteNumber("k", model.K);
        json.WriteNumber("suppressionLimit", model.SuppressionLimit);
        if (model.L > 1)
        {
            json.WriteNumber("l", model.L);
        }
        if (model.T is { } t)
        {
            json.WriteNumber("t", t);
        }
        if (sensitive is not null)
        {
            json.WriteString("sensitive", sensitive);
        }
        json.WriteEndObject();
        var sizes = o.Best.ClassSizes;
        json.WriteStartObject("classes");
        json.WriteNumber("count", sizes.Length);
        json.WriteNumber("min", sizes.Length == 0 ? 0 : sizes.Min());
        json.WriteNumber("max", sizes.Length == 0 ? 0 : sizes.Max());
        json.WriteNumber("mean", sizes.Length == 0 ? 0 : sizes.Average());
        json.WriteEndObject();
        json.WriteStartObject("risk");
        json.WriteNumber("threshold", riskThreshold);
        json.WriteString("note", "Prosecutor model over the released records. Without a population table, journalist risk equals prosecutor risk.");
        WriteRisk(json, "before", o.Before);
        WriteRisk(json, "after", o.After);
        json.WriteEndObject();
        json.WriteStartObject("search");
        json.WriteNumber("latticeSize", o.LatticeSize);
        json.WriteNumber("evaluated", o.Evaluated);
        json.WriteString("method", o.Optimal
            ? "exhaustive: every transformation decided, the optimum is proven"
            : $"heuristic (lattice larger than {Anonymizer.ExhaustiveLimit:N0}): greedy specialisation from the most general transformation; a minimal transformation, not proven optimal");
        json.WriteEndObject();
    }

    private static void WriteRisk(Utf8JsonWriter json, string name, Risk r)
    {
        json.WriteStartObject(name);
        json.WriteStartObject("prosecutor");
        json.WriteNumber("average", r.AverageProsecutor);
        json.WriteNumber("highest", r.HighestProsecutor);
        json.WriteNumber("recordsAtRisk", r.RecordsAtRisk);
        json.WriteEndObject();
        json.WriteStartObject("journalist");
        json.WriteNumber("average", r.AverageProsecutor);
        json.WriteNumber("highest", r.HighestProsecutor);
        json.WriteEndObject();
        json.WriteStartObject("marketer");
        json.WriteNumber("average", r.Marketer);
        json.WriteEndObject();
        json.WriteNumber("sampleUniques", r.SampleUniques);
        json.WriteEndObject();
    }
}
