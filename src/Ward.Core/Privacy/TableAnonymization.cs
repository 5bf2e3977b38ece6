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

    public static Outcome Run(TableSettings s)
    {
        if (s.Model.K < 1 || s.Model.SuppressionLimit is < 0 or > 1 || s.Model.L < 1 || s.Model.T is < 0 or > 1)
        {
            throw new PrivacyException("k and l must be at least 1, the suppression limit and t between 0 and 1.");
        }
        var lines = Csv.Read(s.Input, s.Separator).ToList();
        if (lines.Count < 2)
        {
            throw new PrivacyException($"{s.Input} holds no records (a header line, then one line per record).");
        }
        var header = lines[0];
        var records = lines.Skip(1).Select((fields, i) => fields.Length == header.Length
            ? fields
            : throw new PrivacyException($"Record {i + 1} has {fields.Length} fields; the header has {header.Length}.")).ToList();
        int Column(string name) => Array.IndexOf(header, name) is var c and >= 0 ? c : throw new PrivacyException($"No column '{name}' in {s.Input} (columns: {string.Join(", ", header)}).");
        var qi = s.QuasiIdentifiers.Select(Column).ToArray();
        var hierarchies = s.QuasiIdentifiers.Select(q => Hierarchy.Load(s.HierarchyFolder, q, s.Separator)).ToArray();
        var rows = records.Select((r, i) => qi.Select((c, q) => hierarchies[q].Leaf(r[c], i)).ToArray()).ToList();
        Anonymizer anonymizer;
        if (s.Model.NeedsSensitive)
        {
            var sc = Column(s.Sensitive ?? throw new PrivacyException("l-diversity and t-closeness need --sensitive COLUMN."));
            var codes = new Dictionary<string, int>(StringComparer.Ordinal);
            var sensitive = records.Select(r => codes.TryGetValue(r[sc], out var v) ? v : codes[r[sc]] = codes.Count).ToList();
            anonymizer = new Anonymizer(hierarchies, rows, sensitive, codes.Count);
        }
        else
        {
            anonymizer = new Anonymizer(hierarchies, rows);
        }
        var (best, evaluated, optimal) = anonymizer.Search(s.Model, s.Metric);
        if (best is null)
        {
            throw new PrivacyException($"No transformation of the {anonymizer.LatticeSize:N0} in the lattice satisfies the privacy model within the suppression limit; "
                + "allow more suppression, lower k, l or raise t, or give the hierarchies more levels.");
        }
        var before = anonymizer.Classes(new int[qi.Length]).Select(c => c.Count).ToArray();
        Write(s, header, records, rows, qi, hierarchies, anonymizer, best);
        var outcome = new Outcome(best, Risk.Of(before, s.RiskThreshold), Risk.Of(best.ClassSizes, s.RiskThreshold), evaluated, anonymizer.LatticeSize, optimal, s.QuasiIdentifiers);
        WriteReport(s, outcome, records.Count);
        return outcome;
    }

    /// <param name="rows">Each record's quasi-identifiers as leaf codes, as the search read them.</param>
    private static void Write(TableSettings s, string[] header, List<string[]> records, List<int[]> rows, int[] qi, Hierarchy[] h, Anonymizer anonymizer, NodeResult best)
    {
        var suppressedTuples = anonymizer.Release(best.Levels, s.Model).Where(c => c.Suppressed).SelectMany(c => c.Tuples).ToHashSet();
        var qiOfColumn = Enumerable.Range(0, header.Length).Select(c => Array.IndexOf(qi, c)).ToArray();
        using var writer = new StreamWriter(s.Output, false, new UTF8Encoding(false));
        writer.WriteLine(Csv.Line(header, s.Separator));
        for (var r = 0; r < records.Count; r++)
        {
            var leaves = rows[r];
            var suppressed = suppressedTuples.Contains(anonymizer.TupleOf(leaves));
            writer.WriteLine(Csv.Line(records[r].Select((value, c) => qiOfColumn[c] is var q and >= 0
                ? suppressed ? "*" : h[q].Values[best.Levels[q]][h[q].Map[best.Levels[q]][leaves[q]]]
                : value), s.Separator));
        }
    }

    private static void WriteReport(TableSettings s, Outcome o, int records)
    {
        using var stream = File.Create(s.Report);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteStartObject("levels");
        for (var q = 0; q < o.Columns.Count; q++)
        {
            json.WriteNumber(o.Columns[q], o.Best.Levels[q]);
        }
        json.WriteEndObject();
        json.WriteString("metric", s.Metric.ToString().ToLowerInvariant());
        json.WriteNumber("value", o.Best.Value);
        json.WriteNumber("records", records);
        json.WriteNumber("suppressed", o.Best.Suppressed);
        json.WriteStartObject("model");
        json.WriteNumber("k", s.Model.K);
        json.WriteNumber("suppressionLimit", s.Model.SuppressionLimit);
        if (s.Model.L > 1)
        {
            json.WriteNumber("l", s.Model.L);
        }
        if (s.Model.T is { } t)
        {
            json.WriteNumber("t", t);
        }
        if (s.Sensitive is not null)
        {
            json.WriteString("sensitive", s.Sensitive);
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
        json.WriteNumber("threshold", s.RiskThreshold);
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
