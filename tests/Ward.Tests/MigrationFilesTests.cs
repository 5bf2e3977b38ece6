using Ward.Core.Storage;
using Xunit;

namespace Ward.Tests;

/// <summary>The schema migrations as the node reads them from its embedded SQL files, one folder per engine.</summary>
public sealed class MigrationFilesTests
{
    [Fact]
    public void Both_engines_have_every_number_once_in_order_with_the_same_names_and_some_sql()
    {
        Assert.Equal(Migrations.Sqlite.Select(m => (m.Version, m.Name)), Migrations.Postgres.Select(m => (m.Version, m.Name)));
        Assert.Equal(Enumerable.Range(1, Migrations.Sqlite.Count), Migrations.Sqlite.Select(m => m.Version));
        Assert.Equal(Migrations.SealedAudit, Migrations.Sqlite[Migrations.SealedAudit - 1].Version);
        Assert.All(Migrations.Sqlite.Concat(Migrations.Postgres), m =>
        {
            Assert.False(string.IsNullOrWhiteSpace(m.Name));
            Assert.Contains(';', m.Sql);
            Assert.DoesNotContain("-- migration:", m.Sql, StringComparison.Ordinal);
        });
    }
}
