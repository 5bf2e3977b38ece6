using Ward.Core.Storage;
using Ward.Server.Identity;

namespace Ward.Tests;

public class IdentitySchemaTests
{
    /// <summary>The identity tables come from a numbered migration; it must stay what EF's model of them says.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_identity_migration_creates_exactly_the_model_of_identity_data(bool postgres)
    {
        var script = IdentityDb.CreateScript(postgres);
        if (Environment.GetEnvironmentVariable("WARD_PRINT_IDENTITY_SCHEMA") is { Length: > 0 } dir)
        {
            File.WriteAllText(Path.Combine(dir, postgres ? "identity.postgres.sql" : "identity.sqlite.sql"), script);
        }
        var migration = (postgres ? Migrations.Postgres : Migrations.Sqlite).Single(m => m.Name.StartsWith("identity", StringComparison.Ordinal)).Sql;
        Assert.Equal(Normalize(script), Normalize(migration));
    }

    private static string Normalize(string sql) =>
        string.Join('\n', sql.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));
}
