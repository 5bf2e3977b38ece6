using Ward.Core.Access;
using Ward.Core.Search;

namespace Ward.Core.Policy;

/// <summary>How a role reaches patient data (see the comments of the shipped <c>policy.yaml</c>).</summary>
internal enum AccessKind { Care, Service, Management, Counts, Own, Research, None, Operator }

/// <summary>A set of resource types from the policy file: a list, or every type ("*").</summary>
internal sealed class TypeSet(bool all, IReadOnlySet<string> types)
{
    public static readonly TypeSet Empty = new(false, new HashSet<string>());
    public static readonly TypeSet Every = new(true, new HashSet<string>());

    public bool Contains(string type) => all || types.Contains(type);

    public bool IsEmpty => !all && types.Count == 0;

    public bool All => all;

    public IEnumerable<string> Types => types;

    public override string ToString() => all ? "*" : string.Join(", ", types.Order(StringComparer.Ordinal));
}

/// <summary>One role of the policy file.</summary>
internal sealed record RolePolicy(string Name, AccessKind Access, IReadOnlyList<string> Purposes, TypeSet Read, TypeSet Write, bool Delete, bool BreakGlass, int MaxConfidentiality);

/// <summary>
/// The node's access policy: data read from <c>policy.yaml</c> (the node's own in its data folder, else the default
/// shipped with Ward), validated once, then consulted by <see cref="Decide"/> for every resource any request touches.
/// </summary>
internal sealed class AccessPolicy
{
    public const string FileName = "policy.yaml";
    public const string ConfidentialitySystem = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    public const string SensitivitySystem = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    public const int N = 0, R = 1, V = 2;

    /// <summary>The CLI acting on the data folder with the node's keys (import, demo set-up): not a role of the file.</summary>
    public static readonly RolePolicy OperatorRole = new("operator", AccessKind.Operator, ["HOPERAT"], TypeSet.Every, TypeSet.Every, true, false, V);

    private readonly Dictionary<string, RolePolicy> _roles;

    private AccessPolicy(string source, Dictionary<string, RolePolicy> roles, PolicyDocument doc, Dictionary<string, int> sensitivity)
    {
        Source = source;
        _roles = roles;
        Sensitivity = sensitivity;
        Explanations = doc.Relationship.Explanations;
        EncounterWindow = TimeSpan.FromDays(doc.Relationship.EncounterWindowDays);
        MinJustification = doc.BreakGlass.MinJustification;
        GlassLifetime = TimeSpan.FromHours(doc.BreakGlass.Hours);
        GlassOpens = doc.BreakGlass.Opens.ToHashSet(StringComparer.Ordinal);
        SmallCell = doc.Counts.SmallCell;
        // A policy file without a facts section leaves them to its service and admin roles, as the default does.
        var facts = doc.Facts ?? GrantingFacts.Kinds.ToDictionary(k => k, k => (List<string>?)[.. new[] { "service", "admin" }
            .Where(r => roles.ContainsKey(r) && (r == "service" || k is GrantingFacts.PractitionerRole or GrantingFacts.Group))]);
        FactWriters = GrantingFacts.Kinds.ToDictionary(k => k, k => (IReadOnlySet<string>)(facts.GetValueOrDefault(k) ?? []).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);
    }

    /// <summary>Where the policy came from (a file path, or "default").</summary>
    public string Source { get; }
    public IReadOnlyDictionary<string, RolePolicy> Roles => _roles;
    public IReadOnlyList<string> Explanations { get; }
    public TimeSpan EncounterWindow { get; }
    public int MinJustification { get; }
    public TimeSpan GlassLifetime { get; }
    public IReadOnlySet<string> GlassOpens { get; }
    public int SmallCell { get; }
    /// <summary>For each kind of fact that permits access (<see cref="GrantingFacts"/>), the roles that may create or change it.</summary>
    public IReadOnlyDictionary<string, IReadOnlySet<string>> FactWriters { get; }
    /// <summary>Sensitivity code to the confidentiality it counts as.</summary>
    public IReadOnlyDictionary<string, int> Sensitivity { get; }

    public static readonly AccessPolicy Default = Parse(ReadDefault(), "default");

    public static string ReadDefault()
    {
        using var stream = typeof(AccessPolicy).Assembly.GetManifestResourceStream("policy.yaml")!;
        return new StreamReader(stream).ReadToEnd();
    }

    /// <summary>The node's policy: <c>DIR/policy.yaml</c> when present, else the default.</summary>
    public static AccessPolicy Load(string dataDir)
    {
        var file = Path.Combine(dataDir, FileName);
        return File.Exists(file) ? Parse(File.ReadAllText(file), file) : Default;
    }

    /// <summary>The role a caller acts in; a token whose role the policy does not know reaches nothing.</summary>
    public RolePolicy RoleOf(AccessGrant caller) =>
        ReferenceEquals(caller, AccessGrant.Operator) ? OperatorRole
        : caller.Role is { } r && _roles.TryGetValue(r, out var role) ? role
        : new RolePolicy(caller.Role ?? "none", AccessKind.None, [], TypeSet.Empty, TypeSet.Empty, false, false, N);

    /// <summary>The confidentiality of a resource from its security labels (N when it has none).</summary>
    public int Confidentiality(IEnumerable<(string? System, string? Code)> labels)
    {
        var level = N;
        foreach (var (system, code) in labels)
        {
            var l = system switch
            {
                ConfidentialitySystem => code switch { "R" => R, "V" => V, _ => N },
                SensitivitySystem when code is not null => Sensitivity.GetValueOrDefault(code, N),
                _ => N,
            };
            level = Math.Max(level, l);
        }
        return level;
    }

    /// <summary>The (system, code) pairs that make a resource at least <paramref name="level"/>.</summary>
    public IEnumerable<(string System, string Code)> LabelsAtLeast(int level)
    {
        if (level <= R)
        {
            yield return (ConfidentialitySystem, "R");
        }
        yield return (ConfidentialitySystem, "V");
        foreach (var (code, l) in Sensitivity)
        {
            if (l >= level)
            {
                yield return (SensitivitySystem, code);
            }
        }
    }

    public static string LevelName(int level) => level switch { N => "N", R => "R", _ => "V" };

    // ------------------------------------------------------------------------------------------------- decisions

    /// <summary>
    /// Whether a role may use an interaction on a type at all (before looking at any resource).
    /// <paramref name="deidentified"/>: the request is served de-identified (DICOMweb for a research role), the only
    /// way a research role reaches patient data; no FHIR path sets it.
    /// </summary>
    public static Decision DecideType(RolePolicy role, Interaction interaction, string type, bool countOnly = false, bool deidentified = false)
    {
        if (role.Access == AccessKind.Operator)
        {
            return Decision.Permit;
        }
        if (role.Access == AccessKind.Research)
        {
            return deidentified && interaction is Interaction.Read or Interaction.Search && role.Read.Contains(type)
                ? Decision.Permit
                : Decision.Deny("role.researcher",
                    $"Researchers get no direct FHIR access: records come de-identified from the research export (ward research export), and images de-identified through DICOMweb ({Listed(role.Read)}): {interaction.ToString().ToLowerInvariant()} of {type} is not allowed{(deidentified ? "" : " through FHIR")}.");
        }
        var patientData = PatientData(type);
        if (interaction is Interaction.Read or Interaction.Search)
        {
            if (!role.Read.Contains(type))
            {
                return role.Access switch
                {
                    AccessKind.None when patientData || role.Read.IsEmpty => Decision.Deny("role.no-clinical-data",
                        $"The {role.Name} role reads no clinical data: {type} is not among the types it may read ({Listed(role.Read)})."),
                    _ => Decision.Deny("role.read-types",
                        $"The {role.Name} role may not read {type}: its policy lists {Listed(role.Read)} (roles.{role.Name}.read in the policy file)."),
                };
            }
            if (role.Access == AccessKind.Counts && (interaction != Interaction.Search || !countOnly))
            {
                return Decision.Deny("view.counts-only",
                    $"The {role.Name} role receives counts only: search {type} with _summary=count.");
            }
            return Decision.Permit;
        }
        if (!role.Write.Contains(type))
        {
            return Decision.Deny("role.write-types",
                $"The {role.Name} role may not {Verb(interaction)} {type}: its policy lets it write {Listed(role.Write)} (roles.{role.Name}.write in the policy file).");
        }
        if (interaction == Interaction.Delete && !role.Delete)
        {
            return Decision.Deny("role.delete", $"The {role.Name} role may not delete resources (roles.{role.Name}.delete in the policy file).");
        }
        return Decision.Permit;
    }

    /// <summary>
    /// The decision for one resource of <paramref name="patients"/> (empty: data of no patient) with confidentiality
    /// <paramref name="confidentiality"/> and security label codes <paramref name="labels"/>, for a caller whose facts
    /// about each patient <paramref name="facts"/> gives. The type-level decision must have permitted first.
    /// </summary>
    public Decision Decide(RolePolicy role, IReadOnlyCollection<string> patients, int confidentiality, IReadOnlyCollection<string> labels, Func<string, PatientFacts> facts, string? self, bool write = false)
    {
        if (role.Access == AccessKind.Operator || patients.Count == 0)
        {
            return role.Access == AccessKind.Management ? Decision.View : Decision.Permit;
        }
        if (role.Access == AccessKind.Own)
        {
            // A read needs the patient's compartment among the resource's; a write must land in no other patient's.
            return self is not null && (write ? patients.All(p => p == self) : patients.Contains(self))
                ? Decision.Permit
                : Hidden(role, Decision.Deny("patient.own-compartment", "A patient reads and writes only their own record."));
        }
        var glass = false;
        foreach (var p in patients)
        {
            var d = DecideOne(role, p, confidentiality, labels, facts(p));
            if (!d.Permitted)
            {
                return Hidden(role, d);
            }
            glass |= d.BreakGlass;
        }
        return role.Access == AccessKind.Management ? Decision.View : glass ? Decision.Glass : Decision.Permit;
    }

    private Decision DecideOne(RolePolicy role, string patient, int confidentiality, IReadOnlyCollection<string> labels, PatientFacts f)
    {
        var glassDeny = f.Glass && GlassOpens.Contains("consent-deny");
        if (f.ConsentDenies && !glassDeny)
        {
            return Decision.Deny("consent.deny",
                $"The Consent of Patient/{patient} denies access to you or for your purpose of use." + (role.BreakGlass && GlassOpens.Contains("consent-deny") ? GlassHint : ""));
        }
        if (!glassDeny && f.DeniedLabels is { Count: > 0 } denied && labels.FirstOrDefault(denied.Contains) is { } label)
        {
            return Decision.Deny("consent.deny-label",
                $"The Consent of Patient/{patient} denies access to data labelled {label} to you or for your purpose of use." + (role.BreakGlass && GlassOpens.Contains("consent-deny") ? GlassHint : ""));
        }
        if (role.Access == AccessKind.Care)
        {
            if (confidentiality == V && !f.PermitsV && !(f.Glass && GlassOpens.Contains("very-restricted")))
            {
                return Decision.Deny("label.very-restricted",
                    $"This resource of Patient/{patient} is labelled very restricted (V): it needs a permit for you in the patient's Consent (a provision of type permit with security label V).");
            }
            if (f.Relationship)
            {
                return Decision.Permit;
            }
            if (f.Glass && GlassOpens.Contains("relationship"))
            {
                return Decision.Glass;
            }
            return Decision.Deny("relationship.required",
                $"You have no care relationship with Patient/{patient}: no active CareTeam lists you and no Encounter has you as participant within {EncounterWindow.TotalDays:0} days ({string.Join(", ", Explanations)})."
                + (role.BreakGlass ? GlassHint : ""));
        }
        if (confidentiality > role.MaxConfidentiality)
        {
            return confidentiality == V
                ? Decision.Deny("label.very-restricted", $"This resource of Patient/{patient} is labelled very restricted (V): the {role.Name} role reads data up to {LevelName(role.MaxConfidentiality)} (max-confidentiality in the policy file).")
                : Decision.Deny("label.restricted", $"This resource of Patient/{patient} is labelled restricted (R): it needs a care relationship, and the {role.Name} role reads data up to {LevelName(role.MaxConfidentiality)} (max-confidentiality in the policy file).");
        }
        return Decision.Permit;
    }

    /// <summary>
    /// A denial for whom a resource belongs to, its labels or its patient's Consent, as the caller is told it: one message
    /// whatever the rule, naming no patient, so that a refusal does not say whose the resource is, how it is labelled or
    /// that a Consent exists (issue 29, point 6). The rule that denied stays in <see cref="Decision.Rule"/>.
    /// </summary>
    public Decision Hidden(RolePolicy role, Decision denial) => denial with
    {
        Message = "What this request names does not exist or is not open to you; which, and why, is not disclosed." + GlassHintFor(role),
        Record = true,
    };

    /// <summary>The break-the-glass hint a role's refusals of patient data end with (empty for roles that cannot break the glass).</summary>
    public string GlassHintFor(RolePolicy role) => role.BreakGlass && GlassOpens.Count > 0 ? GlassHint : "";

    private const string GlassHint = " In an emergency, break the glass: repeat the request with the header Ward-Break-Glass: <justification> (purpose ETREAT); it is recorded and reviewed.";

    private static string Listed(TypeSet types) => types.IsEmpty ? "no type" : types.ToString();

    private static string Verb(Interaction i) => i switch { Interaction.Create => "create", Interaction.Update => "update", _ => "delete" };

    /// <summary>Whether a type can belong to a patient compartment.</summary>
    public static bool PatientData(string type) => type == "Patient" || PatientCompartment.ParamsFor(type).Count > 0;

    // ------------------------------------------------------------------------------------------------- the file

    public static AccessPolicy Parse(string yaml, string source)
    {
        var errors = new List<string>();
        var doc = PolicyFile.Read(yaml, source, errors);
        var roles = new Dictionary<string, RolePolicy>(StringComparer.Ordinal);
        foreach (var (name, r) in doc.Roles)
        {
            var where = $"roles.{name}";
            // PolicyFile checked the names: an access kind, purposes, types and levels it has; here, what they mean together.
            if (!PolicyFile.AccessKinds.Contains(r.Access))
            {
                if (r.Access.Length == 0)
                {
                    errors.Add($"{where}: the role needs access: ({string.Join(", ", PolicyFile.AccessKinds)}).");
                }
                continue;
            }
            var kind = Enum.Parse<AccessKind>(r.Access, ignoreCase: true);
            if (r.Purposes.Count == 0)
            {
                errors.Add($"{where}.purposes: name at least one purpose of use ({string.Join(", ", PolicyFile.PurposeCodes)}).");
            }
            var read = Types(r.Read, $"{where}.read", errors);
            var write = Types(r.Write, $"{where}.write", errors);
            if (kind == AccessKind.None)
            {
                errors.AddRange(read.Types.Concat(write.Types).Where(PatientData).Distinct().Select(t => $"{where}: the role reads no clinical data (access: none), but lists {t}, which belongs to patients."));
                if (read.All || write.All)
                {
                    errors.Add($"{where}: '*' includes patient data, which a role with access: none may not reach; list the shared types it needs.");
                }
            }
            if (kind == AccessKind.Research && (read.All || read.Types.Any(t => t != "ImagingStudy")))
            {
                errors.Add($"{where}.read: a research role reads images de-identified (ImagingStudy, through DICOMweb) and nothing else directly; records reach research through the research export.");
            }
            if (kind is AccessKind.Management or AccessKind.Counts or AccessKind.Research && !write.IsEmpty)
            {
                errors.Add($"{where}.write: a {kind.ToString().ToLowerInvariant()} role reads only; remove its write list.");
            }
            if (r.BreakGlass && kind != AccessKind.Care)
            {
                errors.Add($"{where}.break-glass: only care roles can break the glass.");
            }
            roles[name] = new RolePolicy(name, kind, r.Purposes, read, write, r.Delete, r.BreakGlass, Level(r.MaxConfidentiality));
        }
        var sensitivity = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (code, level) in doc.Labels.Sensitivity)
        {
            sensitivity[code] = Level(level);
        }
        if (doc.Relationship.EncounterWindowDays is < 0 or > 3650)
        {
            errors.Add("relationship.encounter-window-days must be between 0 and 3650.");
        }
        if (doc.BreakGlass.MinJustification is < 1 or > 1000)
        {
            errors.Add("break-glass.min-justification must be between 1 and 1000 characters.");
        }
        if (doc.BreakGlass.Hours is <= 0 or > 72)
        {
            errors.Add("break-glass.hours must be more than 0 and at most 72.");
        }
        // PolicyFile reported the kinds and roles it does not know; here, the node's roles this policy leaves out.
        foreach (var (kind, writers) in (doc.Facts ?? []).Where(f => GrantingFacts.Kinds.Contains(f.Key)))
        {
            errors.AddRange((writers ?? []).Where(w => Access.Roles.All.Contains(w) && !doc.Roles.ContainsKey(w)).Select(w => $"facts.{kind}: '{w}' is not a role of this policy."));
            errors.AddRange((writers ?? []).Where(w => roles.TryGetValue(w, out var r) && r.Access is AccessKind.Management or AccessKind.Counts or AccessKind.Research)
                .Select(w => $"facts.{kind}: the {w} role reads only; it cannot write {GrantingFacts.Describe(kind)}."));
        }
        if (doc.Counts.SmallCell is < 1 or > 1000)
        {
            errors.Add("counts.small-cell must be between 1 and 1000.");
        }
        if (errors.Count > 0)
        {
            throw PolicyFile.Invalid(source, errors);
        }
        return new AccessPolicy(source, roles, doc, sensitivity);
    }

    private static int Level(string level) => level switch { "R" => R, "V" => V, _ => N };

    private static TypeSet Types(List<string> listed, string where, List<string> errors)
    {
        if (listed.Contains("*"))
        {
            return TypeSet.Every;
        }
        if (listed.Contains("AuditEvent"))
        {
            errors.Add($"{where}: AuditEvent is read through the audit rules (security officer, and patients for their own entries), not the policy file.");
        }
        return new TypeSet(false, listed.ToHashSet(StringComparer.Ordinal));
    }
}

/// <summary>What the caller's circumstances say about one patient.</summary>
internal readonly record struct PatientFacts(bool Relationship, bool Glass, bool ConsentDenies, bool PermitsV, IReadOnlySet<string>? DeniedLabels);

/// <summary>The outcome of the policy: permit, deny (with the rule and what would permit), or permit with a masked view.</summary>
internal readonly record struct Decision(bool Permitted, string Rule, string Message, bool BreakGlass)
{
    public static readonly Decision Permit = new(true, "permit", "", false);
    /// <summary>Permitted through the management view: served masked.</summary>
    public static readonly Decision View = new(true, "view.management", "", false);
    public static readonly Decision Glass = new(true, "break-glass", "", true);

    public static Decision Deny(string rule, string message) => new(false, rule, message, false);

    /// <summary>The rule every denial of one record is reported under: the rule that denied is not disclosed (<see cref="AccessPolicy.Hidden"/>).</summary>
    public const string RecordRule = "record.not-open";

    /// <summary>A denial for the record itself (its patient, labels, Consent), reported without its rule or patient.</summary>
    public bool Record { get; init; }

    /// <summary>Throws the refusal of a denial.</summary>
    public void Require()
    {
        if (!Permitted)
        {
            throw Refusal();
        }
    }

    /// <summary>The 403 for a denial: names the rule and says what would permit.</summary>
    public Fhir.FhirException Refusal() => Fhir.FhirException.Forbidden($"Denied by the access policy (rule {(Record ? RecordRule : Rule)}): {Message}");
}
