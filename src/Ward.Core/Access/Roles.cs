using Ward.Core.Node;

namespace Ward.Core.Access;

/// <summary>The roles of the node (the policy engine gives them their meaning).</summary>
internal static class Roles
{
    public const string Patient = "patient";
    public const string Service = "service";
    public const string Researcher = "researcher";

    public static readonly IReadOnlyList<string> All =
        ["clinician", "nurse", "management", "public-health", "researcher", "patient", "security-officer", "dpo", "admin", "service"];

    /// <summary>Staff must sign in with a second factor (TOTP); patients may choose to.</summary>
    public static bool IsStaff(string role) => role is not (Patient or Service);

    public static void Check(string role)
    {
        if (!All.Contains(role))
        {
            throw new NodeException($"'{role}' is not a role of this node: {string.Join(", ", All)}.");
        }
    }
}
