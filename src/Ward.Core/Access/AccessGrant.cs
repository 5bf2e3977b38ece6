namespace Ward.Core.Access;

/// <summary>
/// Who is calling and what their token grants: the verified subject (a user or a backend client), the client that
/// obtained the token, the user's role, the SMART scopes, and the patient in context for <c>patient/</c> scopes.
/// Every <see cref="Fhir.FhirRequest"/> carries one; nothing reaches the store without it.
/// </summary>
internal sealed record AccessGrant(string Subject, string? ClientId, string? Role, SmartScopes Scopes, string? Patient, string? FhirUser)
{
    /// <summary>The node's operator acting through the command line on the data folder (<c>ward import</c>).</summary>
    public static readonly AccessGrant Operator = new("operator", null, "admin", SmartScopes.Parse("system/*.cruds"), null, null);

    /// <summary>The purpose of use (HL7 v3 PurposeOfUse) the role acts for by default.</summary>
    public string? Purpose => Role switch
    {
        "clinician" or "nurse" or "service" => "TREAT",
        "management" or "admin" or "security-officer" or "dpo" => "HOPERAT",
        "public-health" => "PUBHLTH",
        "researcher" => "HRESCH",
        "patient" => "PATRQT",
        _ => null,
    };

    /// <summary>The reach for one interaction on one type; a <c>patient/</c> scope reaches nothing without a patient in context.</summary>
    public Reach ReachOf(string type, Interaction interaction)
    {
        var reach = Scopes.ReachOf(type, interaction);
        return reach == Reach.Patient && Patient is null ? Reach.None : reach;
    }
}
