using System.Reflection;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Core.Search;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using YamlDotNet.Serialization.NamingConventions;

namespace Ward.Core.Policy;

/// <summary>
/// Reads <c>policy.yaml</c>. Before the file is deserialised, every key is checked against the schema (the section
/// classes below) and every name against what it names: roles against the node's roles, purposes against the HL7 v3
/// PurposeOfUse codes the policy supports, types against FHIR R4, and so on. A name that is not one of them is refused
/// with its line and column and the nearest valid name, so that a misspelt <c>clinician</c> or <c>purposes</c> can never
/// leave a role silently without rules.
/// </summary>
internal static class PolicyFile
{
    /// <summary>The HL7 v3 PurposeOfUse codes a role may name.</summary>
    public static readonly string[] PurposeCodes = ["TREAT", "ETREAT", "HOPERAT", "PUBHLTH", "HRESCH", "PATRQT"];
    public static readonly string[] AccessKinds = ["care", "service", "management", "counts", "own", "research", "none"];
    public static readonly string[] Levels = ["N", "R", "V"];
    public static readonly string[] Explanations = ["care-team", "encounter", "general-practitioner"];
    public static readonly string[] GlassOpens = ["relationship", "consent-deny", "very-restricted"];

    /// <summary>What the names at a place of the file must be (<c>*</c> stands for any key of the mapping above).</summary>
    private static readonly Dictionary<string, (string What, IReadOnlyList<string> Names)> Vocabulary = new(StringComparer.Ordinal)
    {
        ["roles"] = ("a role of this node", Roles.All),
        ["roles.*.access"] = ("an access kind", AccessKinds),
        ["roles.*.purposes"] = ("a purpose of use this node knows", PurposeCodes),
        ["roles.*.read"] = ("a FHIR R4 resource type", [.. SearchParameters.ResourceTypes, "*"]),
        ["roles.*.write"] = ("a FHIR R4 resource type", [.. SearchParameters.ResourceTypes, "*"]),
        ["roles.*.max-confidentiality"] = ("a confidentiality level", Levels),
        ["labels.sensitivity.*"] = ("a confidentiality level", Levels),
        ["relationship.explanations"] = ("an explanation of a care relationship", Explanations),
        ["break-glass.opens"] = ("what break-the-glass can override", GlassOpens),
        ["facts"] = ("a kind of fact the policy trusts", GrantingFacts.Kinds),
        ["facts.*"] = ("a role of this node", Roles.All),
    };

    /// <summary>
    /// The policy in <paramref name="yaml"/>. A syntax error or an unknown key is thrown at once (the document cannot be
    /// read); an unknown name goes to <paramref name="errors"/> (with its line and column), so that the caller's checks
    /// of what the names mean together are reported with it.
    /// </summary>
    public static PolicyDocument Read(string yaml, string source, List<string> errors)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException e)
        {
            throw new NodeException($"{source}: {e.Message} (line {e.Start.Line}).");
        }
        if (stream.Documents.Count > 0 && Check(stream.Documents[0].RootNode, typeof(PolicyDocument), "", "", errors) > 0)
        {
            throw Invalid(source, errors);
        }
        return Yaml.Read<PolicyDocument>(yaml, source);
    }

    public static NodeException Invalid(string source, IEnumerable<string> errors) =>
        new($"{source} is not a valid access policy:{Environment.NewLine}  " + string.Join(Environment.NewLine + "  ", errors));

    /// <summary>
    /// Checks <paramref name="node"/>, which should hold a <paramref name="type"/>, at <paramref name="path"/> (as the
    /// messages say it) and <paramref name="pattern"/> (as <see cref="Vocabulary"/> names it). Returns the number of
    /// unknown keys (with which the file cannot be deserialised).
    /// </summary>
    private static int Check(YamlNode node, Type type, string path, string pattern, List<string> errors)
    {
        var unknownKeys = 0;
        if (type == typeof(string) && node is YamlScalarNode scalar)
        {
            CheckName(scalar, path, pattern, errors);
        }
        else if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(List<>) && node is YamlSequenceNode sequence)
        {
            foreach (var item in sequence.Children)
            {
                unknownKeys += Check(item, type.GetGenericArguments()[0], path, pattern, errors);
            }
        }
        else if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>) && node is YamlMappingNode dictionary)
        {
            foreach (var (key, value) in dictionary.Children)
            {
                if (key is YamlScalarNode { Value: { } name } k && CheckName(k, path, pattern, errors))
                {
                    unknownKeys += Check(value, Nullable.GetUnderlyingType(type.GetGenericArguments()[1]) ?? type.GetGenericArguments()[1], Join(path, name), Join(pattern, "*"), errors);
                }
            }
        }
        else if (type.IsClass && type != typeof(string) && !type.IsGenericType && node is YamlMappingNode mapping)
        {
            var properties = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
                .ToDictionary(p => HyphenatedNamingConvention.Instance.Apply(p.Name), StringComparer.Ordinal);
            foreach (var (key, value) in mapping.Children)
            {
                if (key is not YamlScalarNode { Value: { } name })
                {
                    continue;
                }
                if (!properties.TryGetValue(name, out var property))
                {
                    errors.Add(Unknown(key, path, name, $"a key of {(path.Length == 0 ? "the policy" : path)}", [.. properties.Keys]));
                    unknownKeys++;
                    continue;
                }
                var propertyType = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
                unknownKeys += Check(value, propertyType, Join(path, name), Join(pattern, name), errors);
            }
        }
        // Anything else (a number where a list belongs, ...) is left to the deserialiser, whose error names the line.
        return unknownKeys;
    }

    /// <summary>Whether the scalar is a name its place admits (any, where the vocabulary says nothing); else adds the error.</summary>
    private static bool CheckName(YamlScalarNode scalar, string path, string pattern, List<string> errors)
    {
        if (!Vocabulary.TryGetValue(pattern, out var vocabulary) || scalar.Value is not { } value || vocabulary.Names.Contains(value, StringComparer.Ordinal))
        {
            return true;
        }
        errors.Add(Unknown(scalar, path, value, vocabulary.What, vocabulary.Names));
        return false;
    }

    private static string Unknown(YamlNode node, string path, string name, string what, IReadOnlyList<string> valid)
    {
        var nearest = valid.Where(v => v != "*")
            .MinBy(v => Quickenshtein.Levenshtein.GetDistance(name.ToLowerInvariant(), v.ToLowerInvariant()));
        var listed = valid.Count <= 12 ? $" ({string.Join(", ", valid)})" : "";
        return $"line {node.Start.Line}, column {node.Start.Column}: {(path.Length > 0 ? path + ": " : "")}'{name}' is not {what}{listed}; did you mean '{nearest}'?";
    }

    private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";
}

internal sealed class PolicyDocument
{
    public RelationshipSection Relationship { get; set; } = new();
    public LabelSection Labels { get; set; } = new();
    public GlassSection BreakGlass { get; set; } = new();
    public CountSection Counts { get; set; } = new();
    public Dictionary<string, List<string>?>? Facts { get; set; }
    public Dictionary<string, RoleSection> Roles { get; set; } = [];
}

internal sealed class RelationshipSection
{
    public List<string> Explanations { get; set; } = ["care-team", "encounter"];
    public int EncounterWindowDays { get; set; } = 30;
}

internal sealed class LabelSection
{
    public Dictionary<string, string> Sensitivity { get; set; } = [];
}

internal sealed class GlassSection
{
    public int MinJustification { get; set; } = 20;
    public double Hours { get; set; } = 4;
    public List<string> Opens { get; set; } = ["relationship", "consent-deny"];
}

internal sealed class CountSection
{
    public int SmallCell { get; set; } = 10;
}

internal sealed class RoleSection
{
    public string Access { get; set; } = "";
    public List<string> Purposes { get; set; } = [];
    public List<string> Read { get; set; } = [];
    public List<string> Write { get; set; } = [];
    public bool Delete { get; set; }
    public bool BreakGlass { get; set; }
    public string MaxConfidentiality { get; set; } = "N";
}
