using Ward.Core.Search;

namespace Ward.Core.Policy;

/// <summary>
/// The searches the aggregate views answer: management (administrative records, pseudonymised) and public health
/// (counts only). Neither may find a person by who they are, nor combine queries so that their answers differ by one
/// person: no identifying parameter (names, identifiers, telecom, address, birth or death date), no reference to a
/// patient or to a resource of one, no chain, <c>_has</c> or include, no search within one patient's compartment.
/// Counts are asked on fixed dimensions on top (no <c>_id</c>, <c>_lastUpdated</c> or <c>_source</c>): codes and statuses
/// without modifiers that negate, widen or test absence, and dates by whole years, so that differencing queries
/// (<c>code:not</c>, overlapping date ranges, <c>ne</c>) cannot isolate one record; numbers and quantities are not
/// filters of counts (any value slices them as finely as a date).
/// </summary>
internal static class AggregateViews
{
    /// <summary>Parameters that find a person by their birth or death, or records by free text or hand-made lists.</summary>
    private static readonly HashSet<string> Personal = ["birthdate", "death-date", "_text", "_content", "_list", "_filter", "_query"];

    /// <summary>Parameters that slice records one by one (management reads records by id anyway; counts must not).</summary>
    private static readonly HashSet<string> Slicing = ["_id", "_lastUpdated", "_source"];

    /// <summary>Modifiers that turn a count into a difference (negation, absence, hierarchy, value sets, partial matches).</summary>
    private static readonly HashSet<string> Differencing = ["not", "missing", "not-in", "in", "above", "below", "contains", "exact", "identifier", "of-type", "text"];

    /// <summary>Refuses what the caller's aggregate view does not answer; does nothing for other callers.</summary>
    public static void CheckSearch(SearchQuery query, CallerAccess access)
    {
        if (!access.Masked && !access.CountsOnly)
        {
            return;
        }
        var rule = access.Masked ? "view.pseudonymised" : "view.counts-dimensions";
        var view = access.Masked ? "the management view" : "counts for public health";
        Fhir.FhirException Refused(string what) => Decision.Deny(rule, $"{what} {(access.Masked ? "It shows patients only as pseudonyms." : "Counts are asked on codes, statuses and whole years, never on who a person is.")}").Refusal();
        if (query.Includes.Count + query.RevIncludes.Count > 0)
        {
            throw Refused($"_include and _revinclude are not available in {view}.");
        }
        foreach (var c in query.Criteria)
        {
            var parts = c.Name.Split(':');
            var code = parts[0];
            if (code.StartsWith("_has", StringComparison.Ordinal) || code.Contains('.'))
            {
                throw Refused($"'{c.Name}': chained and reverse-chained (_has) searches are not available in {view}.");
            }
            if (SearchParameters.Find(query.Type, code) is not { } sp)
            {
                continue;
            }
            if (sp.Blind || Personal.Contains(code) || access.CountsOnly && Slicing.Contains(code) || sp.Type == ParamType.Reference && (sp.Targets.Count == 0 || sp.Targets.Any(AccessPolicy.PatientData)))
            {
                throw Refused($"'{code}' finds resources by patient, by record or by identifying values, which {view} does not allow.");
            }
            if (access.Masked)
            {
                continue;
            }
            if (parts.Length > 1 && Differencing.Contains(parts[1]))
            {
                throw Refused($"'{c.Name}': the :{parts[1]} modifier makes a count the difference of two others, which could isolate one record.");
            }
            switch (sp.Type)
            {
                case ParamType.Number or ParamType.Quantity or ParamType.Composite:
                    throw Refused($"'{code}' filters by a measured value, which slices counts as finely as it is asked.");
                case ParamType.Date when c.Value.Split(',').Any(v => !WholeYear(v)):
                    throw Refused($"'{code}={c.Value}': dates in counts are whole years (such as {code}=2024 or {code}=ge2020), so that overlapping ranges cannot isolate one record.");
            }
        }
    }

    /// <summary>A date value of a whole year, with an optional comparison prefix other than <c>ne</c> (whose complement is one year less).</summary>
    private static bool WholeYear(string value)
    {
        var v = value.Length > 2 && char.IsAsciiLetter(value[0]) && char.IsAsciiLetter(value[1]) ? value[2..] : value;
        return !value.StartsWith("ne", StringComparison.Ordinal) && !value.StartsWith("ap", StringComparison.Ordinal) && v.Length == 4 && v.All(char.IsAsciiDigit);
    }
}
