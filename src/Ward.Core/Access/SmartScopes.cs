using System.Diagnostics.CodeAnalysis;

namespace Ward.Core.Access;

/// <summary>The FHIR REST interactions a SMART v2 scope grants, by its letters <c>c r u d s</c>.</summary>
[Flags]
internal enum Interaction
{
    None = 0,
    Create = 1,
    Read = 2,
    Update = 4,
    Delete = 8,
    Search = 16,
    All = Create | Read | Update | Delete | Search,
}

/// <summary>How far a grant reaches for one interaction on one resource type.</summary>
internal enum Reach
{
    /// <summary>Not granted.</summary>
    None,
    /// <summary>Only within the compartment of the patient in context (<c>patient/</c> scopes).</summary>
    Patient,
    /// <summary>Whatever the caller may otherwise see (<c>user/</c> and <c>system/</c> scopes; the policy engine narrows it).</summary>
    Any,
}

/// <summary>One resource scope: <c>patient/Observation.rs</c>, <c>user/*.read</c>, <c>system/*.cruds</c>.</summary>
internal readonly record struct ResourceScope(string Text, string Context, string Type, Interaction Interactions)
{
    public Reach Reach => Context == "patient" ? Reach.Patient : Reach.Any;
}

/// <summary>
/// The SMART App Launch 2 scopes of a request or token: resource scopes in both grammars (v1 <c>read</c>/<c>write</c>/<c>*</c>
/// and v2 <c>cruds</c> letters), plus the launch and identity scopes (<c>openid</c>, <c>fhirUser</c>, <c>launch/patient</c>,
/// <c>offline_access</c> …). Granular v2 scopes with a query (<c>?category=…</c>) are refused rather than widened.
/// </summary>
internal sealed class SmartScopes
{
    /// <summary>Scopes that are not resource scopes and that this node understands.</summary>
    public static readonly IReadOnlySet<string> Known = new HashSet<string>(StringComparer.Ordinal)
    {
        "openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
    };

    private readonly ResourceScope[] _resources;

    private SmartScopes(string[] all, ResourceScope[] resources)
    {
        All = all;
        _resources = resources;
    }

    /// <summary>Every scope, in the order given, without duplicates.</summary>
    public IReadOnlyList<string> All { get; }

    public IReadOnlyList<ResourceScope> Resources => _resources;

    public bool Has(string scope) => All.Contains(scope);

    /// <summary>Whether any scope is bound to the patient in context (so that the token needs one).</summary>
    public bool NeedsPatient => _resources.Any(r => r.Context == "patient");

    public static SmartScopes Parse(string? text)
    {
        if (!TryParse(text, out var scopes, out var error))
        {
            throw new ArgumentException(error);
        }
        return scopes;
    }

    public static bool TryParse(string? text, [NotNullWhen(true)] out SmartScopes? scopes, [NotNullWhen(false)] out string? error)
    {
        var all = new List<string>();
        var resources = new List<ResourceScope>();
        foreach (var scope in (text ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (all.Contains(scope))
            {
                continue;
            }
            if (!Known.Contains(scope))
            {
                if (!TryParseResource(scope, out var r, out error))
                {
                    scopes = null;
                    return false;
                }
                resources.Add(r);
            }
            all.Add(scope);
        }
        scopes = new SmartScopes([.. all], [.. resources]);
        error = null;
        return true;
    }

    private static bool TryParseResource(string scope, out ResourceScope parsed, [NotNullWhen(false)] out string? error)
    {
        parsed = default;
        var slash = scope.IndexOf('/');
        var dot = scope.LastIndexOf('.');
        if (slash <= 0 || dot <= slash + 1 || dot == scope.Length - 1)
        {
            error = $"'{scope}' is not a scope this node knows: use SMART scopes such as patient/Observation.rs, user/*.read, system/*.cruds, openid, fhirUser, launch/patient, offline_access.";
            return false;
        }
        var context = scope[..slash];
        var type = scope[(slash + 1)..dot];
        var verbs = scope[(dot + 1)..];
        if (context is not ("patient" or "user" or "system"))
        {
            error = $"'{scope}': the context must be patient/, user/ or system/.";
            return false;
        }
        if (verbs.Contains('?'))
        {
            error = $"'{scope}': granular scopes with search parameters are not supported by this node; ask for the whole resource type.";
            return false;
        }
        if (type != "*" && !Search.SearchParameters.IsKnownType(type))
        {
            error = $"'{scope}': '{type}' is not a FHIR R4 resource type.";
            return false;
        }
        var interactions = verbs switch
        {
            "read" => Interaction.Read | Interaction.Search,
            "write" => Interaction.Create | Interaction.Update | Interaction.Delete,
            "*" => Interaction.All,
            _ => Letters(verbs),
        };
        if (interactions == Interaction.None)
        {
            error = $"'{scope}': the permissions must be read, write, * or the letters c, r, u, d, s in that order (for example .rs or .cruds).";
            return false;
        }
        parsed = new ResourceScope(scope, context, type, interactions);
        error = null;
        return true;
    }

    /// <summary>SMART v2 permission letters, each at most once and in the order c r u d s; None when malformed.</summary>
    private static Interaction Letters(string verbs)
    {
        const string order = "cruds";
        var result = Interaction.None;
        var last = -1;
        foreach (var c in verbs)
        {
            var i = order.IndexOf(c, StringComparison.Ordinal);
            if (i <= last)
            {
                return Interaction.None;
            }
            last = i;
            result |= (Interaction)(1 << i);
        }
        return result;
    }

    /// <summary>The widest reach any scope gives for this interaction on this type (on "*": what wildcard scopes give on every type).</summary>
    public Reach ReachOf(string type, Interaction interaction)
    {
        var reach = Reach.None;
        foreach (var r in _resources)
        {
            if ((r.Type == "*" || r.Type == type) && (r.Interactions & interaction) == interaction && r.Reach > reach)
            {
                reach = r.Reach;
            }
        }
        return reach;
    }

    /// <summary>Whether every scope here is also granted by <paramref name="allowed"/> (the scopes a client is registered for).</summary>
    public bool IsWithin(SmartScopes allowed, [NotNullWhen(false)] out string? outside)
    {
        foreach (var scope in All)
        {
            var inside = allowed.Has(scope) || _resources.FirstOrDefault(r => r.Text == scope) is { Text: not null } r
                && allowed._resources.Any(a => a.Context == r.Context && (a.Type == "*" || a.Type == r.Type) && (a.Interactions & r.Interactions) == r.Interactions);
            if (!inside)
            {
                outside = scope;
                return false;
            }
        }
        outside = null;
        return true;
    }

    public override string ToString() => string.Join(' ', All);
}
