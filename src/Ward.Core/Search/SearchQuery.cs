using System.Net;
using Hl7.Fhir.Model;
using Hl7.Fhir.Rest;
using Ward.Core.Fhir;

namespace Ward.Core.Search;

internal enum TotalMode { Default, None, Estimate, Accurate }

internal sealed record Criterion(string Name, string Value);

internal sealed record IncludeSpec(string SourceType, string Param, string? TargetType, bool Iterate);

/// <summary>A parsed search: the filtering criteria plus the result parameters (_count, _sort, _include ...).</summary>
internal sealed class SearchQuery
{
    public const int DefaultCount = 20;
    public const int MaxCount = 1000;

    public required string Type { get; init; }
    public List<Criterion> Criteria { get; } = [];
    public List<(string Param, bool Descending)> Sort { get; } = [];
    public int Count { get; set; } = DefaultCount;
    public int Offset { get; set; }
    public TotalMode Total { get; set; }
    public SummaryType Summary { get; set; } = SummaryType.False;
    public bool SummaryCount { get; set; }
    public string[]? Elements { get; set; }
    public List<IncludeSpec> Includes { get; } = [];
    public List<IncludeSpec> RevIncludes { get; } = [];
    public List<string> Warnings { get; } = [];
    public string? CompartmentPatient { get; init; }

    public static SearchQuery Parse(string type, IEnumerable<KeyValuePair<string, string>> parameters, bool strict, string? compartmentPatient = null)
    {
        var q = new SearchQuery { Type = type, CompartmentPatient = compartmentPatient };
        foreach (var (rawKey, value) in parameters)
        {
            var key = rawKey.Trim();
            var bare = key.Split(':')[0];
            switch (bare)
            {
                case "_count":
                    q.Count = ParseInt(key, value, 0, int.MaxValue);
                    q.Count = Math.Min(q.Count, MaxCount);
                    break;
                case "_offset":
                    q.Offset = ParseInt(key, value, 0, int.MaxValue);
                    break;
                case "_sort":
                    foreach (var s in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        var desc = s.StartsWith('-');
                        var name = desc ? s[1..] : s;
                        if (SearchParameters.Find(type, name) is null)
                        {
                            Unknown(q, strict, $"Cannot sort by '{name}': it is not a search parameter of {type}.");
                            continue;
                        }
                        q.Sort.Add((name, desc));
                    }
                    break;
                case "_total":
                    q.Total = value switch
                    {
                        "none" => TotalMode.None,
                        "estimate" => TotalMode.Estimate,
                        "accurate" => TotalMode.Accurate,
                        _ => throw FhirException.BadRequest($"_total must be none, estimate or accurate, not '{value}'."),
                    };
                    break;
                case "_summary":
                    switch (value)
                    {
                        case "true": q.Summary = SummaryType.True; break;
                        case "text": q.Summary = SummaryType.Text; break;
                        case "data": q.Summary = SummaryType.Data; break;
                        case "false": q.Summary = SummaryType.False; break;
                        case "count": q.SummaryCount = true; q.Summary = SummaryType.Count; break;
                        default: throw FhirException.BadRequest($"_summary must be true, text, data, count or false, not '{value}'.");
                    }
                    break;
                case "_elements":
                    q.Elements = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    break;
                case "_include":
                case "_revinclude":
                    var spec = ParseInclude(key, value);
                    if (spec is null)
                    {
                        Unknown(q, strict, $"Cannot use {key}={value}: expected SourceType:parameter[:TargetType] with a reference parameter.");
                        break;
                    }
                    (bare == "_include" ? q.Includes : q.RevIncludes).Add(spec);
                    break;
                case "_format":
                case "_pretty":
                    break;
                default:
                    if (bare.StartsWith("_has", StringComparison.Ordinal) || bare.Contains('.'))
                    {
                        q.Criteria.Add(new Criterion(key, value));
                    }
                    else if (SearchParameters.Find(type, bare) is null)
                    {
                        Unknown(q, strict, $"The search parameter '{bare}' is not supported for {type}; it was ignored.");
                    }
                    else
                    {
                        q.Criteria.Add(new Criterion(key, value));
                    }
                    break;
            }
        }
        return q;
    }

    private static void Unknown(SearchQuery q, bool strict, string message)
    {
        if (strict)
        {
            throw new FhirException(HttpStatusCode.BadRequest, OperationOutcome.IssueType.NotSupported, message);
        }
        q.Warnings.Add(message);
    }

    private static IncludeSpec? ParseInclude(string key, string value)
    {
        var iterate = key.EndsWith(":iterate", StringComparison.Ordinal) || key.EndsWith(":recurse", StringComparison.Ordinal);
        var parts = value.Split(':');
        if (parts.Length is < 2 or > 3 || !SearchParameters.IsKnownType(parts[0]))
        {
            return null;
        }
        if (parts[1] != "*" && SearchParameters.Find(parts[0], parts[1]) is not { Type: ParamType.Reference })
        {
            return null;
        }
        if (parts.Length == 3 && !SearchParameters.IsKnownType(parts[2]))
        {
            return null;
        }
        return new IncludeSpec(parts[0], parts[1], parts.Length == 3 ? parts[2] : null, iterate);
    }

    internal static int ParseInt(string key, string value, int min, int max) =>
        int.TryParse(value, out var n) && n >= min && n <= max
            ? n
            : throw FhirException.BadRequest($"{key} must be a whole number of at least {min}, not '{value}'.");

    /// <summary>The query string that reproduces this search at another offset (stable paging links).</summary>
    public static string Link(IEnumerable<KeyValuePair<string, string>> original, int offset, int count)
    {
        var kept = original.Where(kv => kv.Key is not ("_offset" or "_count"))
            .Select(kv => Uri.EscapeDataString(kv.Key) + "=" + Uri.EscapeDataString(kv.Value))
            .Append("_count=" + count)
            .Append("_offset=" + offset);
        return string.Join("&", kept);
    }

    /// <summary>Splits a parameter value on commas that are not escaped with a backslash.</summary>
    public static List<string> SplitOr(string value, char separator = ',')
    {
        var parts = new List<string>();
        var current = new System.Text.StringBuilder();
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c == '\\' && i + 1 < value.Length && value[i + 1] is ',' or '$' or '|' or '\\')
            {
                current.Append('\\').Append(value[++i]);
            }
            else if (c == separator)
            {
                parts.Add(current.ToString());
                current.Clear();
            }
            else
            {
                current.Append(c);
            }
        }
        parts.Add(current.ToString());
        return parts;
    }

    /// <summary>Removes search escapes once a value has been split.</summary>
    public static string Unescape(string value) =>
        value.Contains('\\') ? value.Replace("\\,", ",").Replace("\\$", "$").Replace("\\|", "|").Replace("\\\\", "\\") : value;
}
