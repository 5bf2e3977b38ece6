using System.Collections.Frozen;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;

namespace Ward.Core.Search;

internal enum ParamType { String, Token, Date, Number, Quantity, Uri, Reference, Composite, Special }

/// <summary>One search parameter of one resource type, with its FHIRPath expression narrowed to that type.</summary>
internal sealed record SearchParam(
    string Resource,
    string Code,
    ParamType Type,
    string Url,
    string? Expression,
    IReadOnlyList<string> Targets,
    IReadOnlyDictionary<string, string> ResolveTypes,
    IReadOnlyList<CompositePart> Components,
    string Description)
{
    /// <summary>True for parameters evaluated against the resource row itself (_id, _lastUpdated).</summary>
    public bool IsIntrinsic => Code is "_id" or "_lastUpdated";

    /// <summary>The expression's union branches, each with the target type it is restricted to (from <c>resolve() is X</c>).</summary>
    public IReadOnlyList<(PathEvaluator Path, string? OnlyTarget)> Branches => _branches ??= Expression is null || Type == ParamType.Composite
        ? []
        : PathEvaluator.Union(Resource, Expression).Select(p => (p, ResolveTypes.GetValueOrDefault(p.Expression))).ToList();

    private IReadOnlyList<(PathEvaluator, string?)>? _branches;

    /// <summary>The root of a composite parameter, from which the components are evaluated.</summary>
    public IReadOnlyList<PathEvaluator> CompositeRoots => _roots ??= Expression is null ? [] : PathEvaluator.Union(Resource, Expression);

    private IReadOnlyList<PathEvaluator>? _roots;

    /// <summary>Identifying: its values are indexed and searched as keyed hashes (see <see cref="IdentifyingParams"/>).</summary>
    public bool Blind => _blind ??= IdentifyingParams.IsIdentifying(this);

    private bool? _blind;
}

internal sealed record CompositePart(ParamType Type, string Expression)
{
    public List<PathEvaluator> Paths { get; } = PathEvaluator.Union(null, Expression);
}

/// <summary>
/// The standard R4 search parameters (Firely's <see cref="ModelInfo.SearchParameters"/>), narrowed per resource type:
/// a union expression is cut to the branches that apply to the type, and <c>.where(resolve() is X)</c> filters,
/// which need a resolver, become a target-type check done by the indexer.
/// </summary>
internal static partial class SearchParameters
{
    private static readonly FrozenDictionary<string, FrozenDictionary<string, SearchParam>> ByType = Build();

    public static IEnumerable<string> ResourceTypes => ByType.Keys.Order(StringComparer.Ordinal);

    public static bool IsKnownType(string type) => ByType.ContainsKey(type);

    public static IReadOnlyDictionary<string, SearchParam> For(string type) =>
        ByType.TryGetValue(type, out var p) ? p : FrozenDictionary<string, SearchParam>.Empty;

    public static SearchParam? Find(string type, string code) =>
        ByType.TryGetValue(type, out var p) && p.TryGetValue(code, out var sp) ? sp : null;

    private static FrozenDictionary<string, FrozenDictionary<string, SearchParam>> Build()
    {
        var byUrl = ModelInfo.SearchParameters.Where(s => s.Url is not null)
            .GroupBy(s => s.Url!).ToDictionary(g => g.Key, g => g.First());
        var result = new Dictionary<string, FrozenDictionary<string, SearchParam>>(StringComparer.Ordinal);
        var types = ModelInfo.SupportedResources.Where(t => ModelInfo.GetTypeForFhirType(t) is { IsAbstract: false }).ToList();
        foreach (var type in types)
        {
            var dict = new Dictionary<string, SearchParam>(StringComparer.Ordinal);
            foreach (var sp in ResourceLevel(type))
            {
                dict[sp.Code] = sp;
            }
            foreach (var def in ModelInfo.SearchParameters.Where(s => s.Resource == type))
            {
                var sp = Narrow(type, def, byUrl);
                if (sp is not null)
                {
                    dict[sp.Code] = sp;
                }
            }
            result[type] = dict.ToFrozenDictionary(StringComparer.Ordinal);
        }
        return result.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private static IEnumerable<SearchParam> ResourceLevel(string type)
    {
        var none = new Dictionary<string, string>();
        yield return new(type, "_id", ParamType.Token, "http://hl7.org/fhir/SearchParameter/Resource-id", null, [], none, [], "Logical id of this resource");
        yield return new(type, "_lastUpdated", ParamType.Date, "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", null, [], none, [], "When the resource version last changed");
        yield return new(type, "_tag", ParamType.Token, "http://hl7.org/fhir/SearchParameter/Resource-tag", type + ".meta.tag", [], none, [], "Tags applied to this resource");
        yield return new(type, "_security", ParamType.Token, "http://hl7.org/fhir/SearchParameter/Resource-security", type + ".meta.security", [], none, [], "Security labels applied to this resource");
        yield return new(type, "_profile", ParamType.Uri, "http://hl7.org/fhir/SearchParameter/Resource-profile", type + ".meta.profile", [], none, [], "Profiles this resource claims to conform to");
        yield return new(type, "_source", ParamType.Uri, "http://hl7.org/fhir/SearchParameter/Resource-source", type + ".meta.source", [], none, [], "Identifies where the resource comes from");
    }

    private static SearchParam? Narrow(string type, SearchParamDefinition def, Dictionary<string, SearchParamDefinition> byUrl)
    {
        if (string.IsNullOrWhiteSpace(def.Expression) || def.Code is null)
        {
            return null;
        }
        var resolveTypes = new Dictionary<string, string>(StringComparer.Ordinal);
        var branches = SplitUnion(def.Expression)
            .Where(b => StartsWithType(b, type))
            .Select(b => StripResolve(b, resolveTypes))
            .ToList();
        if (branches.Count == 0)
        {
            return null;
        }
        var expression = string.Join(" | ", branches);
        var kind = Map(def.Type);
        var components = new List<CompositePart>();
        if (kind == ParamType.Composite)
        {
            foreach (var c in def.Component ?? [])
            {
                if (c.Definition is null || !byUrl.TryGetValue(c.Definition, out var cdef))
                {
                    return null;
                }
                components.Add(new CompositePart(Map(cdef.Type), c.Expression));
            }
            if (components.Count != 2)
            {
                return null;
            }
        }
        var targets = (def.Target ?? []).Select(t => t.ToString()).ToList();
        return new SearchParam(type, def.Code, kind, def.Url ?? "", expression, targets, resolveTypes, components,
            def.Description?.Value ?? def.Code);
    }

    private static ParamType Map(SearchParamType? t) => t switch
    {
        SearchParamType.String => ParamType.String,
        SearchParamType.Token => ParamType.Token,
        SearchParamType.Date => ParamType.Date,
        SearchParamType.Number => ParamType.Number,
        SearchParamType.Quantity => ParamType.Quantity,
        SearchParamType.Uri => ParamType.Uri,
        SearchParamType.Reference => ParamType.Reference,
        SearchParamType.Composite => ParamType.Composite,
        _ => ParamType.Special,
    };

    private static bool StartsWithType(string branch, string type)
    {
        var b = branch.TrimStart('(', ' ');
        return b.StartsWith(type, StringComparison.Ordinal) && (b.Length == type.Length || b[type.Length] is '.' or ' ' or ')');
    }

    /// <summary><c>X.subject.where(resolve() is Patient)</c> becomes <c>X.subject</c>, remembering that only Patient targets count.</summary>
    private static string StripResolve(string branch, Dictionary<string, string> resolveTypes)
    {
        var m = ResolveFilter().Match(branch);
        if (!m.Success)
        {
            return branch;
        }
        var stripped = branch.Remove(m.Index, m.Length);
        resolveTypes[stripped] = m.Groups[1].Value;
        return stripped;
    }

    internal static List<string> SplitUnion(string expression)
    {
        var parts = new List<string>();
        int depth = 0, start = 0;
        bool quoted = false;
        for (var i = 0; i < expression.Length; i++)
        {
            var c = expression[i];
            if (c == '\'')
            {
                quoted = !quoted;
            }
            else if (!quoted && c == '(')
            {
                depth++;
            }
            else if (!quoted && c == ')')
            {
                depth--;
            }
            else if (!quoted && depth == 0 && c == '|')
            {
                parts.Add(expression[start..i].Trim());
                start = i + 1;
            }
        }
        parts.Add(expression[start..].Trim());
        return parts;
    }

    [GeneratedRegex(@"\.where\(resolve\(\) is (\w+)\)")]
    private static partial Regex ResolveFilter();
}
