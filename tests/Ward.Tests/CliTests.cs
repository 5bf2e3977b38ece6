using System.Text.Json;
using Ward.Cli;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Core.Transfer;
using Ward.Server;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The ward command: init, import beside a serving node, export, and the refusal to serve in clear.</summary>
public abstract class CliTests(TestNode node)
{
    private static readonly SemaphoreSlim ConsoleDisplay = new(1, 1);

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Init_creates_a_private_node_and_refuses_to_overwrite_it()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-init-" + Guid.NewGuid().ToString("N")[..8]);
        var database = node.IsPostgres ? TestPostgres.CreateDatabase() : null;
        string[] init = database is null ? ["init", "--data", dir] : ["init", "--data", dir, "--database", database];
        try
        {
            Assert.Equal(0, Commands.Build().Parse(init).Invoke());
            Assert.True(File.Exists(Path.Combine(dir, "ward.yaml")));
            Assert.Equal(database is null, File.Exists(Path.Combine(dir, "ward.db")));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(dir, "keys")));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(dir, "keys", "tls.key")));
            var before = File.ReadAllBytes(Path.Combine(dir, "ward.yaml"));
            Assert.Equal(2, Commands.Build().Parse(init).Invoke());
            Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "ward.yaml")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
            if (database is not null)
            {
                TestPostgres.DropDatabase(database);
            }
        }
    }

    [Fact]
    public void Serve_refuses_plain_http_off_loopback_and_https_without_a_certificate()
    {
        var config = node.Config;
        var clear = Assert.Throws<NodeException>(() => WardServer.ParseUrls("http://0.0.0.0:8080", config));
        Assert.Contains("plain HTTP is for loopback only", clear.Message);
        Assert.Single(WardServer.ParseUrls("https://0.0.0.0:8443", config));
        Assert.Single(WardServer.ParseUrls("http://127.0.0.1:8080", config));
        var noTls = new NodeConfig { Tls = new TlsConfig() };
        Assert.Contains("needs TLS", Assert.Throws<NodeException>(() => WardServer.ParseUrls("https://0.0.0.0:8443", noTls)).Message);
    }

    [Fact]
    public async Task Import_works_beside_the_serving_node_and_export_writes_ndjson()
    {
        var samples = Path.Combine(TestData.RepoRoot, "samples", "synthea");
        using (var second = RecordStore.Open(node.Config))
        {
            // The import's progress display is the process's console: one at a time across the engines' test classes.
            await ConsoleDisplay.WaitAsync();
            ImportSummary summary;
            try
            {
                summary = await Commands.ImportAsync(node.Config, second, [samples], CancellationToken.None);
            }
            finally
            {
                ConsoleDisplay.Release();
            }
            Assert.Empty(summary.Errors);
            Assert.Equal(3, summary.ByType["Patient"].Created);
        }
        // The serving node sees what the other writer committed.
        var found = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/Patient?identifier=https://github.com/synthetichealth/synthea|6c8f3e83-c351-ed33-c38d-6be101c275d2"));
        Assert.Equal(1, found.RootElement.GetProperty("total").GetInt32());

        var output = Path.Combine(Path.GetTempPath(), "ward-export-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Assert.Equal(0, Commands.Build().Parse(["export", "--data", node.DataDir, "--out", output]).Invoke());
            var patients = File.ReadAllLines(Path.Combine(output, "Patient.ndjson"));
            Assert.Contains(patients, l => l.Contains("6c8f3e83-c351-ed33-c38d-6be101c275d2"));
            Assert.All(patients, l => Assert.Equal("Patient", JsonDocument.Parse(l).RootElement.GetProperty("resourceType").GetString()));
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }
}

[Collection(SharedNode.Name)]
public sealed class CliTestsOnSqlite(TestNode node) : CliTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class CliTestsOnPostgres(PostgresTestNode node) : CliTests(node);
