using System.Diagnostics;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The npm client fhir-kit-client works against the node unchanged (tests/js/smoke.mjs).</summary>
public abstract class JavaScriptClientTests(TestNode node)
{
    [Fact]
    public async Task Fhir_kit_client_smoke_test_passes()
    {
        var folder = Path.Combine(TestData.RepoRoot, "tests", "js");
        Assert.True(Directory.Exists(Path.Combine(folder, "node_modules", "fhir-kit-client")),
            "fhir-kit-client is not installed: run 'npm ci --prefix tests/js' (.ci/run does).");
        var start = new ProcessStartInfo("node", ["smoke.mjs", node.BaseUrl, node.Token(TestNode.AdminGrant)])
        {
            WorkingDirectory = folder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 0, $"node smoke.mjs failed:\n{await stdout}\n{await stderr}");
        Assert.Contains("fhir-kit-client smoke test passed", await stdout);
    }
}

[Collection(SharedNode.Name)]
public sealed class JavaScriptClientTestsOnSqlite(TestNode node) : JavaScriptClientTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class JavaScriptClientTestsOnPostgres(PostgresTestNode node) : JavaScriptClientTests(node);
