using System.Globalization;
using System.Net;
using System.Text;

namespace Ward.Core.Privacy;

/// <summary>The readable risk report of an export: one self-contained HTML page (inline SVG charts, no script, nothing fetched).</summary>
internal static class ResearchReportPage
{
    /// <summary>Class-size buckets of the distribution chart.</summary>
    private static readonly (int From, int To, string Label)[] Buckets =
        [(1, 1, "1"), (2, 4, "2–4"), (5, 9, "5–9"), (10, 19, "10–19"), (20, 49, "20–49"), (50, 99, "50–99"), (100, int.MaxValue, "100+")];

    public static void Write(string dir, ExportSettings settings, ResearchExport.Result result, DateTime asOf)
    {
        var o = result.Outcome;
        var inv = CultureInfo.InvariantCulture;
        var h = new StringBuilder();
        string E(string s) => WebUtility.HtmlEncode(s);
        h.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Risk report: ").Append(E(settings.Project)).Append("</title><style>")
            .Append("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}table{border-collapse:collapse;margin:1rem 0}")
            .Append("td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#f4f4f4}svg text{font-size:12px}")
            .Append("</style></head><body>");
        h.Append("<h1>Research export: ").Append(E(settings.Project)).Append("</h1>");
        h.Append("<p>Exported ").Append(E(asOf.ToString("yyyy-MM-dd HH:mm 'UTC'", inv))).Append(". ")
            .Append(result.Rows["patients"]).Append(" patients; ").Append(result.OptedOut).Append(" left out because their Consent opts out of research.</p>");

        h.Append("<h2>Privacy model</h2><table><tr><th>model</th><td>").Append(settings.Model.K).Append("-anonymity");
        if (settings.Model.L > 1)
        {
            h.Append(", distinct ").Append(settings.Model.L).Append("-diversity of ").Append(E(settings.Sensitive!));
        }
        if (settings.Model.T is { } t)
        {
            h.Append(", ").Append(t.ToString(inv)).Append("-closeness of ").Append(E(settings.Sensitive!));
        }
        h.Append("</td></tr><tr><th>quasi-identifiers</th><td>").Append(E(string.Join(", ", o.Columns.Select((c, i) => $"{c} (level {o.Best.Levels[i]})")))).Append("</td></tr>")
            .Append("<tr><th>suppressed records</th><td>").Append(o.Best.Suppressed).Append(" (limit ").Append(settings.Model.SuppressionLimit.ToString("P0", inv)).Append(")</td></tr>")
            .Append("<tr><th>information loss</th><td>").Append(E(settings.Metric.ToString().ToLowerInvariant())).Append(" = ").Append(o.Best.Value.ToString("G6", inv)).Append("</td></tr>")
            .Append("<tr><th>search</th><td>").Append(o.Evaluated.ToString("N0", inv)).Append(" of ").Append(o.LatticeSize.ToString("N0", inv))
            .Append(o.Optimal ? " transformations: proven optimum" : " transformations: heuristic").Append("</td></tr>")
            .Append("<tr><th>dates</th><td>").Append(settings.MaxShiftDays == 0 ? "not shifted" : $"shifted per patient by ±1 to {settings.MaxShiftDays} days (intervals kept)").Append("</td></tr></table>");

        h.Append("<h2>Re-identification risk</h2><p>Prosecutor model (the attacker knows the person is in the data); records at risk: those whose risk exceeds ")
            .Append(settings.RiskThreshold.ToString("P0", inv)).Append(".</p>");
        var measures = new (string Name, double Before, double After)[]
        {
            ("average risk", o.Before.AverageProsecutor, o.After.AverageProsecutor),
            ("highest risk", o.Before.HighestProsecutor, o.After.HighestProsecutor),
            ("records at risk", o.Before.RecordsAtRisk, o.After.RecordsAtRisk),
            ("sample uniques", o.Before.SampleUniques, o.After.SampleUniques),
        };
        h.Append(Bars(measures.SelectMany(m => new[] { ($"{m.Name}, before", m.Before, "#c0392b"), ($"{m.Name}, after", m.After, "#2e86c1") }).ToList(), v => v.ToString("P1", inv), 1));

        h.Append("<h2>Equivalence classes</h2><p>").Append(o.Best.ClassSizes.Length).Append(" classes of released records");
        if (o.Best.ClassSizes.Length > 0)
        {
            h.Append(", ").Append(o.Best.ClassSizes.Min()).Append(" to ").Append(o.Best.ClassSizes.Max()).Append(" records (mean ").Append(o.Best.ClassSizes.Average().ToString("0.#", inv)).Append(')');
        }
        h.Append(". Records per class size:</p>");
        var distribution = Buckets.Select(b => (b.Label, (double)o.Best.ClassSizes.Where(s => s >= b.From && s <= b.To).Sum(), "#7d3c98")).ToList();
        h.Append(Bars(distribution, v => v.ToString("N0", inv), Math.Max(1, distribution.Max(d => d.Item2))));

        h.Append("<h2>Tables</h2><table><tr><th>table</th><th>rows</th></tr>");
        foreach (var (table, rows) in result.Rows)
        {
            h.Append("<tr><td>").Append(E(table)).Append("</td><td>").Append(rows.ToString("N0", inv)).Append("</td></tr>");
        }
        h.Append("</table><h2>Data dictionary</h2><table><tr><th>table</th><th>column</th><th>transformation</th><th>source</th><th>description</th></tr>");
        foreach (var table in settings.Tables)
        {
            foreach (var c in table.Columns)
            {
                h.Append("<tr><td>").Append(E(table.Name)).Append("</td><td>").Append(E(c.Name)).Append("</td><td>").Append(E(ResearchExport.Transformation(settings, c)))
                    .Append("</td><td>").Append(E(c.Source)).Append("</td><td>").Append(E(c.Description)).Append("</td></tr>");
            }
        }
        h.Append("</table></body></html>\n");
        File.WriteAllText(Path.Combine(dir, "risk-report.html"), h.ToString(), new UTF8Encoding(false));
    }

    /// <summary>A horizontal bar chart: one labelled bar per value, scaled to <paramref name="max"/>.</summary>
    private static string Bars(List<(string Label, double Value, string Colour)> bars, Func<double, string> format, double max)
    {
        const int label = 170, width = 420, row = 22;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{label + width + 90}\" height=\"{bars.Count * row + 4}\" role=\"img\">");
        for (var i = 0; i < bars.Count; i++)
        {
            var (text, value, colour) = bars[i];
            var w = max <= 0 ? 0 : (int)Math.Round(width * Math.Clamp(value / max, 0, 1));
            var y = i * row;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"0\" y=\"{y + 15}\">{WebUtility.HtmlEncode(text)}</text>")
                .Append(CultureInfo.InvariantCulture, $"<rect x=\"{label}\" y=\"{y + 3}\" width=\"{w}\" height=\"{row - 6}\" fill=\"{colour}\"/>")
                .Append(CultureInfo.InvariantCulture, $"<text x=\"{label + w + 6}\" y=\"{y + 15}\">{WebUtility.HtmlEncode(format(value))}</text>");
        }
        return svg.Append("</svg>").ToString();
    }
}
