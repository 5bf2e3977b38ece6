using System.Globalization;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using System.Data.Common;
using Microsoft.Data.Sqlite;
using Ward.Core.Search;

namespace Ward.Tests;

/// <summary>
/// Property tests: date-range and token matching, evaluated by each engine exactly as searches are, against reference
/// models written independently from the FHIR specification.
/// </summary>
public abstract class SearchPropertyTests(DbConnection db) : IDisposable
{
    public void Dispose()
    {
        db.Dispose();
        GC.SuppressFinalize(this);
    }

    protected static DbConnection Opened(DbConnection db)
    {
        db.Open();
        return db;
    }

    private bool Evaluate(string condition, SqlSearch sql, params (string, object?)[] row)
    {
        using var cmd = db.CreateCommand();
        cmd.CommandText = $"SELECT CASE WHEN {condition} THEN 1 ELSE 0 END FROM (SELECT {string.Join(", ", row.Select((r, i) => $"@c{i} AS {r.Item1}"))}) AS t";
        void Bind(string name, object? value)
        {
            var p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value ?? DBNull.Value;
            if (value is null or string)
            {
                // A NULL needs a type on PostgreSQL; every nullable column compared here is text.
                p.DbType = System.Data.DbType.String;
            }
            cmd.Parameters.Add(p);
        }
        for (var i = 0; i < row.Length; i++)
        {
            Bind($"@c{i}", row[i].Item2);
        }
        foreach (var (name, value) in sql.Args)
        {
            Bind(name, value);
        }
        return Convert.ToInt64(cmd.ExecuteScalar(), CultureInfo.InvariantCulture) == 1;
    }

    /// <summary>A FHIR date/dateTime at a random precision, with the instant range it stands for computed from its parts.</summary>
    public sealed record FhirDate(string Text, DateTime Start, DateTime EndExclusive);

    private static Gen<FhirDate> Dates() =>
        from year in Gen.Choose(1998, 2003)
        from month in Gen.Choose(1, 12)
        from day in Gen.Choose(1, 28)
        from hour in Gen.Choose(0, 23)
        from minute in Gen.Choose(0, 59)
        from second in Gen.Choose(0, 59)
        from offset in Gen.Elements(0, 60, -300, 330)
        from precision in Gen.Choose(0, 4)
        select Make(year, month, day, hour, minute, second, offset, precision);

    private static FhirDate Make(int y, int mo, int d, int h, int mi, int s, int offsetMinutes, int precision)
    {
        var ci = CultureInfo.InvariantCulture;
        switch (precision)
        {
            case 0:
                return new(y.ToString("0000", ci), new DateTime(y, 1, 1, 0, 0, 0, DateTimeKind.Utc), new DateTime(y + 1, 1, 1, 0, 0, 0, DateTimeKind.Utc));
            case 1:
                var m = new DateTime(y, mo, 1, 0, 0, 0, DateTimeKind.Utc);
                return new($"{y:0000}-{mo:00}", m, m.AddMonths(1));
            case 2:
                var day = new DateTime(y, mo, d, 0, 0, 0, DateTimeKind.Utc);
                return new($"{y:0000}-{mo:00}-{d:00}", day, day.AddDays(1));
            default:
                var offset = TimeSpan.FromMinutes(offsetMinutes);
                var local = new DateTimeOffset(y, mo, d, h, mi, precision == 3 ? 0 : s, offset);
                var zone = offsetMinutes == 0 ? "Z" : (offset < TimeSpan.Zero ? "-" : "+") + offset.Duration().ToString(@"hh\:mm", ci);
                var text = precision == 3 ? $"{y:0000}-{mo:00}-{d:00}T{h:00}:{mi:00}{zone}" : $"{y:0000}-{mo:00}-{d:00}T{h:00}:{mi:00}:{s:00}{zone}";
                return new(text, local.UtcDateTime, local.UtcDateTime.AddTicks(precision == 3 ? TimeSpan.TicksPerMinute : TimeSpan.TicksPerSecond));
        }
    }

    /// <summary>FHIR R4 §3.1.1.5.7 (search prefixes on ranges), written from the specification's sentences.</summary>
    private static bool Reference(string prefix, FhirDate target, FhirDate search)
    {
        bool contains = target.Start >= search.Start && target.EndExclusive <= search.EndExclusive;
        return prefix switch
        {
            "eq" => contains,
            "ne" => !contains,
            "gt" => target.EndExclusive > search.EndExclusive,
            "lt" => target.Start < search.Start,
            "ge" => target.EndExclusive > search.EndExclusive || contains,
            "le" => target.Start < search.Start || contains,
            "sa" => target.Start >= search.EndExclusive,
            "eb" => target.EndExclusive <= search.Start,
            _ => throw new ArgumentOutOfRangeException(nameof(prefix)),
        };
    }

    [Property(MaxTest = 2000)]
    public Property Date_parsing_gives_the_range_the_text_stands_for() =>
        Prop.ForAll(Dates().ToArbitrary(), d =>
            SearchValues.TryParseDateRange(d.Text, out var lo, out var hi) && lo == d.Start.Ticks && hi == d.EndExclusive.Ticks - 1);

    [Property(MaxTest = 3000)]
    public Property Date_search_matches_the_specification() =>
        Prop.ForAll(Dates().ToArbitrary(), Dates().ToArbitrary(), Gen.Elements("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb").ToArbitrary(), (target, search, prefix) =>
        {
            SearchValues.TryParseDateRange(target.Text, out var lo, out var hi);
            var sql = new SqlSearch(null, new Ward.Core.Crypto.Blinder(new byte[32]), Ward.Core.Storage.StoreEngine.Sqlite);
            var condition = sql.DateCondition("lo", "hi", prefix, search.Text);
            return Evaluate(condition, sql, ("lo", lo), ("hi", hi)) == Reference(prefix, target, search);
        });

    private static readonly string?[] Systems = [null, "http://loinc.org", "http://snomed.info/sct", "urn:oid:1.2.3"];
    private static readonly string[] Codes = ["1234-5", "A", "a", "x|y", "8302-2"];

    private static string Escape(string s) => s.Replace("\\", "\\\\").Replace("|", "\\|").Replace(",", "\\,").Replace("$", "\\$");

    [Property(MaxTest = 2000)]
    public Property Token_search_matches_the_specification() =>
        Prop.ForAll((from ss in Gen.Elements(Systems) from sc in Gen.Elements(Codes) from qs in Gen.Elements(Systems)
                     from qc in Gen.Elements(Codes) from f in Gen.Choose(0, 3) select (ss, sc, qs, qc, f)).ToArbitrary(),
            t =>
            {
                var (storedSystem, storedCode, querySystem, queryCode, form) = t;
                // Forms: code | system|code | |code | system|
                var (text, expected) = form switch
                {
                    0 => (Escape(queryCode), storedCode == queryCode),
                    1 when querySystem is not null => ($"{Escape(querySystem)}|{Escape(queryCode)}", storedSystem == querySystem && storedCode == queryCode),
                    2 or 1 => ($"|{Escape(queryCode)}", storedSystem is null && storedCode == queryCode),
                    _ when querySystem is not null => ($"{Escape(querySystem)}|", storedSystem == querySystem),
                    _ => ($"|{Escape(queryCode)}", storedSystem is null && storedCode == queryCode),
                };
                var sql = new SqlSearch(null, new Ward.Core.Crypto.Blinder(new byte[32]), Ward.Core.Storage.StoreEngine.Sqlite);
                var condition = sql.Token(text, "system", "code");
                return Evaluate(condition, sql, ("system", storedSystem), ("code", storedCode)) == expected;
            });
}

public sealed class SearchPropertyTestsOnSqlite() : SearchPropertyTests(Opened(new SqliteConnection("Data Source=:memory:")));

public sealed class SearchPropertyTestsOnPostgres() : SearchPropertyTests(Opened(new Npgsql.NpgsqlConnection(TestPostgres.AdminConnectionString)));
