using Ward.Core.Access;
using Ward.Core.Policy;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// Access control, per interaction: every route of <see cref="Dispatch"/>, every batch or transaction entry and every
/// write goes through these checks. Two layers, both required: the SMART scopes of the caller's token (a <c>patient/</c>
/// scope reaches the compartment of the patient in context, plus the resources that belong to no patient), then the
/// node's access policy (<see cref="CallerAccess"/>: role, purpose of use, care relationship, security labels, Consent,
/// break-the-glass), which decides each resource read or written and filters searches in their SQL.
/// </summary>
internal sealed partial class FhirEngine
{
    /// <summary>The node's access policy (its <c>policy.yaml</c>, else the default shipped with Ward).</summary>
    public AccessPolicy Policy { get; set; } = AccessPolicy.Default;

    private static readonly Dictionary<Interaction, (string Name, string Letter)> Names = new()
    {
        [Interaction.Create] = ("create", "c"),
        [Interaction.Read] = ("read", "r"),
        [Interaction.Update] = ("update", "u"),
        [Interaction.Delete] = ("delete", "d"),
        [Interaction.Search] = ("search", "s"),
    };

    /// <summary>The access policy as it applies to this request, made once from its caller, purpose and break-the-glass.</summary>
    private CallerAccess AccessFor(FhirRequest request, bool images = false) =>
        request.Access ??= new CallerAccess(Policy, request.Caller, request.Purpose, request.BreakGlass, Now(), store.Keys.Blind, _facts, images);

    private static CallerAccess AccessOf(FhirRequest request) => request.Access ?? throw new InvalidOperationException("The request has no access context.");

    /// <summary>The caller's reach for an interaction on a type: the token's scopes, then the policy's rules for the role; 403 when either refuses.</summary>
    private static Reach Permit(FhirRequest request, string type, Interaction interaction, bool countOnly = false)
    {
        var reach = PermitScope(request.Caller, type, interaction);
        AccessOf(request).DecideType(interaction, type, countOnly).Require();
        return reach;
    }

    /// <summary>The token's reach for an interaction on a type; 403 when no scope grants it.</summary>
    private static Reach PermitScope(AccessGrant caller, string type, Interaction interaction)
    {
        var reach = caller.ReachOf(type, interaction);
        if (reach == Reach.None)
        {
            var (name, letter) = Names[interaction];
            throw FhirException.Forbidden(caller.Scopes.NeedsPatient && caller.Patient is null
                ? $"The token's patient/ scopes need a patient in context, and it has none: {name} of {type} is not allowed."
                : $"The token's scopes do not allow {name} of {type} (it would need a scope such as user/{type}.{letter} or patient/{type}.{letter}).");
        }
        return reach;
    }

    private static FhirException OutsideContext(AccessGrant caller, string what) =>
        FhirException.Forbidden($"This token reaches only the compartment of Patient/{caller.Patient}; {what} is outside it.");

    /// <summary>
    /// The answer to an interaction on one resource (by id) that does not exist, or that the caller may not reach: the
    /// same 404 in both cases, so that it tells nobody whether a resource they may not read exists, whose it is, how it is
    /// labelled or that a Consent keeps it from them (issue 29, point 6).
    /// </summary>
    private static FhirException NotOpen(FhirRequest request, string type, string id)
    {
        var access = AccessOf(request);
        return FhirException.NotFound($"{type}/{id} does not exist, or is not open to you.{(AccessPolicy.PatientData(type) ? access.Policy.GlassHintFor(access.Role) : "")}");
    }

    /// <summary>A read of one resource: scope, then (for patient/ scopes) compartment membership, then the policy on the resource itself.</summary>
    private static void PermitRead(StoreSession s, FhirRequest request, string type, string id)
    {
        var current = s.GetCurrent(type, id);
        PermitRead(s, request, type, id, current?.Rid, current?.Deleted == true);
    }

    /// <summary>
    /// A change to a stored resource (<paramref name="current"/>, deleted or not) is allowed to look at it: 404
    /// (<see cref="NotOpen"/>) when the caller may not read it, before anything that depends on what it holds (its
    /// version for If-Match, its content for a patch, whether it was deleted) can answer.
    /// </summary>
    private static void PermitStored(StoreSession s, FhirRequest request, string type, string id, CurrentInfo current, Interaction interaction) =>
        Decide(s, request, type, id, current.Rid, interaction, PermitScope(request.Caller, type, interaction) == Reach.Patient && AccessPolicy.PatientData(type), current.Deleted);

    /// <summary>
    /// A read of one resource whose current row (<paramref name="rid"/>, null when there is none) the caller already has:
    /// 404 (<see cref="NotOpen"/>) unless it exists and may be read.
    /// </summary>
    private static void PermitRead(StoreSession s, FhirRequest request, string type, string id, long? rid, bool deleted)
    {
        var scoped = Permit(request, type, Interaction.Read) == Reach.Patient && AccessPolicy.PatientData(type);
        if (rid is not { } current)
        {
            throw NotOpen(request, type, id);
        }
        Decide(s, request, type, id, current, Interaction.Read, scoped, deleted);
    }

    /// <summary>
    /// A stored resource: in the compartment of the patient in context (patient/ scopes), then the policy, from one read of
    /// its compartments and labels (for a deleted one, those of its last version that was not a deletion). A resource the
    /// caller may not read answers as one that does not exist (<see cref="NotOpen"/>); one they may read but not change
    /// gets the policy's refusal.
    /// </summary>
    /// <returns>The compartments and labels it decided on (null for the operator, who is not decided on).</returns>
    private static (List<string> Patients, List<(string? System, string? Code)> Labels)? Decide(StoreSession s, FhirRequest request, string type, string id, long rid, Interaction interaction, bool scoped, bool deleted = false)
    {
        var access = AccessOf(request);
        if (!scoped && access.Unrestricted)
        {
            return null;
        }
        var (patients, labels) = deleted ? LastLiveFacts(s, access, type, id) : Facts(s.PolicyFacts(rid));
        if (scoped && !patients.Contains(request.Caller.Patient!))
        {
            throw NotOpen(request, type, id);
        }
        if (scoped && interaction != Interaction.Read && patients.Any(p => p != request.Caller.Patient))
        {
            throw OutsideContext(request.Caller, $"{type}/{id} (it is also in another patient's record)");
        }
        var d = access.Decide(s, interaction, type, patients, labels);
        if (d.Permitted)
        {
            return (patients, labels);
        }
        if (interaction != Interaction.Read && access.Decide(s, Interaction.Read, type, patients, labels).Permitted)
        {
            throw d.Refusal();
        }
        throw NotOpen(request, type, id);
    }

    private static (List<string> Patients, List<(string? System, string? Code)> Labels) Facts(RowFacts facts) => (facts.Patients, facts.Labels);

    /// <summary>
    /// The patients and labels of a deleted resource, for deciding who may learn of it: those of its last version that
    /// was not a deletion (a deletion drops its index rows), re-derived from that sealed version.
    /// </summary>
    private static (List<string> Patients, List<(string? System, string? Code)> Labels) LastLiveFacts(StoreSession s, CallerAccess access, string type, string id)
    {
        for (var version = (s.GetCurrent(type, id)?.Version ?? 1) - 1; version >= 1; version--)
        {
            if (s.ReadVersion(type, id, version) is { Deleted: false, Data: { } data })
            {
                var index = Indexer.Index(FhirJson.Parse(data), access.Blind);
                return ([.. index.Patients], [.. index.Tokens.Where(t => t.Param == "_security").Select(t => (t.System, t.Code))]);
            }
        }
        return ([], []);
    }

    /// <summary>What of a list of loaded resources (included, referenced, conditionally matched) the caller may see, each decided on its own.</summary>
    private static List<StoredVersion> Visible(StoreSession s, FhirRequest request, List<StoredVersion> versions)
    {
        var caller = request.Caller;
        var inScope = versions.Where(v => caller.ReachOf(v.Type, Interaction.Read) switch
        {
            Reach.Any => true,
            Reach.Patient => !AccessPolicy.PatientData(v.Type) || s.InCompartment(v.Rid, caller.Patient!),
            _ => false,
        }).ToList();
        return AccessOf(request).Readable(s, inScope);
    }

    /// <summary>The compartment a search of <paramref name="type"/> is confined to (patient/ scopes: the patient in context).</summary>
    private static string? SearchCompartment(FhirRequest request, string type, string? asked, bool countOnly)
    {
        var caller = request.Caller;
        if (asked is not null && AccessOf(request).Masked)
        {
            throw Decision.Deny("view.pseudonymised", "The management view shows patients only as pseudonyms: a search within one patient's compartment is not available.").Refusal();
        }
        if (asked is not null && AccessOf(request).CountsOnly)
        {
            throw Decision.Deny("view.counts-dimensions", "Counts for public health are not asked of one patient's compartment: that would single the patient out.").Refusal();
        }
        if (Permit(request, type, Interaction.Search, countOnly) == Reach.Any || !AccessPolicy.PatientData(type))
        {
            return asked;
        }
        if (asked is not null && asked != caller.Patient)
        {
            throw OutsideContext(caller, $"Patient/{asked}");
        }
        return caller.Patient;
    }

    /// <summary>Patient/$everything returns every type: it needs a wildcard read scope, a patient/ one only for the patient in context, and the policy's permit for the patient.</summary>
    private static void PermitEverything(StoreSession s, FhirRequest request, string patientId)
    {
        var caller = request.Caller;
        if (caller.ReachOf("*", Interaction.Read) == Reach.None)
        {
            throw FhirException.Forbidden("Patient/$everything returns resources of every type: it needs a read scope on * (such as patient/*.rs or user/*.read).");
        }
        if (caller.ReachOf("*", Interaction.Read) == Reach.Patient && patientId != caller.Patient)
        {
            throw OutsideContext(caller, $"Patient/{patientId}");
        }
        if (AccessOf(request).Masked)
        {
            throw Decision.Deny("view.pseudonymised", "The management view shows patients only as pseudonyms: Patient/$everything is not available.").Refusal();
        }
        PermitRead(s, request, "Patient", patientId);
    }

    /// <summary>
    /// History across a type or the whole node: only for scopes that reach beyond one patient, and for roles whose
    /// access the policy can filter row by row without a patient in view (service integrations, the operator).
    /// </summary>
    private static void PermitHistory(FhirRequest request, string? type)
    {
        if (Permit(request, type ?? "*", Interaction.Search) != Reach.Any)
        {
            throw FhirException.Forbidden($"History of {(type is null ? "the whole node" : "every " + type)} is not available to a token limited to Patient/{request.Caller.Patient}: ask for the history of one resource.");
        }
        var access = AccessOf(request);
        if (access.Role.Access is not (AccessKind.Service or AccessKind.Operator))
        {
            throw Decision.Deny("history.across-resources",
                $"The {access.Role.Name} role reads history one resource at a time (GET [type]/[id]/_history); history across {(type is null ? "the node" : "every " + type)} is for service integrations.").Refusal();
        }
    }

    /// <summary>
    /// A write: the scope and the policy for its interaction; both the stored version it replaces and the new version
    /// must be permitted (for patient/ scopes: in the compartment of the patient in context, and in no other); and a
    /// write that changes what permits access (<see cref="GrantingFacts"/>) only by the roles the policy names for it.
    /// </summary>
    private static void PermitWrite(StoreSession s, FhirRequest request, string type, string id, CurrentInfo? current, Interaction interaction, IndexSet? next)
    {
        var caller = request.Caller;
        var access = AccessOf(request);
        var scoped = Permit(request, type, interaction) == Reach.Patient && AccessPolicy.PatientData(type);
        GrantingFacts.Stored? before = null;
        if (current is { Deleted: false } c && Decide(s, request, type, id, c.Rid, interaction, scoped) is { } facts)
        {
            var stored = GrantingFacts.Bears(type) && s.Read(type, id) is { Data: { } data } ? Indexer.Index(FhirJson.Parse(data), access.Blind) : null;
            before = new GrantingFacts.Stored(facts.Patients, facts.Labels, stored);
        }
        if (next is not null)
        {
            if (scoped && (next.Patients.Count == 0 || !next.Patients.All(p => p == caller.Patient)))
            {
                throw OutsideContext(caller, $"the {type} written (it names no patient, or another one)");
            }
            var labels = next.Tokens.Where(t => t.Param == "_security").Select(t => (t.System, t.Code)).ToList();
            access.Decide(s, interaction, type, next.Patients, labels).Require();
        }
        access.DecideFacts(s, type, before, next).Require();
    }

    /// <summary>
    /// Break-the-glass: records an opening (a review item for the security officer) for each patient the request is
    /// about, so that the policy lets this user reach them for the policy's time. The justification was checked when the
    /// request's access was built.
    /// </summary>
    private void OpenGlass(StoreSession s, FhirRequest request, IEnumerable<FhirRequest>? entries = null)
    {
        var access = AccessOf(request);
        if (access.Justification is not { } why)
        {
            return;
        }
        var patients = new HashSet<string>(StringComparer.Ordinal);
        foreach (var r in entries ?? [request])
        {
            patients.UnionWith(FocusPatients(s, r));
        }
        if (patients.Count == 0)
        {
            throw FhirException.BadRequest("Break-the-glass opens one patient's record: name the patient (read one of their resources, search Patient/[id]/[type] or with patient=, or write a resource of theirs).");
        }
        var now = Now();
        var caller = request.Caller;
        foreach (var p in patients)
        {
            s.BreakGlass(caller.Subject, caller.Role, caller.FhirUser, p, why, now, now + Policy.GlassLifetime.Ticks);
        }
        access.ForgetFacts();
    }

    /// <summary>The patients a request is about: its target's, its compartment's, its patient= search value's, or those its body names.</summary>
    private HashSet<string> FocusPatients(StoreSession s, FhirRequest request)
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        var segments = request.Path.Length == 0 ? [] : request.Path.Split('/');
        if (segments is ["Patient", var pid, ..] && ReferenceParser.IsValidId(pid))
        {
            found.Add(pid);
        }
        else if (segments is [var type, var id, ..] && SearchParameters.IsKnownType(type) && ReferenceParser.IsValidId(id) && s.GetCurrent(type, id) is { } c)
        {
            found.UnionWith(s.PolicyFacts(c.Rid).Patients);
        }
        foreach (var (key, value) in request.Query)
        {
            if (key is "patient" or "subject" or "patient:Patient" or "subject:Patient" && !value.Contains(','))
            {
                var id = value.StartsWith("Patient/", StringComparison.Ordinal) ? value[8..] : value;
                if (ReferenceParser.IsValidId(id))
                {
                    found.Add(id);
                }
            }
        }
        if (request.Resource is { } resource)
        {
            found.UnionWith(Indexer.Index(resource, store.Keys.Blind).Patients);
        }
        return found;
    }
}
