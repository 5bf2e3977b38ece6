using System.Text.RegularExpressions;
using Hl7.Fhir.Model;

namespace Ward.Core.Search;

/// <summary>
/// Which search parameters carry identifying values and are therefore indexed blind (HMAC under the index key):
/// every string or token parameter of the person resources, and any string or token parameter whose path passes
/// through a HumanName, Address, ContactPoint or Identifier (names, address parts, telecom, identifiers).
/// </summary>
internal static partial class IdentifyingParams
{
    private static readonly HashSet<string> PersonTypes = ["Patient", "Practitioner", "RelatedPerson", "Person"];
    private static readonly HashSet<string> IdentifyingTypes = ["HumanName", "Address", "ContactPoint", "Identifier"];

    public static bool IsIdentifying(SearchParam sp)
    {
        if (sp.Type is not (ParamType.String or ParamType.Token) || sp.Code.StartsWith('_') || sp.Expression is null)
        {
            return false;
        }
        return PersonTypes.Contains(sp.Resource) || SearchParameters.SplitUnion(sp.Expression).Any(PassesThroughIdentifyingType);
    }

    /// <summary>Walks a branch such as <c>Organization.address.city</c> or <c>X.telecom.where(system='phone')</c> over the FHIR model.</summary>
    internal static bool PassesThroughIdentifyingType(string branch)
    {
        var path = Functions().Replace(branch.Trim('(', ')', ' '), "");
        var cast = path.IndexOf(" as ", StringComparison.Ordinal);
        if (cast > 0)
        {
            return IdentifyingTypes.Contains(path[(cast + 4)..].Trim(' ', ')')) || PassesThroughIdentifyingType(path[..cast]);
        }
        var steps = path.Split('.');
        var mapping = ModelInfo.ModelInspector.FindClassMapping(steps[0]);
        foreach (var step in steps.Skip(1))
        {
            if (mapping is null)
            {
                return false;
            }
            var asType = AsType().Match(step);
            if (asType.Success)
            {
                mapping = ModelInfo.ModelInspector.FindClassMapping(asType.Groups[1].Value);
                if (mapping is not null && IdentifyingTypes.Contains(mapping.Name))
                {
                    return true;
                }
                continue;
            }
            var element = mapping.FindMappedElementByName(step) ?? mapping.FindMappedElementByChoiceName(step);
            if (element is null)
            {
                return false;
            }
            var types = element.FhirType.Select(t => ModelInfo.ModelInspector.FindOrImportClassMapping(t)).OfType<Hl7.Fhir.Introspection.ClassMapping>().ToList();
            if (types.Any(t => IdentifyingTypes.Contains(t.Name)))
            {
                return true;
            }
            mapping = types.Count == 1 ? types[0] : null;
        }
        return false;
    }

    // Filters that do not change the type: where(...), first(), exists() ...
    [GeneratedRegex(@"\.(where|exists|first|last)\((?:[^()]|\([^()]*\))*\)")]
    private static partial Regex Functions();

    [GeneratedRegex(@"^(?:as|ofType)\((\w+)\)$")]
    private static partial Regex AsType();
}
