using System.Data.Common;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Ward.Core.Crypto;
using Ward.Core.Search;

namespace Ward.Core.Storage;

/// <summary>
/// One row of an index table in a form that compares exactly: its table, its parameter (empty for the tables that have
/// none) and every column value, each value length-prefixed (null apart) so that no two different rows read alike.
/// <see cref="Shown"/> says which row it is without the clinical values (patient and actor ids, security labels and
/// consent terms only): it is printed by <c>ward verify</c>.
/// </summary>
internal readonly record struct IndexRow(string Table, string Param, string Key, string Shown)
{
    /// <summary>The rows <see cref="StoreSession"/> writes for a version's index (with <paramref name="patients"/> as its compartments).</summary>
    public static IEnumerable<IndexRow> Of(IndexSet ix, IEnumerable<string> patients)
    {
        foreach (var e in ix.Strings) yield return Row("ix_string", e.Param, e.Normalized, e.Exact);
        foreach (var e in ix.Tokens) yield return Row("ix_token", e.Param, e.System, e.Code, e.Text);
        foreach (var e in ix.Dates) yield return Row("ix_date", e.Param, e.Lo, e.Hi);
        foreach (var e in ix.Numbers) yield return Row("ix_number", e.Param, e.Lo, e.Hi);
        foreach (var e in ix.Quantities) yield return Row("ix_quantity", e.Param, e.System, e.Code, e.Lo, e.Hi);
        foreach (var e in ix.Uris) yield return Row("ix_uri", e.Param, e.Value);
        foreach (var e in ix.References) yield return Row("ix_reference", e.Param, e.TargetType, e.TargetId, e.Url);
        foreach (var e in ix.Composites) yield return Row("ix_composite", e.Param, e.System1, e.Code1, e.System2, e.Code2, e.Lo, e.Hi);
        foreach (var p in patients) yield return Row("ix_compartment", "", p);
        foreach (var c in ix.Consents) yield return Row("ix_consent", "", c.Patient, c.Effect, c.Actor, c.Purpose, c.Label, c.Lo, c.Hi);
    }

    /// <summary>The index tables with their columns after <c>rid</c> (and <c>param</c> where they have one), and which of them are numbers.</summary>
    internal static readonly (string Table, bool HasParam, string[] Columns, char[] Kinds)[] Tables =
    [
        ("ix_string", true, ["value", "exact"], ['s', 's']),
        ("ix_token", true, ["system", "code", "text"], ['s', 's', 's']),
        ("ix_date", true, ["lo", "hi"], ['l', 'l']),
        ("ix_number", true, ["lo", "hi"], ['d', 'd']),
        ("ix_quantity", true, ["system", "code", "lo", "hi"], ['s', 's', 'd', 'd']),
        ("ix_uri", true, ["value"], ['s']),
        ("ix_reference", true, ["target_type", "target_id", "url"], ['s', 's', 's']),
        ("ix_composite", true, ["system1", "code1", "system2", "code2", "lo", "hi"], ['s', 's', 's', 's', 'd', 'd']),
        ("ix_compartment", false, ["patient_id"], ['s']),
        ("ix_consent", false, ["patient_id", "effect", "actor", "purpose", "label", "lo", "hi"], ['s', 's', 's', 's', 's', 'l', 'l']),
    ];

    internal static IndexRow Row(string table, string param, params object?[] values)
    {
        var key = new StringBuilder();
        foreach (var v in values)
        {
            var text = Text(v);
            key.Append(text is null ? "-" : $"{text.Length.ToString(CultureInfo.InvariantCulture)}:{text}").Append(';');
        }
        return new IndexRow(table, param, key.ToString(), Describe(table, param, values));
    }

    private static string? Text(object? v) => v switch
    {
        null or DBNull => null,
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => ((double)f).ToString("R", CultureInfo.InvariantCulture),
        long l => l.ToString(CultureInfo.InvariantCulture),
        int i => i.ToString(CultureInfo.InvariantCulture),
        string s => s,
        byte[] b => "0x" + Convert.ToHexString(b),
        _ => Convert.ToString(v, CultureInfo.InvariantCulture),
    };

    /// <summary>Which row it is, as far as it can be said without clinical values.</summary>
    private static string Describe(string table, string param, object?[] v) => table switch
    {
        "ix_compartment" => $"compartment of Patient/{Text(v[0])}",
        "ix_reference" => v[0] is not null || v[1] is not null ? $"{param} -> {Text(v[0])}/{Text(v[1])}" : $"{param} -> an absolute or conditional reference",
        "ix_consent" => $"{Text(v[1])} of Patient/{Text(v[0])} for {Text(v[2]) ?? "any actor"}, purpose {Text(v[3]) ?? "any"}, label {Text(v[4]) ?? "any"}, "
            + $"from {Ticks(v[5])} to {Ticks(v[6])}",
        "ix_token" when param == "_security" => $"_security {Text(v[0])}|{Text(v[1])}",
        _ => param,
    };

    private static string Ticks(object? v) => v switch
    {
        long t when t <= 0 => "the beginning",
        long t when t >= DateTime.MaxValue.Ticks => "no end",
        long t => new DateTime(t, DateTimeKind.Utc).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
        _ => Text(v) ?? "?",
    };
}

/// <summary>A resource row with its current version opened, as <c>ward verify</c> derives its index again.</summary>
/// <param name="Deleted">The row's <c>deleted</c> column (2: erased).</param>
/// <param name="ExpectedDeleted">What the version and its key say the column must be (null: the current version is not stored).</param>
/// <param name="Data">The current version opened (null: deleted, erased, or it could not be opened, see <paramref name="Problem"/>).</param>
/// <param name="Owner">The patient whose data key sealed it (null: the shared key).</param>
internal sealed record IndexedVersion(long Rid, string Type, string Id, int Version, int Deleted, int? ExpectedDeleted, string? Compartment, long Labelled,
    long LastUpdated, long? VersionLastUpdated, byte[]? Data, string? Owner, string? Problem)
{
    public string Reference => $"{Type}/{Id}";
}

internal sealed partial class StoreSession
{
    /// <summary>The row id that ends a page of <paramref name="count"/> resource rows after <paramref name="afterRid"/> (null: fewer are left, the page runs to the end).</summary>
    public long? PageEnd(long afterRid, int count)
    {
        using var reader = Cmd("SELECT rid FROM resource WHERE rid > @a ORDER BY rid LIMIT @n", ("@a", afterRid), ("@n", count)).ExecuteReader();
        long last = 0;
        var rows = 0;
        while (reader.Read())
        {
            last = reader.GetInt64(0);
            rows++;
        }
        return rows == count ? last : null;
    }

    /// <summary>The patients whose data key was erased (their ids were taken out of other resources' compartments).</summary>
    public HashSet<string> ErasedPatients()
    {
        var erased = new HashSet<string>(StringComparer.Ordinal);
        using var reader = Cmd("SELECT owner FROM data_key WHERE kind = @k AND wrapped IS NULL", ("@k", PatientKind)).ExecuteReader();
        while (reader.Read())
        {
            erased.Add(reader.GetString(0));
        }
        return erased;
    }

    /// <summary>Every index row of the resource rows in (<paramref name="afterRid"/>, <paramref name="uptoRid"/>], by row id, whether or not such a resource exists.</summary>
    public Dictionary<long, List<IndexRow>> IndexRowsBetween(long afterRid, long uptoRid)
    {
        var rows = new Dictionary<long, List<IndexRow>>();
        foreach (var (table, hasParam, columns, kinds) in IndexRow.Tables)
        {
            var sql = $"SELECT rid, {(hasParam ? "param" : "''")}, {string.Join(", ", columns)} FROM {table} WHERE rid > @a AND rid <= @b";
            using var reader = Cmd(sql, ("@a", afterRid), ("@b", uptoRid)).ExecuteReader();
            while (reader.Read())
            {
                var values = new object?[columns.Length];
                for (var i = 0; i < columns.Length; i++)
                {
                    values[i] = Value(reader, 2 + i, kinds[i]);
                }
                var rid = reader.GetInt64(0);
                if (!rows.TryGetValue(rid, out var list))
                {
                    rows[rid] = list = [];
                }
                list.Add(IndexRow.Row(table, Convert.ToString(reader.GetValue(1), CultureInfo.InvariantCulture) ?? "", values));
            }
        }
        return rows;
    }

    /// <summary>A column as the index writes it (text, a 64-bit integer or a double); a value of another kind (put there by hand) stays as it reads, so that it compares unequal.</summary>
    private static object? Value(DbDataReader reader, int column, char kind)
    {
        var v = reader.GetValue(column);
        return (kind, v) switch
        {
            (_, DBNull) => null,
            ('l', long or int) => Convert.ToInt64(v, CultureInfo.InvariantCulture),
            ('d', double or float) => Convert.ToDouble(v, CultureInfo.InvariantCulture),
            ('s', string) => v,
            _ => $"[{v.GetType().Name}] {Convert.ToString(v, CultureInfo.InvariantCulture)}",
        };
    }

    /// <summary>
    /// The resource rows in (<paramref name="afterRid"/>, <paramref name="uptoRid"/>] in row order, each with its current
    /// version opened under the node keys, one at a time (a large one is not kept longer than its turn).
    /// </summary>
    public IEnumerable<IndexedVersion> IndexedVersionsBetween(long afterRid, long uptoRid)
    {
        using var reader = Cmd($"""
            SELECT r.rid, r.type, r.id, r.version, v.last_updated, v.deleted, v.method, v.data, v.kid, k.wrapped, k.master_kid, k.kind, k.owner,
                r.deleted, r.compartment, r.labelled, r.last_updated
            FROM resource r LEFT JOIN version v ON v.rid = r.rid AND v.version = r.version LEFT JOIN data_key k ON k.kid = v.kid
            WHERE r.rid > @a AND r.rid <= @b ORDER BY r.rid
            """, ("@a", afterRid), ("@b", uptoRid)).ExecuteReader();
        while (reader.Read())
        {
            yield return Indexed(reader);
        }
    }

    private IndexedVersion Indexed(DbDataReader r)
    {
        var (type, id, version) = (r.GetString(1), r.GetString(2), r.GetInt32(3));
        var stored = !r.IsDBNull(5);
        var erasedKey = !r.IsDBNull(8) && !r.IsDBNull(11) && r.GetString(11) == PatientKind && r.IsDBNull(9);
        int? expectedDeleted = !stored ? null : erasedKey ? 2 : r.GetInt32(5);
        var owner = !r.IsDBNull(11) && r.GetString(11) == PatientKind ? r.GetString(12) : null;
        byte[]? data = null;
        string? problem = null;
        if (!stored)
        {
            problem = $"its current version {version} is not stored";
        }
        else if (!r.IsDBNull(7) && !erasedKey)
        {
            try
            {
                data = Open(r, type, id, version);
            }
            catch (Exception e) when (e is RecordIntegrityException or RecordErasedException or KeyIntegrityException or CryptographicException or IOException)
            {
                problem = $"its current version {version} does not open under the node keys";
            }
        }
        return new IndexedVersion(r.GetInt64(0), type, id, version, (int)Integer(r, 13), expectedDeleted, r.IsDBNull(14) ? null : Convert.ToString(r.GetValue(14), CultureInfo.InvariantCulture),
            Integer(r, 15), Integer(r, 16), stored ? r.GetInt64(4) : null, data, owner, problem);
    }

    /// <summary>An integer column; -1 for a value of another kind (which the node never writes there).</summary>
    private static long Integer(DbDataReader r, int column) => r.GetValue(column) is long or int ? Convert.ToInt64(r.GetValue(column), CultureInfo.InvariantCulture) : -1;
}
