using Ward.Cli;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Tests;

/// <summary><c>ward init --database</c>: the password never on the command line or in ward.yaml, and no node takes over another's database.</summary>
public sealed class PostgresCliTests
{
    private static string NewDir() => Path.Combine(Path.GetTempPath(), "ward-pginit-" + Guid.NewGuid().ToString("N")[..8]);

    [Fact]
    public void A_connection_string_with_a_password_is_refused_and_nothing_is_created()
    {
        var dir = NewDir();
        var clean = TestPostgres.CreateDatabase();
        var database = clean + ";Password=secret-on-the-command-line";
        try
        {
            var error = Assert.Throws<NodeException>(() => NodeConfig.Init(dir, "pw", database));
            Assert.Contains("holds a password", error.Message);
            Assert.Contains("PGPASSWORD", error.Message);
            Assert.Equal(2, Commands.Build().Parse(["init", "--data", dir, "--database", database]).Invoke());
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            TestPostgres.DropDatabase(clean);
        }
    }

    [Fact]
    public void Init_on_postgres_keeps_no_database_file_and_refuses_a_database_that_holds_a_node()
    {
        var (first, second) = (NewDir(), NewDir());
        var database = TestPostgres.CreateDatabase();
        try
        {
            Assert.Equal(0, Commands.Build().Parse(["init", "--data", first, "--database", database]).Invoke());
            var config = NodeConfig.Load(first);
            Assert.True(config.IsPostgres);
            Assert.Equal(database, config.Database);
            Assert.DoesNotContain("Password", File.ReadAllText(Path.Combine(first, NodeConfig.FileName)), StringComparison.OrdinalIgnoreCase);
            Assert.Empty(Directory.EnumerateFiles(first, "*.db*"));
            using (var store = RecordStore.Open(config))
            {
                Assert.Equal(StoreEngine.Postgres, store.Engine);
                Assert.Equal(Migrations.Postgres.Max(m => m.Version), store.SchemaVersion);
            }

            // A second node on the same database would fight over it: refused, and the half-made folder is removed.
            Assert.Equal(2, Commands.Build().Parse(["init", "--data", second, "--database", database]).Invoke());
            Assert.False(Directory.Exists(second));
            var error = Assert.Throws<NodeException>(() => RecordStore.Open(NodeConfig.Init(second, "again", database), create: true));
            Assert.Contains("already holds a Ward node's records", error.Message);
        }
        finally
        {
            foreach (var dir in new[] { first, second }.Where(Directory.Exists))
            {
                Directory.Delete(dir, recursive: true);
            }
            TestPostgres.DropDatabase(database);
        }
    }

    [Fact]
    public async Task A_wrong_password_from_the_environment_is_refused_with_the_way_out()
    {
        var dir = NewDir();
        var database = TestPostgres.CreateDatabase();
        try
        {
            // In a child process, so that the environment variable is its own.
            var builder = new Npgsql.NpgsqlConnectionStringBuilder(database) { Username = "ward_no_such_role" };
            var (code, output) = await WardProcess.OutputAsync(["init", "--data", dir, "--database", builder.ConnectionString], ("PGPASSWORD", "not-the-password"));
            Assert.True(code == 2, output);
            Assert.Contains("refused the node", output);
            Assert.Contains("PGPASSWORD", output);
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            TestPostgres.DropDatabase(database);
        }
    }
}
