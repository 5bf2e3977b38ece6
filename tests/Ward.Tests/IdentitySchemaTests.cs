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

    /// <summary>
    /// The node runs on the identity model compiled ahead of time (IdentityDb.Configure); it must stay what
    /// OnModelCreating builds, or the commands would read and write the tables through a stale mapping.
    /// Regenerate with src/Ward.Server/Identity/CompiledModel/regenerate.sh.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_compiled_identity_model_is_the_model_built_from_OnModelCreating(bool postgres)
    {
        Microsoft.EntityFrameworkCore.Metadata.IModel compiled = postgres
            ? Ward.Server.Identity.PostgresModel.IdentityDbModel.Instance
            : Ward.Server.Identity.SqliteModel.IdentityDbModel.Instance;
        var built = IdentityDb.BuiltModel(postgres);
        Assert.Equal(Describe(built), Describe(compiled));
    }

    private static string Describe(Microsoft.EntityFrameworkCore.Metadata.IModel model) =>
        model.ToDebugString(Microsoft.EntityFrameworkCore.Infrastructure.MetadataDebugStringOptions.LongDefault);

    private static string Normalize(string sql) =>
        string.Join('\n', sql.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));
}
