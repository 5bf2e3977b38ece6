using System.Text.Json;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Ward.Cli;
using Ward.Core.Privacy;

namespace Ward.Tests;

/// <summary>
/// The tabular anonymisation engine (<c>ward deid kanon</c>): ARX 3.9.2's published optimum on the Adult data set to the
/// last digit, and properties checked against a brute-force search of every transformation on small random tables.
/// </summary>
public sealed class AnonymizationTests
{
    private static readonly string Adult = Path.Combine(TestData.Root, "adult");
    private static readonly string[] AdultColumns = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass", "occupation", "salary-class"];

    private static (TableAnonymization.Outcome Outcome, JsonDocument Report, string[] Released) RunAdult(PrivacyModel model, LossMetric metric, string? sensitive = null)
    {
        var dir = Directory.CreateTempSubdirectory("ward-kanon-").FullName;
        try
        {
            var settings = new TableSettings(Path.Combine(Adult, "adult.csv"), ';', Adult, sensitive is null ? AdultColumns : [.. AdultColumns.Where(c => c != sensitive)],
                model, metric, Path.Combine(dir, "out.csv"), Path.Combine(dir, "report.json"), sensitive);
            var outcome = TableAnonymization.Run(settings);
            return (outcome, JsonDocument.Parse(File.ReadAllText(settings.Report)), File.ReadAllLines(settings.Output));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Adult_k5_without_suppression_matches_ARX_3_9_2_exactly()
    {
        var (outcome, report, released) = RunAdult(new PrivacyModel(K: 5, SuppressionLimit: 0), LossMetric.Loss);
        int[] arx = [0, 4, 1, 1, 3, 2, 2, 1, 0];
        Assert.Equal(arx, outcome.Best.Levels);
        Assert.Equal(0.5731509655590044, outcome.Best.Value);
        Assert.Equal(0, outcome.Best.Suppressed);
        Assert.Equal(24, outcome.Best.ClassSizes.Length);
        Assert.Equal(69, outcome.Best.ClassSizes.Min());
        Assert.Equal(3951, outcome.Best.ClassSizes.Max());

        var root = report.RootElement;
        Assert.Equal(4, root.GetProperty("levels").GetProperty("age").GetInt32());
        Assert.Equal("loss", root.GetProperty("metric").GetString());
        Assert.Equal(0.5731509655590044, root.GetProperty("value").GetDouble());
        Assert.Equal(24, root.GetProperty("classes").GetProperty("count").GetInt32());
        Assert.Equal(1d / 69, root.GetProperty("risk").GetProperty("after").GetProperty("prosecutor").GetProperty("highest").GetDouble());
        Assert.Equal(1d, root.GetProperty("risk").GetProperty("before").GetProperty("prosecutor").GetProperty("highest").GetDouble());

        // The released table: same records, every quasi-identifier combination shared by at least 5 records, ages gone.
        Assert.Equal(30162 + 1, released.Length);
        var groups = released.Skip(1).GroupBy(l => l, StringComparer.Ordinal).ToList();
        Assert.Equal(24, groups.Count);
        Assert.All(groups, g => Assert.True(g.Count() >= 5));
        Assert.All(released.Skip(1), l => Assert.Equal("*", l.Split(';')[1]));
    }

    [Fact]
    public void Suppression_stays_within_its_limit_and_buys_less_generalisation()
    {
        var (strict, _, _) = RunAdult(new PrivacyModel(K: 5, SuppressionLimit: 0), LossMetric.Loss);
        var (loose, report, released) = RunAdult(new PrivacyModel(K: 5, SuppressionLimit: 0.02), LossMetric.Loss);
        Assert.InRange(loose.Best.Suppressed, 1, (int)(0.02 * 30162));
        Assert.True(loose.Best.Value < strict.Best.Value, $"{loose.Best.Value} vs {strict.Best.Value}");
        Assert.Equal(loose.Best.Suppressed, report.RootElement.GetProperty("suppressed").GetInt32());
        var rows = released.Skip(1).Select(l => l.Split(';')).ToList();
        Assert.Equal(loose.Best.Suppressed, rows.Count(r => r.All(v => v == "*")));
        Assert.All(rows.Where(r => !r.All(v => v == "*")).GroupBy(r => string.Join(';', r)), g => Assert.True(g.Count() >= 5));
    }

    [Fact]
    public void Distinct_l_diversity_holds_in_every_released_class()
    {
        var (outcome, _, released) = RunAdult(new PrivacyModel(K: 5, SuppressionLimit: 0.01, L: 2), LossMetric.Loss, sensitive: "salary-class");
        Assert.True(outcome.Best.Suppressed <= 301);
        var header = released[0].Split(';');
        var salary = Array.IndexOf(header, "salary-class");
        var classes = released.Skip(1).Select(l => l.Split(';'))
            .Where(r => r.Where((_, i) => i != salary).Any(v => v != "*"))
            .GroupBy(r => string.Join(';', r.Where((_, i) => i != salary)));
        Assert.All(classes, g => Assert.True(g.Select(r => r[salary]).Distinct().Count() >= 2, $"class {g.Key} has one salary class"));
    }

    [Fact]
    public void An_unknown_value_or_a_missing_hierarchy_is_refused_with_the_reason()
    {
        var dir = Directory.CreateTempSubdirectory("ward-kanon-bad-").FullName;
        try
        {
            File.WriteAllLines(Path.Combine(dir, "t.csv"), ["zip;age", "75001;40", "75002;41"]);
            File.WriteAllLines(Path.Combine(dir, "t_hierarchy_zip.csv"), ["75001;750**;*"]);
            string[] args = ["deid", "kanon", "--input", Path.Combine(dir, "t.csv"), "--hierarchies", dir, "--qi", "zip", "--k", "2",
                "--out", Path.Combine(dir, "o.csv"), "--report", Path.Combine(dir, "r.json")];
            var error = Assert.Throws<PrivacyException>(() => TableAnonymization.Run(new TableSettings(Path.Combine(dir, "t.csv"), ';', dir, ["zip"],
                new PrivacyModel(2, 0), LossMetric.Loss, Path.Combine(dir, "o.csv"), Path.Combine(dir, "r.json"))));
            Assert.Contains("'75002' of 'zip' is not in its hierarchy", error.Message);
            Assert.Equal(2, Commands.Build().Parse(args).Invoke());
            Assert.Contains("No hierarchy for 'age'", Assert.Throws<PrivacyException>(() => Hierarchy.Load(dir, "age", ';')).Message);
            Assert.False(File.Exists(Path.Combine(dir, "o.csv")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Quoted_csv_fields_with_separators_quotes_and_line_breaks_survive_the_release()
    {
        var dir = Directory.CreateTempSubdirectory("ward-kanon-csv-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "t.csv"),
                "city;\"note; free text\"\r\n\"Paris; 1er\";\"said \"\"hello\"\"\"\r\n\"Paris; 2e\";\"two\nlines\"\r\nLyon;plain\r\nLyon;x\r\n");
            File.WriteAllText(Path.Combine(dir, "t_hierarchy_city.csv"), "\"Paris; 1er\";Paris;*\n\"Paris; 2e\";Paris;*\nLyon;Lyon;*\n");
            var settings = new TableSettings(Path.Combine(dir, "t.csv"), ';', dir, ["city"], new PrivacyModel(2, 0), LossMetric.Loss,
                Path.Combine(dir, "o.csv"), Path.Combine(dir, "r.json"));
            var outcome = TableAnonymization.Run(settings);
            Assert.Equal([1], outcome.Best.Levels);
            var released = Csv.Read(settings.Output, ';').ToList();
            Assert.Equal(["city", "note; free text"], released[0]);
            Assert.Equal(["Paris", "said \"hello\""], released[1]);
            Assert.Equal(["Paris", "two\nlines"], released[2]);
            Assert.Equal(["Lyon", "plain"], released[3]);
            Assert.Equal(5, released.Count);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>A random small table over three attributes with hierarchies of 3, 2 and 4 levels.</summary>
    internal sealed record SmallTable(int[][] Rows, int[] Sensitive, int K, double Suppression, LossMetric Metric);

    private static readonly Hierarchy[] SmallHierarchies = MakeSmallHierarchies();

    private static Hierarchy[] MakeSmallHierarchies()
    {
        var dir = Directory.CreateTempSubdirectory("ward-kanon-h-").FullName;
        try
        {
            File.WriteAllLines(Path.Combine(dir, "s_hierarchy_a.csv"), Enumerable.Range(0, 6).Select(i => $"a{i};a{i / 2}x;*"));
            File.WriteAllLines(Path.Combine(dir, "s_hierarchy_b.csv"), Enumerable.Range(0, 3).Select(i => $"b{i};*"));
            File.WriteAllLines(Path.Combine(dir, "s_hierarchy_c.csv"), Enumerable.Range(0, 8).Select(i => $"c{i};c{i / 2}y;c{i / 4}z;*"));
            return [Hierarchy.Load(dir, "a", ';'), Hierarchy.Load(dir, "b", ';'), Hierarchy.Load(dir, "c", ';')];
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static Arbitrary<SmallTable> SmallTables() =>
        (from n in Gen.Choose(8, 60)
         from rows in Gen.ArrayOf(from a in Gen.Choose(0, 5) from b in Gen.Choose(0, 2) from c in Gen.Choose(0, 7) select new[] { a, b, c }, n)
         from sensitive in Gen.ArrayOf(Gen.Choose(0, 2), n)
         from k in Gen.Choose(2, 5)
         from suppression in Gen.Elements(0d, 0.1d, 0.25d)
         from metric in Gen.Elements(LossMetric.Loss, LossMetric.Dm, LossMetric.Aecs, LossMetric.Height, LossMetric.Precision, LossMetric.Entropy)
         select new SmallTable(rows, sensitive, k, suppression, metric)).ToArbitrary();

    [Property(MaxTest = 300)]
    public Property The_optimum_is_valid_and_no_transformation_beats_it() =>
        Prop.ForAll(SmallTables(), t =>
        {
            var anonymizer = new Anonymizer(SmallHierarchies, t.Rows, t.Sensitive, 3);
            var model = new PrivacyModel(t.K, t.Suppression);
            var (best, _) = anonymizer.Optimum(model, t.Metric);
            // Brute force: every node, grouped from scratch (another code path than the search's roll-up).
            var all = anonymizer.Lattice().Select(l => anonymizer.Evaluate(l, model, t.Metric)).Where(r => r.Anonymous).ToList();
            if (best is null)
            {
                return all.Count == 0;
            }
            var recomputed = anonymizer.Evaluate(best.Levels, model, t.Metric);
            return recomputed.Anonymous
                && best.Suppressed <= Math.Floor(t.Suppression * t.Rows.Length + 1e-9)
                && best.ClassSizes.All(s => s >= t.K)
                && Math.Abs(recomputed.Value - best.Value) < 1e-9
                && all.All(r => r.Value >= best.Value - 1e-9);
        });

    [Property(MaxTest = 200)]
    public Property The_heuristic_for_large_lattices_ends_on_a_minimal_valid_transformation_never_better_than_the_optimum() =>
        Prop.ForAll(SmallTables(), t =>
        {
            var anonymizer = new Anonymizer(SmallHierarchies, t.Rows, t.Sensitive, 3);
            var model = new PrivacyModel(t.K, t.Suppression);
            var (greedy, _) = anonymizer.Greedy(model, t.Metric);
            var (best, _) = anonymizer.Optimum(model, t.Metric);
            if (greedy is null || best is null)
            {
                return greedy is null && best is null;
            }
            var specialisations = Enumerable.Range(0, 3).Where(q => greedy.Levels[q] > 0)
                .Select(q => greedy.Levels.Select((l, i) => i == q ? l - 1 : l).ToArray());
            return greedy.Anonymous
                && greedy.Value >= best.Value - 1e-9
                && specialisations.All(s => !anonymizer.Evaluate(s, model, t.Metric).Anonymous);
        });

    [Property(MaxTest = 200)]
    public Property l_diversity_and_t_closeness_hold_in_every_released_class() =>
        Prop.ForAll(SmallTables(), Gen.Elements(1, 2, 3).ToArbitrary(), Gen.Elements<double?>(null, 0.2, 0.4).ToArbitrary(), (t, l, tc) =>
        {
            var anonymizer = new Anonymizer(SmallHierarchies, t.Rows, t.Sensitive, 3);
            var model = new PrivacyModel(t.K, t.Suppression, l, tc);
            var (best, _) = anonymizer.Optimum(model, LossMetric.Loss);
            if (best is null)
            {
                return anonymizer.Lattice().All(n => !anonymizer.Evaluate(n, model, LossMetric.Loss).Anonymous);
            }
            var global = Enumerable.Range(0, 3).Select(s => (double)t.Sensitive.Count(x => x == s) / t.Sensitive.Length).ToArray();
            return anonymizer.Release(best.Levels, model).Where(c => !c.Suppressed).All(c =>
            {
                var values = c.Tuples.SelectMany(tuple => Enumerable.Range(0, t.Rows.Length).Where(r => anonymizer.TupleOf(t.Rows[r]) == tuple).Select(r => t.Sensitive[r])).ToList();
                var distance = Enumerable.Range(0, 3).Sum(s => Math.Abs((double)values.Count(v => v == s) / values.Count - global[s])) / 2;
                return c.Count >= t.K && values.Distinct().Count() >= l && (tc is null || distance <= tc + 1e-12);
            });
        });
}
