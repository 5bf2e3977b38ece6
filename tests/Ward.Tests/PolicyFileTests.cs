using System.Diagnostics;
using System.Text.RegularExpressions;
using Ward.Core.Policy;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// A policy file that misspells a name is refused, never run: a misspelt role would leave that role with no rules, a
/// misspelt key would leave its setting at the default. <c>ward policy check</c> and <c>ward serve</c> read the file
/// through the same validation; the refusal names the line, the column and the nearest valid name.
/// </summary>
public sealed class PolicyFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ward-policy-" + Guid.NewGuid().ToString("N")[..8]);

    public PolicyFileTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    // a role, a purpose, a resource type, a top-level key, a role's key, a section's key, a kind of fact, a fact's writer,
    // an access kind, a confidentiality level, an explanation
    [InlineData("  clinician:", "  clinican:", "roles: 'clinican' is not a role of this node", "clinician")]
    [InlineData("  nurse:", "  Nurse:", "roles: 'Nurse' is not a role of this node", "nurse")]
    [InlineData("purposes: [PUBHLTH]", "purposes: [PUBHEALTH]", "roles.public-health.purposes: 'PUBHEALTH' is not a purpose of use", "PUBHLTH")]
    [InlineData("read: [ImagingStudy]", "read: [ImagingStudies]", "roles.researcher.read: 'ImagingStudies' is not a FHIR R4 resource type", "ImagingStudy")]
    [InlineData("write: [Consent, Observation,", "write: [Consent, observation,", "roles.patient.write: 'observation' is not a FHIR R4 resource type", "Observation")]
    [InlineData("\nrelationship:", "\nrelationships:", "'relationships' is not a key of the policy", "relationship")]
    [InlineData("    purposes: [HRESCH]", "    purpose-of-use: [HRESCH]", "roles.researcher: 'purpose-of-use' is not a key of roles.researcher", "purposes")]
    [InlineData("    break-glass: true\n  nurse:", "    breakglass: true\n  nurse:", "roles.clinician: 'breakglass' is not a key of roles.clinician", "break-glass")]
    [InlineData("  small-cell: 10", "  smallcell: 10", "counts: 'smallcell' is not a key of counts", "small-cell")]
    [InlineData("  care-team: [service]", "  careteam: [service]", "facts: 'careteam' is not a kind of fact", "care-team")]
    [InlineData("  group: [service, admin]", "  group: [service, admn]", "facts.group: 'admn' is not a role of this node", "admin")]
    [InlineData("    access: counts", "    access: count", "roles.public-health.access: 'count' is not an access kind", "counts")]
    [InlineData("    max-confidentiality: N", "    max-confidentiality: n", "roles.service.max-confidentiality: 'n' is not a confidentiality level", "N")]
    [InlineData("explanations: [care-team, encounter]", "explanations: [careteam, encounter]", "relationship.explanations: 'careteam' is not an explanation", "care-team")]
    public async Task A_misspelt_name_is_refused_with_its_place_and_the_nearest_valid_name(string valid, string misspelt, string message, string nearest)
    {
        var policy = AccessPolicy.ReadDefault().ReplaceLineEndings("\n");
        var at = policy.IndexOf(valid, StringComparison.Ordinal);
        Assert.True(at >= 0 && policy.IndexOf(valid, at + 1, StringComparison.Ordinal) < 0, $"'{valid}' is not once in the default policy");
        var file = Path.Combine(_dir, "policy.yaml");
        await File.WriteAllTextAsync(file, policy[..at] + misspelt + policy[(at + valid.Length)..]);
        var line = policy[..at].Count(c => c == '\n') + 1 + valid.TakeWhile(c => c == '\n').Count();

        var (code, stdout, stderr) = await WardProcess.RunAsync(["policy", "check", "--data", _dir, "--file", file]);
        Assert.True(code == 2, stdout + stderr);
        var text = Regex.Replace(stderr + stdout, @"\s+", " ");
        Assert.Matches($@"line {line}, column \d+: {Regex.Escape(message)}", text);
        Assert.Contains($"did you mean '{nearest}'?", text);
        Assert.DoesNotContain("The policy is valid", text);
        Assert.DoesNotContain("   at ", stdout + stderr);
    }

    [Fact]
    public async Task The_default_policy_validates_and_so_does_a_node_copy_of_it()
    {
        var (code, output) = await WardProcess.OutputAsync(["policy", "check", "--data", _dir, "--file", WriteDefault(_dir)]);
        Assert.True(code == 0, output);
        Assert.Contains("The policy is valid", output);
        Assert.Equal(AccessPolicy.Default.Roles.Keys.Order(), Ward.Core.Access.Roles.All.Order());
    }

    [Fact]
    public async Task Serve_refuses_to_start_with_a_misspelt_policy()
    {
        var (init, initOutput) = await WardProcess.OutputAsync(["init", "--data", _dir]);
        Assert.True(init == 0, initOutput);
        var policy = Path.Combine(_dir, AccessPolicy.FileName);
        await File.WriteAllTextAsync(policy, AccessPolicy.ReadDefault().Replace("  clinician:", "  clinican:", StringComparison.Ordinal));
        using var process = Process.Start(WardProcess.StartInfo(["serve", "--data", _dir, "--urls", $"http://127.0.0.1:{PrivateCluster.FreePort()}"]))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("ward serve started with a policy that misspells a role.");
        }
        var text = Regex.Replace(await stderr + await stdout, @"\s+", " ");
        Assert.True(process.ExitCode == 2, text);
        Assert.Contains("'clinican' is not a role of this node", text);
        Assert.Contains("did you mean 'clinician'?", text);
    }

    private static string WriteDefault(string dir)
    {
        var file = Path.Combine(dir, "default-copy.yaml");
        File.WriteAllText(file, AccessPolicy.ReadDefault());
        return file;
    }
}
