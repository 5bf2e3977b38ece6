using Hl7.Fhir.Model;
using Ward.Core.Search;

namespace Ward.Core.Policy;

/// <summary>
/// One enforceable provision of an active Consent, as stored in <c>ix_consent</c> with the Consent's other index rows
/// (so that an update or a deletion replaces or removes it): deny or permit, for an actor, a purpose of use and a
/// security label (each null for "any"), within a period.
/// </summary>
internal readonly record struct ConsentRule(string Patient, string Effect, string? Actor, string? Purpose, string? Label, long Lo, long Hi);

internal static class ConsentRules
{
    /// <summary>
    /// The rules of a Consent: every provision (the root and the nested ones) that names a type and at least one actor,
    /// purpose or security label, one rule per combination. A provision that names none of them is the base policy,
    /// which the node's policy file already states; an inactive Consent, or one without a patient, has no rules.
    /// </summary>
    public static List<ConsentRule> Of(Consent consent)
    {
        var rules = new List<ConsentRule>();
        if (consent.Status != Consent.ConsentState.Active || consent.Patient?.Reference is not { } patientRef
            || !ReferenceParser.TryParseLocal(patientRef, out var type, out var patient) || type != "Patient" || consent.Provision is null)
        {
            return rules;
        }
        Walk(consent.Provision, consent.Provision.Period, patient!, rules);
        return rules;
    }

    private static void Walk(Consent.provisionComponent p, Period? inherited, string patient, List<ConsentRule> rules)
    {
        var period = p.Period ?? inherited;
        if (p.Type is { } effect)
        {
            var actors = p.Actor.Select(a => a.Reference?.Reference is { } r && ReferenceParser.TryParseLocal(r, out var t, out var id) ? $"{t}/{id}" : null)
                .Where(a => a is not null).Distinct().ToList();
            var purposes = p.Purpose.Select(c => c.Code).Where(c => !string.IsNullOrEmpty(c)).Distinct().ToList();
            var labels = p.SecurityLabel.Select(c => c.Code).Where(c => !string.IsNullOrEmpty(c)).Distinct().ToList();
            if (actors.Count + purposes.Count + labels.Count > 0)
            {
                var lo = period?.Start is { } s && SearchValues.TryParseDateRange(s, out var slo, out _) ? slo : 0;
                var hi = period?.End is { } e && SearchValues.TryParseDateRange(e, out _, out var ehi) ? ehi : long.MaxValue;
                var name = effect == Consent.ConsentProvisionType.Deny ? "deny" : "permit";
                foreach (var actor in actors.DefaultIfEmpty(null))
                {
                    foreach (var purpose in purposes.DefaultIfEmpty(null))
                    {
                        foreach (var label in labels.DefaultIfEmpty(null))
                        {
                            rules.Add(new ConsentRule(patient, name, actor, purpose, label, lo, hi));
                        }
                    }
                }
            }
        }
        foreach (var nested in p.Provision)
        {
            Walk(nested, period, patient, rules);
        }
    }
}
