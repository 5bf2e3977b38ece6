using System.Collections.Frozen;
using System.Text.Json;

namespace Ward.Core.Search;

/// <summary>The Patient CompartmentDefinition of FHIR R4: which search parameters put a resource in a patient's compartment.</summary>
internal static class PatientCompartment
{
    private static readonly FrozenDictionary<string, string[]> Params = Load();

    public static IReadOnlyList<string> ParamsFor(string type) => Params.TryGetValue(type, out var p) ? p : [];

    private static FrozenDictionary<string, string[]> Load()
    {
        using var stream = typeof(PatientCompartment).Assembly.GetManifestResourceStream("CompartmentDefinition-patient.json")
            ?? throw new InvalidOperationException("The embedded Patient CompartmentDefinition is missing.");
        using var doc = JsonDocument.Parse(stream);
        var result = new Dictionary<string, string[]>(StringComparer.Ordinal);
        foreach (var r in doc.RootElement.GetProperty("resource").EnumerateArray())
        {
            var code = r.GetProperty("code").GetString()!;
            var ps = r.TryGetProperty("param", out var arr)
                ? arr.EnumerateArray().Select(p => p.GetString()!).Where(p => p != "{def}").ToArray()
                : [];
            result[code] = ps;
        }
        return result.ToFrozenDictionary(StringComparer.Ordinal);
    }
}

/// <summary>Parses literal references of the form <c>Type/id</c> or <c>Type/id/_history/vid</c>.</summary>
internal static class ReferenceParser
{
    public static bool TryParseLocal(string reference, out string type, out string id)
    {
        type = id = "";
        var parts = reference.Split('/');
        if (parts.Length is 2 or 4 && (parts.Length == 2 || parts[2] == "_history") && SearchParameters.IsKnownType(parts[0]) && IsValidId(parts[1]))
        {
            type = parts[0];
            id = parts[1];
            return true;
        }
        return false;
    }

    /// <summary>FHIR id: 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'.</summary>
    public static bool IsValidId(ReadOnlySpan<char> id)
    {
        if (id.Length is 0 or > 64)
        {
            return false;
        }
        foreach (var c in id)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '.'))
            {
                return false;
            }
        }
        return true;
    }
}
