using System.Globalization;
using System.Text;
using Ward.Core.Access;
using Ward.Core.Fhir;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Policy;

/// <summary>
/// The policy applied to one request: the caller's role, purpose of use and break-the-glass justification, and the
/// facts about patients that the decisions need (care relationships, open break-the-glass, Consent rules), loaded once
/// per request from the store. It decides single resources (<see cref="Decide"/>) and writes the same decision as a SQL
/// predicate for searches (<see cref="RowFilter"/>), so that totals, paging and counts see only what is permitted.
/// </summary>
internal sealed class CallerAccess
{
    private readonly FactCache? _cache;
    private Facts? _facts;

    /// <param name="images">The request is a DICOMweb one, which a research role is served de-identified (<see cref="Deidentified"/>).</param>
    public CallerAccess(AccessPolicy policy, AccessGrant caller, string? purpose, string? breakGlass, long nowTicks, Crypto.Blinder blind, FactCache? cache = null, bool images = false)
    {
        Policy = policy;
        Blind = blind;
        _cache = cache;
        Caller = caller;
        Role = policy.RoleOf(caller);
        Deidentified = images && Role.Access == AccessKind.Research;
        Now = nowTicks;
        Justification = breakGlass?.Trim();
        if (Justification is not null)
        {
            if (!Role.BreakGlass)
            {
                throw Decision.Deny("break-glass.role", $"The {Role.Name} role cannot break the glass (roles.{Role.Name}.break-glass in the policy file).").Refusal();
            }
            if (Justification.Contains('\0', StringComparison.Ordinal))
            {
                // PostgreSQL's text cannot hold NUL: refused here on both engines rather than failing the write.
                throw FhirException.BadRequest("Ward-Break-Glass holds a NUL character: write the justification as plain text.");
            }
            if (Justification.Length < policy.MinJustification)
            {
                throw FhirException.BadRequest($"Ward-Break-Glass needs a justification of at least {policy.MinJustification} characters (the reason for the emergency access, without clinical details); it is recorded and reviewed.");
            }
            if (purpose is not null && purpose != "ETREAT")
            {
                throw FhirException.BadRequest($"Break-the-glass acts for the purpose ETREAT (emergency treatment), not {purpose}: leave Ward-Purpose out or set it to ETREAT.");
            }
            purpose = "ETREAT";
        }
        else if (purpose == "ETREAT" && Role.Access != AccessKind.Operator)
        {
            throw FhirException.BadRequest("The purpose ETREAT (emergency treatment) is the purpose of break-the-glass: send Ward-Break-Glass: <justification> with it.");
        }
        if (purpose is not null && Role.Access != AccessKind.Operator && !Role.Purposes.Contains(purpose))
        {
            throw Decision.Deny("purpose.not-allowed", Role.Purposes.Count == 0
                ? $"The {Role.Name} role has no purpose of use in the policy file."
                : $"The {Role.Name} role may act for {string.Join(", ", Role.Purposes)}, not {purpose} (Ward-Purpose header).").Refusal();
        }
        Purpose = purpose ?? Role.Purposes.FirstOrDefault() ?? "HOPERAT";
        GlassUsed = Justification;
    }

    /// <summary>The purpose its audit records state: emergency treatment whenever break-the-glass let the request through.</summary>
    public string AuditPurpose => GlassUsed is null ? Purpose : "ETREAT";

    /// <summary>The justification of the break-the-glass this request used (its own, or an opening still in force), for its audit records.</summary>
    public string? GlassUsed { get; private set; }

    public AccessPolicy Policy { get; }
    /// <summary>The node's index key, which also makes the management view's pseudonyms.</summary>
    public Crypto.Blinder Blind { get; }
    public AccessGrant Caller { get; }
    public RolePolicy Role { get; }
    public string Purpose { get; }
    /// <summary>The break-the-glass justification this request carries (null: none).</summary>
    public string? Justification { get; }
    public long Now { get; }
    public bool Unrestricted => Role.Access == AccessKind.Operator;
    public bool Masked => Role.Access == AccessKind.Management;
    public bool CountsOnly => Role.Access == AccessKind.Counts;

    /// <summary>The caller is served de-identified images: the only patient data a research role reaches, and only so.</summary>
    public bool Deidentified { get; }

    /// <summary>The patient a patient's token speaks for.</summary>
    private string? Self => Caller.Patient ?? (Caller.FhirUser is { } u && u.StartsWith("Patient/", StringComparison.Ordinal) ? u[8..] : null);

    public void ForgetFacts() => _facts = null;

    // ---------------------------------------------------------------------------------------------- single resources

    public Decision DecideType(Interaction interaction, string type, bool countOnly = false) =>
        AccessPolicy.DecideType(Role, interaction, type, countOnly, Deidentified);

    /// <summary>The decision for one stored resource (its current compartments and labels), or for a version about to be written.</summary>
    public Decision Decide(StoreSession s, Interaction interaction, string type, IReadOnlyCollection<string> patients, IReadOnlyCollection<(string? System, string? Code)> labels)
    {
        var d = DecideType(interaction, type);
        if (!d.Permitted || Unrestricted)
        {
            return d;
        }
        var facts = patients.Count == 0 || Role.Access == AccessKind.Own ? Facts.Empty : FactsFor(s);
        d = Policy.Decide(Role, patients, Policy.Confidentiality(labels), labels.Select(l => l.Code ?? "").ToList(), facts.Of, Self, write: interaction is not (Interaction.Read or Interaction.Search));
        if (d.BreakGlass)
        {
            GlassUsed ??= patients.Select(p => facts.Glass.GetValueOrDefault(p)).FirstOrDefault(j => j is not null);
        }
        return d;
    }

    /// <summary>
    /// A write that creates, changes or deletes facts the policy trusts to permit (<see cref="GrantingFacts"/>): only
    /// the roles the policy file names for each kind may make it, a patient their own Consent, and a care role never
    /// through a fact that names it or one of its roles or organizations (it would grant itself access).
    /// </summary>
    public Decision DecideFacts(StoreSession s, string type, GrantingFacts.Stored? before, Search.IndexSet? after)
    {
        if (Unrestricted)
        {
            return Decision.Permit;
        }
        foreach (var kind in GrantingFacts.Changed(type, before, after))
        {
            var own = Role.Access == AccessKind.Own && kind == GrantingFacts.Consent;
            if (!own && !Policy.FactWriters[kind].Contains(Role.Name))
            {
                var writers = Policy.FactWriters[kind];
                return Decision.Deny("facts.writer",
                    $"The {Role.Name} role may not create, change or delete {GrantingFacts.Describe(kind)}: the policy trusts it to permit access, and lets "
                    + (writers.Count == 0 ? "no role" : "only " + string.Join(", ", writers.Order(StringComparer.Ordinal))) + $" write it (facts.{kind} in the policy file).");
            }
        }
        if (Role.Access == AccessKind.Care && GrantingFacts.Named(type, after) is { Count: > 0 } named)
        {
            named.ExceptWith(GrantingFacts.Named(type, before?.Index));
            if (named.Overlaps(Actors(s)))
            {
                return Decision.Deny("facts.self-grant",
                    $"This {type} would name you (or one of your roles or organizations) where it did not before: a care relationship, role or Consent that names you is written by someone else, never by you.");
            }
        }
        return Decision.Permit;
    }

    /// <summary>The resources of a list the caller may read, each decided on its own, in the order given.</summary>
    public List<StoredVersion> Readable(StoreSession s, List<StoredVersion> versions) => Keep(s, versions, v => v.Rid, v => v.Type);

    /// <summary>The rows of a list the caller may read (their types looked up), in the order given.</summary>
    public List<long> ReadableRids(StoreSession s, List<long> rids) => Keep(s, rids, rid => rid, null);

    private List<T> Keep<T>(StoreSession s, List<T> items, Func<T, long> rid, Func<T, string>? type)
    {
        if (Unrestricted || items.Count == 0)
        {
            return items;
        }
        var facts = s.PolicyFacts(items.Select(rid).ToList(), withType: type is null);
        return items.Where(item =>
        {
            var f = facts[rid(item)];
            return Decide(s, Interaction.Read, type?.Invoke(item) ?? f.Type, f.Patients, f.Labels).Permitted;
        }).ToList();
    }

    // ---------------------------------------------------------------------------------------------- searches

    /// <summary>
    /// The SQL condition over alias <paramref name="a"/> that keeps exactly the rows <see cref="Decide"/> permits for a
    /// read (the type-level decision is made before); null when nothing is filtered. Values are bound through <paramref name="arg"/>.
    /// The row's own summary of its compartments and labels (<see cref="IndexSet.Compartment"/>, <see cref="IndexSet.Labelled"/>)
    /// decides most rows; the index tables are probed only for rows in several compartments or with labels.
    /// <paramref name="patient"/>, when the search is of one patient's records, only adds a cheaper first test for the
    /// rows of that patient alone (taken when the caller may see them); it never widens what the condition keeps.
    /// </summary>
    public string? RowFilter(StoreSession s, string a, Func<object?, string> arg, string? patient = null)
    {
        if (Unrestricted)
        {
            return null;
        }
        // The row's compartments: none, some, at least one of a set of patients', none outside a set of patients'.
        var one = $"{a}.compartment";
        var none = $"{one} IS NULL";
        var some = $"{one} IS NOT NULL";
        // At least one patient of the row's compartments passes the test (a condition on the column named).
        string AnyOf(Func<string, string> test) =>
            $"({some} AND ({test(one)} OR ({one} = '*' AND EXISTS (SELECT 1 FROM ix_compartment c WHERE c.rid = {a}.rid AND {test("c.patient_id")}))))";
        Func<string, string> Is(string id)
        {
            var p = arg(id);
            return column => $"{column} = {p}";
        }
        string OnlyAmong(HashSet<string> ids, object value)
        {
            if (ids.Count == 0)
            {
                return none;
            }
            var set = arg(value);
            var first = patient is not null && ids.Contains(patient) ? $"{one} = {arg(patient)} OR " : "";
            return $"({first}{none} OR {s.InSet(one, set)} OR ({one} = '*' AND NOT EXISTS (SELECT 1 FROM ix_compartment c WHERE c.rid = {a}.rid AND NOT {s.InSet("c.patient_id", set)})))";
        }
        // The row has one of these labels (the label rows probed only when the row has labels at all).
        string In(IEnumerable<string> values) => string.Join(", ", values.Select(v => arg(v)));
        string Labelled(IEnumerable<(string System, string Code)> labels) =>
            LabelledWith(string.Join(" OR ", labels.GroupBy(l => l.System).Select(g => $"(t.system = {arg(g.Key)} AND t.code IN ({In(g.Select(l => l.Code))}))")));
        string LabelledWith(string match) =>
            $"({a}.labelled <> 0 AND EXISTS (SELECT 1 FROM {s.SecurityLabels("t")} WHERE t.rid = {a}.rid AND t.param = '_security' AND ({match})))";
        var parts = new List<string>();
        switch (Role.Access)
        {
            case AccessKind.Own:
                return Self is { } self ? $"({none} OR {AnyOf(Is(self))})" : none;
            case AccessKind.None:
                return none;
        }
        var f = FactsFor(s);
        var sets = f.Sets ??= FilterSets.Of(s, f, this);
        if (Role.Access == AccessKind.Care)
        {
            parts.Add(OnlyAmong(sets.Allowed, sets.AllowedValue));
            parts.Add($"(NOT {Labelled(Policy.LabelsAtLeast(AccessPolicy.V))} OR {OnlyAmong(sets.VeryRestricted, sets.VeryRestrictedValue)})");
        }
        else
        {
            if (f.Denied.Count > 0)
            {
                var denied = arg(sets.DeniedValue);
                parts.Add($"NOT {AnyOf(column => s.InSet(column, denied))}");
            }
            if (Role.MaxConfidentiality < AccessPolicy.V)
            {
                parts.Add($"NOT ({some} AND {Labelled(Policy.LabelsAtLeast(Role.MaxConfidentiality + 1))})");
            }
        }
        foreach (var (denier, labels) in f.LabelDenied)
        {
            if (!GlassOverridesConsent(f, denier))
            {
                parts.Add($"NOT ({AnyOf(Is(denier))} AND {LabelledWith($"t.code IN ({In(labels)})")})");
            }
        }
        return parts.Count == 0 ? null : "(" + string.Join(" AND ", parts) + ")";
    }

    /// <summary>
    /// The patient sets a search filter tests rows against, with their bound values: made once per loaded facts (the
    /// facts are kept for a caller up to a second), not for every search.
    /// </summary>
    internal sealed record FilterSets(HashSet<string> Allowed, object AllowedValue, HashSet<string> VeryRestricted, object VeryRestrictedValue, object DeniedValue)
    {
        /// <summary>
        /// For a care role: the patients the caller may see (care relationship or break-the-glass, not denied by their
        /// Consent unless the glass overrides it), and among them those whose very restricted data they may see.
        /// </summary>
        public static FilterSets Of(StoreSession s, Facts f, CallerAccess access)
        {
            var (policy, care) = (access.Policy, access.Role.Access == AccessKind.Care);
            var allowed = care
                ? f.Relationship.Concat(policy.GlassOpens.Contains("relationship") ? f.Glass.Keys : [])
                    .Where(p => !f.Denied.Contains(p) || access.GlassOverridesConsent(f, p)).ToHashSet(StringComparer.Ordinal)
                : new HashSet<string>(StringComparer.Ordinal);
            var v = allowed.Where(p => f.PermitV.Contains(p) || (f.Glass.ContainsKey(p) && policy.GlassOpens.Contains("very-restricted"))).ToHashSet(StringComparer.Ordinal);
            return new FilterSets(allowed, s.SetValue(allowed), v, s.SetValue(v), s.SetValue(f.Denied));
        }
    }

    private bool GlassOverridesConsent(Facts f, string patient) =>
        Role.Access == AccessKind.Care && f.Glass.ContainsKey(patient) && Policy.GlassOpens.Contains("consent-deny");

    // ---------------------------------------------------------------------------------------------- facts

    private Facts FactsFor(StoreSession s) => _facts ??= s.IsWriter || _cache is null
        ? Load(s)
        : _cache.Get((Caller.Subject, Caller.FhirUser, Role.Name, Purpose), Now, () => Load(s));

    /// <summary>
    /// Facts about callers, kept between their requests while no write that could change them has committed in this
    /// process (<see cref="RecordStore.PolicyGeneration"/>) and for at most a second (time moves encounter windows,
    /// Consent periods and break-the-glass expiries; another process may write).
    /// </summary>
    internal sealed class FactCache(RecordStore store)
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<(string, string?, string, string), (Facts Facts, long Generation, long Loaded)> _entries = new();

        internal Facts Get((string, string?, string, string) key, long now, Func<Facts> load)
        {
            var generation = store.PolicyGeneration;
            if (_entries.TryGetValue(key, out var e) && e.Generation == generation && now - e.Loaded is >= 0 and < TimeSpan.TicksPerSecond)
            {
                return e.Facts;
            }
            var facts = load();
            if (_entries.Count > 10_000)
            {
                _entries.Clear();
            }
            _entries[key] = (facts, generation, now);
            return facts;
        }
    }

    private Facts Load(StoreSession s)
    {
        var f = new Facts();
        if (Role.Access is AccessKind.Own or AccessKind.None or AccessKind.Operator)
        {
            return f;
        }
        var actors = Actors(s);
        if (Role.Access == AccessKind.Care && actors.Count > 0)
        {
            Relationships(s, actors, f.Relationship);
        }
        if (Role.BreakGlass)
        {
            foreach (var (patient, justification) in s.GlassInForce(Caller.Subject, Now))
            {
                f.Glass[patient] = justification;
            }
        }
        var purposes = Purpose == "ETREAT" ? new[] { "ETREAT", "TREAT" } : [Purpose];
        foreach (var rule in s.ConsentRules(actors, purposes, Now))
        {
            switch (rule.Effect, rule.Label)
            {
                case ("deny", null):
                    f.Denied.Add(rule.Patient);
                    break;
                case ("deny", { } label):
                    if (!f.LabelDenied.TryGetValue(rule.Patient, out var set))
                    {
                        f.LabelDenied[rule.Patient] = set = new HashSet<string>(StringComparer.Ordinal);
                    }
                    set.Add(label);
                    break;
                case ("permit", "V"):
                    f.PermitV.Add(rule.Patient);
                    break;
            }
        }
        return f;
    }

    /// <summary>The references that stand for the caller: their Practitioner (or PractitionerRole), that practitioner's roles and their organizations.</summary>
    private List<string> Actors(StoreSession s)
    {
        var actors = new List<string>();
        if (Caller.FhirUser is not { } user || !ReferenceParser.TryParseLocal(user, out var type, out var id))
        {
            return actors;
        }
        actors.Add($"{type}/{id}");
        if (type == "Practitioner")
        {
            actors.AddRange(s.RolesOfPractitioner(id).Select(r => "PractitionerRole/" + r));
        }
        var roles = actors.Where(a => a.StartsWith("PractitionerRole/", StringComparison.Ordinal)).Select(a => a[17..]).ToList();
        if (roles.Count > 0)
        {
            actors.AddRange(s.NamedByRoles(roles));
        }
        return [.. actors.Distinct()];
    }

    /// <summary>The patients the caller has a care relationship with, by the explanations the policy enables.</summary>
    private void Relationships(StoreSession s, List<string> actors, HashSet<string> into)
    {
        var practitioners = actors.Where(a => a.StartsWith("Practitioner", StringComparison.Ordinal)).ToList();
        if (practitioners.Count > 0 && Policy.Explanations.Count > 0)
        {
            into.UnionWith(s.RelatedPatients(practitioners, Policy.Explanations, Now, Now - Policy.EncounterWindow.Ticks));
        }
    }

    /// <summary>What the caller's circumstances say about patients; see <see cref="PatientFacts"/>.</summary>
    internal sealed class Facts
    {
        public static readonly Facts Empty = new();
        public HashSet<string> Relationship { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, string> Glass { get; } = new(StringComparer.Ordinal);
        public HashSet<string> Denied { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, HashSet<string>> LabelDenied { get; } = new(StringComparer.Ordinal);
        public HashSet<string> PermitV { get; } = new(StringComparer.Ordinal);

        /// <summary>What the search filter binds, made from these facts on first use (<see cref="FilterSets"/>).</summary>
        public FilterSets? Sets { get; set; }

        public PatientFacts Of(string patient) => new(Relationship.Contains(patient), Glass.ContainsKey(patient), Denied.Contains(patient),
            PermitV.Contains(patient), LabelDenied.GetValueOrDefault(patient));
    }
}
