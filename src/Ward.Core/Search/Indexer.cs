using Ward.Core.Crypto;
using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;

namespace Ward.Core.Search;

internal readonly record struct StringEntry(string Param, string Normalized, string Exact);
internal readonly record struct TokenEntry(string Param, string? System, string? Code, string? Text);
internal readonly record struct RangeEntry(string Param, double Lo, double Hi, string? System = null, string? Code = null);
internal readonly record struct DateEntry(string Param, long Lo, long Hi);
internal readonly record struct UriEntry(string Param, string Value);
internal readonly record struct ReferenceEntry(string Param, string? TargetType, string? TargetId, string? Url);
internal readonly record struct CompositeEntry(string Param, string? System1, string? Code1, string? System2, string? Code2, double? Lo, double? Hi);

/// <summary>Everything a resource version contributes to the search index.</summary>
internal sealed class IndexSet
{
    public List<StringEntry> Strings { get; } = [];
    public List<TokenEntry> Tokens { get; } = [];
    public List<DateEntry> Dates { get; } = [];
    public List<RangeEntry> Numbers { get; } = [];
    public List<RangeEntry> Quantities { get; } = [];
    public List<UriEntry> Uris { get; } = [];
    public List<ReferenceEntry> References { get; } = [];
    public List<CompositeEntry> Composites { get; } = [];
    /// <summary>Ids of the patients whose compartment holds the resource (CompartmentDefinition-patient).</summary>
    public HashSet<string> Patients { get; } = new(StringComparer.Ordinal);
    /// <summary>The enforceable provisions of an active Consent (<see cref="Policy.ConsentRules"/>).</summary>
    public List<Policy.ConsentRule> Consents { get; } = [];

    /// <summary>
    /// The patient whose data key seals the resource: the Patient itself, else the first patient named by the
    /// compartment parameters in the CompartmentDefinition's order; null for resources outside every compartment.
    /// </summary>
    public string? Owner { get; set; }

    /// <summary>
    /// The compartments as the row summarises them for the policy's search filter: the patient when exactly one
    /// compartment holds the resource, <c>*</c> when several do (ix_compartment lists them), null when none.
    /// </summary>
    public string? Compartment => Patients.Count switch { 0 => null, 1 => Patients.First(), _ => "*" };

    /// <summary>Whether the resource has security labels (index rows of <c>_security</c>).</summary>
    public bool Labelled => Tokens.Exists(t => t.Param == "_security");

    /// <summary>Prefix hashes already added (names and addresses share many prefixes).</summary>
    internal HashSet<StringEntry>? BlindPrefixes { get; set; }
}

/// <summary>
/// Extracts index values from a resource by evaluating each search parameter's FHIRPath expression.
/// Identifying parameters are indexed blind: keyed hashes of the normalised value and of each of its prefixes
/// (so that the default starts-with string search still works), and of the exact value.
/// </summary>
internal static class Indexer
{
    public static IndexSet Index(Resource resource, Blinder blind)
    {
        var set = new IndexSet();
        var type = resource.TypeName;
        var node = new Lazy<PocoNode>(() => resource.ToPocoNode(ModelInfo.ModelInspector, null), LazyThreadSafetyMode.None);
        foreach (var sp in SearchParameters.For(type).Values)
        {
            if (sp.Expression is null)
            {
                continue;
            }
            if (sp.Type == ParamType.Composite)
            {
                IndexComposite(resource, sp, set, node);
                continue;
            }
            foreach (var (path, only) in sp.Branches)
            {
                foreach (var n in path.Evaluate(resource, node))
                {
                    if (sp.Blind)
                    {
                        AddBlind(set, sp, n, blind);
                    }
                    else
                    {
                        Add(set, sp, n, only);
                    }
                }
            }
        }
        // A reference that names no resource here (an absolute URL, a canonical, an unresolved conditional reference such
        // as Patient?identifier=...|SSN) is matched only whole: its blind hash is stored, never the text.
        for (var i = 0; i < set.References.Count; i++)
        {
            if (set.References[i] is { Url: { } url } r)
            {
                set.References[i] = r with { Url = BlindUrl(blind, r.Param, url) };
            }
        }
        foreach (var param in PatientCompartment.ParamsFor(type))
        {
            foreach (var r in set.References)
            {
                if (r.Param == param && r.TargetType == "Patient" && r.TargetId is not null)
                {
                    set.Owner ??= r.TargetId;
                    set.Patients.Add(r.TargetId);
                }
            }
        }
        if (type == "Patient" && resource.Id is not null)
        {
            set.Owner = resource.Id;
            set.Patients.Add(resource.Id);
        }
        if (resource is Consent consent)
        {
            set.Consents.AddRange(Policy.ConsentRules.Of(consent));
        }
        return set;
    }

    private static void AddBlind(IndexSet set, SearchParam sp, Base node, Blinder blind)
    {
        var p = sp.Code;
        if (sp.Type == ParamType.String)
        {
            foreach (var s in Strings(node))
            {
                var normalized = SearchValues.Normalize(s);
                for (var length = 1; length < normalized.Length; length++)
                {
                    var prefix = new StringEntry(p, blind.Hash(Blinder.Prefix, p, normalized.AsSpan(0, length)), "");
                    if ((set.BlindPrefixes ??= []).Add(prefix))
                    {
                        set.Strings.Add(prefix);
                    }
                }
                set.Strings.Add(new StringEntry(p, blind.Hash(Blinder.Prefix, p, normalized), blind.Hash(Blinder.Exact, p, s)));
            }
            return;
        }
        foreach (var t in Tokens(node))
        {
            set.Tokens.Add(new TokenEntry(p, t.System, t.Code is null ? null : blind.Hash(Blinder.Token, p, t.Code), null));
        }
    }

    private static void Add(IndexSet set, SearchParam sp, Base node, string? onlyTargetType)
    {
        var p = sp.Code;
        switch (sp.Type)
        {
            case ParamType.String:
                foreach (var s in Strings(node))
                {
                    set.Strings.Add(new StringEntry(p, SearchValues.Normalize(s), s));
                }
                break;
            case ParamType.Token:
                foreach (var t in Tokens(node))
                {
                    set.Tokens.Add(t with { Param = p });
                }
                break;
            case ParamType.Date:
                if (DateRange(node) is { } d)
                {
                    set.Dates.Add(new DateEntry(p, d.Lo, d.Hi));
                }
                break;
            case ParamType.Number:
                if (Number(node) is { } n)
                {
                    set.Numbers.Add(new RangeEntry(p, (double)n, (double)n));
                }
                break;
            case ParamType.Quantity:
                foreach (var q in Quantities(node))
                {
                    set.Quantities.Add(q with { Param = p });
                }
                break;
            case ParamType.Uri:
                if (node is PrimitiveType { JsonValue: string u })
                {
                    set.Uris.Add(new UriEntry(p, u));
                }
                break;
            case ParamType.Reference:
                if (Reference(node) is { } r && (onlyTargetType is null || r.TargetType == onlyTargetType))
                {
                    set.References.Add(r with { Param = p });
                }
                break;
        }
    }

    private static void IndexComposite(Resource resource, SearchParam sp, IndexSet set, Lazy<PocoNode> node)
    {
        foreach (var root in sp.CompositeRoots.SelectMany(r => r.Evaluate(resource, node)))
        {
            var rootNode = new Lazy<PocoNode>(() => root.ToPocoNode(ModelInfo.ModelInspector, null), LazyThreadSafetyMode.None);
            var firsts = sp.Components[0].Paths.SelectMany(p => p.Evaluate(root, rootNode))
                .SelectMany(n => CompositeKeys(sp.Components[0].Type, n)).ToList();
            if (firsts.Count == 0)
            {
                continue;
            }
            foreach (var second in sp.Components[1].Paths.SelectMany(p => p.Evaluate(root, rootNode)))
            {
                foreach (var (s2, c2, lo, hi) in CompositeValues(sp.Components[1].Type, second))
                {
                    foreach (var (s1, c1) in firsts)
                    {
                        set.Composites.Add(new CompositeEntry(sp.Code, s1, c1, s2, c2, lo, hi));
                    }
                }
            }
        }
    }

    private static IEnumerable<(string? System, string? Code)> CompositeKeys(ParamType type, Base node) => type switch
    {
        ParamType.Token => Tokens(node).Select(t => (t.System, t.Code)),
        ParamType.Reference => Reference(node) is { TargetType: not null } r ? [(null, r.TargetType + "/" + r.TargetId)] : [],
        _ => Strings(node).Select(s => ((string?)null, (string?)SearchValues.Normalize(s))),
    };

    internal static IEnumerable<(string? System, string? Code, double? Lo, double? Hi)> CompositeValues(ParamType type, Base node)
    {
        switch (type)
        {
            case ParamType.Quantity:
                foreach (var q in Quantities(node))
                {
                    yield return (q.System, q.Code, q.Lo, q.Hi);
                }
                break;
            case ParamType.Date:
                if (DateRange(node) is { } d)
                {
                    yield return (null, null, d.Lo, d.Hi);
                }
                break;
            case ParamType.Number:
                if (Number(node) is { } n)
                {
                    yield return (null, null, (double)n, (double)n);
                }
                break;
            default:
                foreach (var (s, c) in CompositeKeys(type, node))
                {
                    yield return (s, c, null, null);
                }
                break;
        }
    }

    internal static IEnumerable<string> Strings(Base node)
    {
        switch (node)
        {
            case HumanName n:
                if (n.Text is { } text) yield return text;
                if (n.Family is { } family) yield return family;
                foreach (var g in n.Given ?? []) if (g is not null) yield return g;
                foreach (var g in n.Prefix ?? []) if (g is not null) yield return g;
                foreach (var g in n.Suffix ?? []) if (g is not null) yield return g;
                break;
            case Address a:
                if (a.Text is { } atext) yield return atext;
                foreach (var l in a.Line ?? []) if (l is not null) yield return l;
                if (a.City is { } city) yield return city;
                if (a.District is { } district) yield return district;
                if (a.State is { } state) yield return state;
                if (a.PostalCode is { } postal) yield return postal;
                if (a.Country is { } country) yield return country;
                break;
            case CodeableConcept cc:
                if (cc.Text is { } cctext) yield return cctext;
                foreach (var c in cc.Coding ?? []) if (c.Display is { } display) yield return display;
                break;
            case Coding coding:
                if (coding.Display is { } cdisplay) yield return cdisplay;
                break;
            case PrimitiveType { JsonValue: { } v }:
                yield return Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)!;
                break;
        }
    }

    internal static IEnumerable<TokenEntry> Tokens(Base node)
    {
        switch (node)
        {
            case CodeableConcept cc:
                foreach (var c in cc.Coding ?? [])
                {
                    yield return new TokenEntry("", c.System, c.Code, Text(c.Display ?? cc.Text));
                }
                if (cc.Coding is null or { Count: 0 } && cc.Text is not null)
                {
                    yield return new TokenEntry("", null, null, Text(cc.Text));
                }
                break;
            case Coding c:
                yield return new TokenEntry("", c.System, c.Code, Text(c.Display));
                break;
            case Identifier id:
                yield return new TokenEntry("", id.System, id.Value, Text(id.Type?.Text));
                break;
            case ContactPoint cp:
                yield return new TokenEntry("", cp.System?.ToString().ToLowerInvariant(), cp.Value, null);
                break;
            case FhirBoolean b when b.Value is { } bv:
                yield return new TokenEntry("", null, bv ? "true" : "false", null);
                break;
            case PrimitiveType { JsonValue: { } v }:
                yield return new TokenEntry("", null, Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture), null);
                break;
        }
    }

    private static string? Text(string? s) => s is null ? null : SearchValues.Normalize(s);

    internal static (long Lo, long Hi)? DateRange(Base node)
    {
        switch (node)
        {
            case Period p:
            {
                long lo = DateTime.MinValue.Ticks, hi = DateTime.MaxValue.Ticks;
                if (p.Start is { } s && SearchValues.TryParseDateRange(s, out var sl, out _)) lo = sl;
                if (p.End is { } e && SearchValues.TryParseDateRange(e, out _, out var eh)) hi = eh;
                return p.Start is null && p.End is null ? null : (lo, hi);
            }
            case Timing t:
            {
                long lo = long.MaxValue, hi = long.MinValue;
                foreach (var ev in t.Event ?? [])
                {
                    if (ev is not null && SearchValues.TryParseDateRange(ev, out var l, out var h))
                    {
                        lo = Math.Min(lo, l);
                        hi = Math.Max(hi, h);
                    }
                }
                if (t.Repeat?.Bounds is Period bounds && DateRange(bounds) is { } b)
                {
                    lo = Math.Min(lo, b.Lo);
                    hi = Math.Max(hi, b.Hi);
                }
                return lo <= hi ? (lo, hi) : null;
            }
            case PrimitiveType { JsonValue: { } v }:
            {
                var text = v as string ?? (v is DateTimeOffset dto ? dto.ToString("o", System.Globalization.CultureInfo.InvariantCulture) : Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture));
                return text is not null && SearchValues.TryParseDateRange(text, out var l, out var h) ? (l, h) : null;
            }
            default:
                return null;
        }
    }

    private static decimal? Number(Base node) => node switch
    {
        FhirDecimal d => d.Value,
        Integer i => i.Value,
        UnsignedInt u => u.Value,
        PositiveInt pi => pi.Value,
        Integer64 l => l.Value,
        _ => null,
    };

    internal static IEnumerable<RangeEntry> Quantities(Base node)
    {
        switch (node)
        {
            case Quantity q when q.Value is { } v:
                yield return new RangeEntry("", (double)v, (double)v, q.System, q.Code ?? q.Unit);
                if (q.Unit is { } unit && unit != q.Code)
                {
                    yield return new RangeEntry("", (double)v, (double)v, null, unit);
                }
                break;
            case Money m when m.Value is { } mv:
                yield return new RangeEntry("", (double)mv, (double)mv, "urn:iso:std:iso:4217", m.Currency?.ToString());
                break;
            case Hl7.Fhir.Model.Range r:
                yield return new RangeEntry("", (double)(r.Low?.Value ?? decimal.MinValue), (double)(r.High?.Value ?? decimal.MaxValue),
                    r.Low?.System ?? r.High?.System, r.Low?.Code ?? r.High?.Code);
                break;
            case SampledData sd when sd.Origin?.Value is { } ov:
                yield return new RangeEntry("", (double)ov, (double)ov, sd.Origin.System, sd.Origin.Code);
                break;
        }
    }

    /// <summary>The stored (and searched) form of a reference parameter's URL value.</summary>
    internal static string BlindUrl(Blinder blind, string param, string url) => blind.Hash(Blinder.Url, param, url);

    internal static ReferenceEntry? Reference(Base node)
    {
        string? reference = node switch
        {
            ResourceReference rr => rr.Reference,
            PrimitiveType { JsonValue: string s } => s,
            _ => null,
        };
        if (string.IsNullOrEmpty(reference) || reference[0] == '#')
        {
            return null;
        }
        if (node is not ResourceReference)
        {
            var bar = reference.IndexOf('|');
            return new ReferenceEntry("", null, null, bar > 0 ? reference[..bar] : reference);
        }
        return ReferenceParser.TryParseLocal(reference, out var t, out var id)
            ? new ReferenceEntry("", t, id, null)
            : new ReferenceEntry("", null, null, reference);
    }
}
