using Microsoft.AspNetCore.Identity;
using Microsoft.AspNetCore.Identity.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore;
using Ward.Core.Access;
using Ward.Core.Node;

namespace Ward.Server.Identity;

/// <summary>A person who signs in: staff (with a role and usually a Practitioner) or a patient (with their Patient).</summary>
internal sealed class WardUser : IdentityUser
{
    /// <summary>One of <see cref="Roles.All"/>.</summary>
    public string Role { get; set; } = "";

    /// <summary>The FHIR resource the user is (<c>Practitioner/ID</c>, <c>Patient/ID</c>), the SMART <c>fhirUser</c>.</summary>
    public string? FhirUser { get; set; }

    /// <summary>A disabled account cannot sign in nor obtain tokens; it is kept for the audit trail.</summary>
    public bool Disabled { get; set; }
}

/// <summary>A client assertion (<c>private_key_jwt</c>) already used: its <c>jti</c> may not come back while an assertion carrying it could be accepted.</summary>
internal sealed class UsedAssertion
{
    /// <summary>Client id and jti, hashed (SHA-256, hex) so that the key length is bounded whatever the client sends.</summary>
    public string Id { get; set; } = "";

    /// <summary>When the jti may be forgotten: the assertion's exp plus the allowed clock skew (after that no assertion carrying it is accepted).</summary>
    public DateTime ExpiresUtc { get; set; }
}

/// <summary>
/// Identity data in the node's own database (SQLite file or PostgreSQL): ASP.NET Core Identity's users, OpenIddict's
/// applications, authorizations, scopes and tokens, and the used client assertions. Its tables are created by the
/// node's numbered migrations (never by EF), whose SQL a test keeps equal to this model.
/// </summary>
internal sealed class IdentityDb(DbContextOptions<IdentityDb> options) : IdentityDbContext<WardUser>(options)
{
    public DbSet<UsedAssertion> UsedAssertions => Set<UsedAssertion>();

    protected override void OnModelCreating(ModelBuilder builder)
    {
        base.OnModelCreating(builder);
        builder.UseOpenIddict();
        builder.Entity<UsedAssertion>(e =>
        {
            e.ToTable("WardUsedAssertions");
            e.HasKey(a => a.Id);
            e.Property(a => a.Id).HasMaxLength(64);
            e.HasIndex(a => a.ExpiresUtc);
        });
    }

    /// <summary>
    /// Points EF at the node's database, with the model compiled ahead of time for its engine (CompiledModel/, made by
    /// <c>dotnet ef dbcontext optimize</c> from <see cref="OnModelCreating"/>): building the model at run time cost every
    /// short command (<c>ward token</c>, <c>ward users list</c>) a large share of its start (ADR 0017). A test keeps both equal to the built model.
    /// </summary>
    public static void Configure(DbContextOptionsBuilder options, NodeConfig config)
    {
        if (config.IsPostgres)
        {
            options.UseNpgsql(config.Database).UseModel(PostgresModel.IdentityDbModel.Instance);
        }
        else
        {
            options.UseSqlite($"Data Source={config.DatabasePath};Default Timeout=30").UseModel(SqliteModel.IdentityDbModel.Instance);
        }
        options.UseOpenIddict();
    }

    /// <summary>The model as <see cref="OnModelCreating"/> builds it at run time, for an engine (what the compiled models must equal).</summary>
    public static Microsoft.EntityFrameworkCore.Metadata.IModel BuiltModel(bool postgres)
    {
        using var db = new IdentityDb(BuiltOptions(postgres));
        return db.Model;
    }

    /// <summary>The DDL that EF would create for this model on an engine (what migration 3 must equal).</summary>
    public static string CreateScript(bool postgres)
    {
        using var db = new IdentityDb(BuiltOptions(postgres));
        return db.Database.GenerateCreateScript();
    }

    private static DbContextOptions<IdentityDb> BuiltOptions(bool postgres)
    {
        var options = new DbContextOptionsBuilder<IdentityDb>();
        if (postgres)
        {
            options.UseNpgsql("Host=localhost");
        }
        else
        {
            options.UseSqlite("Data Source=:memory:");
        }
        options.UseOpenIddict();
        return options.Options;
    }
}
