using Ward.Core.Search;

namespace Ward.Core.Policy;

/// <summary>
/// The facts in a resource that the access policy trusts to permit access: who is on a patient's CareTeam and while,
/// who took part in an Encounter and when, which practitioner acts in a PractitionerRole and for which organization,
/// a Group's members, a Consent's provisions, a Patient's general practitioner, and for every resource its security
/// labels and the patients whose compartments hold it. A write that creates or changes one of these is a change of
/// who may see what: <see cref="CallerAccess.DecideFacts"/> lets only the roles the policy file names for its kind
/// (<c>facts</c> in <c>policy.yaml</c>) make it, and never a care role through a fact that names the caller.
/// </summary>
internal static class GrantingFacts
{
    public const string CareTeam = "care-team", Encounter = "encounter", PractitionerRole = "practitioner-role", Group = "group",
        Consent = "consent", GeneralPractitioner = "general-practitioner", Labels = "labels", Compartment = "compartment";

    /// <summary>Every kind of fact, as the policy file's <c>facts</c> section names them.</summary>
    public static readonly string[] Kinds = [CareTeam, Encounter, PractitionerRole, Group, Consent, GeneralPractitioner, Labels, Compartment];

    /// <summary>What each kind is, for the policy file's checks and for refusals.</summary>
    public static string Describe(string kind) => kind switch
    {
        CareTeam => "a CareTeam's members, subject, status or period",
        Encounter => "an Encounter's participants, subject, status or period",
        PractitionerRole => "a PractitionerRole's practitioner, organization, status or period",
        Group => "a Group's members",
        Consent => "a Consent",
        GeneralPractitioner => "a Patient's general practitioner",
        Labels => "the security labels of a stored resource (removing one)",
        _ => "the patient a stored resource belongs to",
    };

    /// <summary>The resource types whose content explains access, the kind of fact each carries and the search parameters that hold it.</summary>
    private static readonly Dictionary<string, (string Kind, string[] Params)> Bearing = new(StringComparer.Ordinal)
    {
        ["CareTeam"] = (CareTeam, ["participant", "status", "date"]),
        ["Encounter"] = (Encounter, ["participant", "practitioner", "status", "date"]),
        ["PractitionerRole"] = (PractitionerRole, ["practitioner", "organization", "active", "date"]),
        ["Group"] = (Group, ["member"]),
        ["Consent"] = (Consent, ["status"]),
        ["Patient"] = (GeneralPractitioner, ["general-practitioner"]),
    };

    /// <summary>Confidentiality codes at or below normal: removing one lowers nothing.</summary>
    private static readonly HashSet<string> LowConfidentiality = ["U", "L", "M", "N"];

    /// <summary>Whether a type carries facts of its own beyond labels and compartments (its stored version must be read to compare).</summary>
    public static bool Bears(string type) => Bearing.ContainsKey(type);

    /// <summary>
    /// The kinds of fact a write changes: <paramref name="before"/> is the stored version (null: none, a create),
    /// <paramref name="after"/> the version written (null: a delete). Creating a resource in a compartment, or with
    /// labels, changes nothing (the caller must already be permitted for it, and labels only restrict); removing a
    /// label, moving a stored resource to other patients, and any change of a bearing type's facts do.
    /// </summary>
    public static List<string> Changed(string type, Stored? before, IndexSet? after)
    {
        var changed = new List<string>();
        if (Bearing.TryGetValue(type, out var bearing) && !Of(type, before?.Index).SetEquals(Of(type, after)))
        {
            changed.Add(bearing.Kind);
        }
        if (before is null)
        {
            return changed;
        }
        if (after is null)
        {
            return changed; // deleting data reveals nothing; a bearing type's facts were compared above
        }
        var kept = after.Tokens.Where(t => t.Param == "_security").Select(t => (t.System, t.Code)).ToHashSet();
        if (before.Labels.Any(l => !kept.Contains(l) && !(l.System == AccessPolicy.ConfidentialitySystem && LowConfidentiality.Contains(l.Code ?? ""))))
        {
            changed.Add(Labels);
        }
        if (!after.Patients.SetEquals(before.Patients))
        {
            changed.Add(Compartment);
        }
        return changed;
    }

    /// <summary>The references a version's facts name (members, participants, practitioners, organizations, Consent actors): who the facts may let in.</summary>
    public static HashSet<string> Named(string type, IndexSet? index)
    {
        var named = new HashSet<string>(StringComparer.Ordinal);
        if (index is null || !Bearing.TryGetValue(type, out var bearing))
        {
            return named;
        }
        foreach (var r in index.References)
        {
            if (bearing.Params.Contains(r.Param) && r.TargetType is not null && r.TargetId is not null)
            {
                named.Add($"{r.TargetType}/{r.TargetId}");
            }
        }
        foreach (var rule in index.Consents)
        {
            if (rule.Actor is not null)
            {
                named.Add(rule.Actor);
            }
        }
        return named;
    }

    /// <summary>A bearing type's facts in one version, as comparable strings (empty for none, and for a version that names nobody).</summary>
    private static HashSet<string> Of(string type, IndexSet? index)
    {
        var facts = new HashSet<string>(StringComparer.Ordinal);
        if (index is null || !Bearing.TryGetValue(type, out var bearing))
        {
            return facts;
        }
        var ps = bearing.Params;
        facts.UnionWith(index.References.Where(r => ps.Contains(r.Param)).Select(r => $"ref {r.Param} {r.TargetType}/{r.TargetId} {r.Url}"));
        if (facts.Count == 0 && bearing.Kind != Consent)
        {
            return facts; // a team, encounter, role or group that names nobody explains nobody's access, whatever its status or period
        }
        facts.UnionWith(index.Tokens.Where(t => ps.Contains(t.Param)).Select(t => $"token {t.Param} {t.System}|{t.Code}"));
        facts.UnionWith(index.Dates.Where(d => ps.Contains(d.Param)).Select(d => $"date {d.Param} {d.Lo} {d.Hi}"));
        facts.UnionWith(index.Consents.Select(c => $"consent {c}"));
        if (type != "Patient")
        {
            facts.UnionWith(index.Patients.Select(p => "patient " + p));
        }
        return facts;
    }

    /// <summary>What the policy knew of the stored version a write replaces: its compartments and labels (from the index), and for a bearing type its index re-derived from the sealed version.</summary>
    internal sealed record Stored(IReadOnlyCollection<string> Patients, IReadOnlyCollection<(string? System, string? Code)> Labels, IndexSet? Index);
}
