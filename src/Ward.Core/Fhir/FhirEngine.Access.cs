using Ward.Core.Access;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// SMART scope enforcement, per interaction: every route of <see cref="Dispatch"/>, every batch or transaction entry and
/// every write goes through these checks with the caller's <see cref="AccessGrant"/>. A <c>patient/</c> scope reaches
/// the compartment of the patient in context, plus the resources that belong to no patient (Practitioner,
/// Organization, Medication …).
/// </summary>
internal sealed partial class FhirEngine
{
    private static readonly Dictionary<Interaction, (string Name, string Letter)> Names = new()
    {
        [Interaction.Create] = ("create", "c"),
        [Interaction.Read] = ("read", "r"),
        [Interaction.Update] = ("update", "u"),
        [Interaction.Delete] = ("delete", "d"),
        [Interaction.Search] = ("search", "s"),
    };

    /// <summary>The caller's reach for an interaction on a type; 403 when no scope grants it.</summary>
    private static Reach Permit(AccessGrant caller, string type, Interaction interaction)
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

    /// <summary>Whether a type can belong to a patient compartment (so that a patient/ scope limits it).</summary>
    private static bool PatientData(string type) => type == "Patient" || PatientCompartment.ParamsFor(type).Count > 0;

    private static FhirException OutsideContext(AccessGrant caller, string what) =>
        FhirException.Forbidden($"This token reaches only the compartment of Patient/{caller.Patient}; {what} is outside it.");

    /// <summary>A read of one resource: scope, then (for patient/ scopes) compartment membership.</summary>
    private static void PermitRead(StoreSession s, AccessGrant caller, string type, string id)
    {
        if (Permit(caller, type, Interaction.Read) == Reach.Patient && PatientData(type) && !s.InCompartment(type, id, caller.Patient!))
        {
            throw s.GetCurrent(type, id) is null ? FhirException.NotFound($"{type}/{id} does not exist.") : OutsideContext(caller, $"{type}/{id}");
        }
    }

    /// <summary>Whether an already loaded resource (an _include, a conditional match) may be shown to the caller.</summary>
    private static bool Visible(StoreSession s, AccessGrant caller, StoredVersion v) =>
        caller.ReachOf(v.Type, Interaction.Read) switch
        {
            Reach.Any => true,
            Reach.Patient => !PatientData(v.Type) || s.InCompartment(v.Rid, caller.Patient!),
            _ => false,
        };

    /// <summary>The compartment a search of <paramref name="type"/> is confined to (patient/ scopes: the patient in context).</summary>
    private static string? SearchCompartment(AccessGrant caller, string type, string? asked)
    {
        if (Permit(caller, type, Interaction.Search) == Reach.Any || !PatientData(type))
        {
            return asked;
        }
        if (asked is not null && asked != caller.Patient)
        {
            throw OutsideContext(caller, $"Patient/{asked}");
        }
        return caller.Patient;
    }

    /// <summary>Patient/$everything returns every type: it needs a wildcard read scope, and a patient/ one only for the patient in context.</summary>
    private static void PermitEverything(AccessGrant caller, string patientId)
    {
        if (caller.ReachOf("*", Interaction.Read) == Reach.None)
        {
            throw FhirException.Forbidden("Patient/$everything returns resources of every type: it needs a read scope on * (such as patient/*.rs or user/*.read).");
        }
        if (caller.ReachOf("*", Interaction.Read) == Reach.Patient && patientId != caller.Patient)
        {
            throw OutsideContext(caller, $"Patient/{patientId}");
        }
    }

    /// <summary>History across a type or the whole node: only for scopes that reach beyond one patient.</summary>
    private static void PermitHistory(AccessGrant caller, string? type)
    {
        if (Permit(caller, type ?? "*", Interaction.Search) != Reach.Any)
        {
            throw FhirException.Forbidden($"History of {(type is null ? "the whole node" : "every " + type)} is not available to a token limited to Patient/{caller.Patient}: ask for the history of one resource.");
        }
    }

    /// <summary>
    /// A write: the scope for its interaction, and for patient/ scopes both the stored version it replaces and the new
    /// version must be in the compartment of the patient in context.
    /// </summary>
    private static void PermitWrite(StoreSession s, AccessGrant caller, string type, string id, CurrentInfo? current, Interaction interaction, IndexSet? next)
    {
        if (Permit(caller, type, interaction) != Reach.Patient || !PatientData(type))
        {
            return;
        }
        if (current is { Deleted: false } && !s.InCompartment(type, id, caller.Patient!))
        {
            throw OutsideContext(caller, $"{type}/{id}");
        }
        if (next is not null && !next.Patients.Contains(caller.Patient!))
        {
            throw OutsideContext(caller, $"the {type} written (it names no patient, or another one)");
        }
    }
}
