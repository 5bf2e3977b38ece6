using System.Globalization;

namespace Ward.Core.Storage;

/// <summary>
/// Numbered schema migrations, one folder per engine (<c>Storage/Migrations/sqlite</c>, <c>Storage/Migrations/postgres</c>),
/// one SQL file per migration (<c>NNNN-name.sql</c>, its first line <c>-- migration: </c> and the name recorded in
/// <c>schema_migration</c>), embedded in the assembly. Both engines have the same numbers and names: a feature adds its
/// migration to both. Never edit a published one: add the next number.
/// </summary>
internal static class Migrations
{
    private const string Header = "-- migration: ";

    /// <summary>
    /// Migration 10: audit entries sealed under the audit key, the audit columns that name patients and people blinded,
    /// and reference URLs (unresolved conditional references among them) blinded. The SQL only lifts the audit log's
    /// ban on updates; the node then converts what is stored with its keys and restores the ban
    /// (<see cref="StoreSession.SealAuditLog"/>), in the same transaction.
    /// </summary>
    public const int SealedAudit = 10;

    /// <summary>The audit log's ban on updates that migration 10 lifts, as <see cref="StoreSession.SealAuditLog"/> restores it.</summary>
    public static string AuditNoUpdate(StoreEngine engine) => engine == StoreEngine.Sqlite
        ? "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
        : "CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry FOR EACH ROW EXECUTE FUNCTION ward_append_only();";

    /// <summary>
    /// A <c>resource</c> row's compartments summarised from <c>ix_compartment</c>: what migration 8 wrote on every row, and
    /// what erasure writes again on a row it removes a patient from.
    /// </summary>
    internal const string CompartmentOfRow =
        "(SELECT CASE count(*) WHEN 0 THEN NULL WHEN 1 THEN max(c.patient_id) ELSE '*' END FROM ix_compartment c WHERE c.rid = resource.rid)";

    public static readonly IReadOnlyList<(int Version, string Name, string Sql)> Sqlite = Load("sqlite");

    // PostgreSQL: the same tables and columns. Text compares byte-wise (COLLATE "C"), as in SQLite, so that prefix ranges
    // and sort orders are the same on both engines whatever the database's locale. The identifiers of new resources are
    // reserved from resource_rid_seq by the writer (batched writes need them before the rows are sent).
    public static readonly IReadOnlyList<(int Version, string Name, string Sql)> Postgres = Load("postgres");

    /// <summary>An engine's migrations in order, from the resources <c>migrations/ENGINE/NNNN-name.sql</c>.</summary>
    private static List<(int Version, string Name, string Sql)> Load(string engine)
    {
        var assembly = typeof(Migrations).Assembly;
        var prefix = $"migrations/{engine}/";
        var migrations = new List<(int Version, string Name, string Sql)>();
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var reader = new StreamReader(assembly.GetManifestResourceStream(resource)!);
            var header = reader.ReadLine();
            if (header is null || !header.StartsWith(Header, StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"The migration {resource} does not begin with '{Header}' and its name.");
            }
            var version = int.Parse(resource.AsSpan(prefix.Length, 4), CultureInfo.InvariantCulture);
            if (version != migrations.Count + 1)
            {
                throw new InvalidOperationException($"The migration {resource} is number {version}, where {migrations.Count + 1} comes next.");
            }
            migrations.Add((version, header[Header.Length..], reader.ReadToEnd().TrimEnd('\n')));
        }
        return migrations;
    }
}
