using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Ward.Core.Privacy;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>A node with 15 Synthea patients (and the practitioners and organisations they reference); one of them opts out of research.</summary>
public sealed class ResearchNode : IAsyncLifetime
{
    public const int Patients = 15;

    public TestNode Node { get; } = new();
    public string SourceDir { get; } = Path.Combine(Path.GetTempPath(), "ward-research-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>The source resources of the loaded patients (as Synthea wrote them) by server patient id.</summary>
    public Dictionary<string, List<JsonElement>> SourceByPatient { get; } = [];
    public string OptedOut { get; private set; } = "";
    private readonly List<JsonDocument> _docs = [];

    public async Task InitializeAsync()
    {
        await Node.InitializeAsync();
        var files = await SyntheaNode.UnpackAsync(SourceDir);
        foreach (var info in files.Where(f => Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)))
        {
            await PostAsync(await File.ReadAllBytesAsync(info));
        }
        foreach (var file in files.Where(f => !Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)).Take(Patients))
        {
            var doc = JsonDocument.Parse(await File.ReadAllBytesAsync(file));
            _docs.Add(doc);
            await PostAsync(await File.ReadAllBytesAsync(file));
            var resources = doc.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource")).ToList();
            var sourceId = resources.First(r => r.GetProperty("resourceType").GetString() == "Patient").GetProperty("id").GetString();
            using var found = JsonDocument.Parse(await Node.Http.GetStringAsync($"{Node.BaseUrl}/Patient?identifier=https://github.com/synthetichealth/synthea|{sourceId}"));
            SourceByPatient[found.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString()!] = resources;
        }
        OptedOut = SourceByPatient.Keys.First();
        var consent = $$$"""
            {"resourceType":"Consent","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"research"}]},
             "category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/{{{OptedOut}}}"},
             "policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTOUT"}]},
             "provision":{"type":"deny","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}]}}
            """;
        using var response = await Node.Http.PostAsync($"{Node.BaseUrl}/Consent", new StringContent(consent, Encoding.UTF8, "application/fhir+json"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
    }

    private async Task PostAsync(byte[] bundle)
    {
        using var content = new ByteArrayContent(bundle);
        content.Headers.ContentType = new("application/fhir+json");
        using var response = await Node.Http.PostAsync(Node.BaseUrl, content);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
    }

    public async Task DisposeAsync()
    {
        await Node.DisposeAsync();
        foreach (var d in _docs)
        {
            d.Dispose();
        }
        Directory.Delete(SourceDir, recursive: true);
    }
}

public sealed class ResearchTests(ResearchNode research) : IClassFixture<ResearchNode>
{
    private TestNode Node => research.Node;

    private const string Config = """
        project: cardio-2026
        formats: [parquet, csv, ndjson]
        date-shift-days: 120
        quasi-identifiers: [age, gender, department]
        privacy:
          k: 3
          suppression: 0.2
          metric: loss
        """;

    private async Task<string> ExportAsync(string config)
    {
        var dir = Path.Combine(Node.DataDir, "export-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var file = Path.Combine(dir, "project.yaml");
        await File.WriteAllTextAsync(file, config);
        var (code, output) = await WardProcess.OutputAsync(["research", "export", "--data", Node.DataDir, "--config", file, "--out", Path.Combine(dir, "out")]);
        Assert.True(code == 0, output);
        return Path.Combine(dir, "out");
    }

    private static List<Dictionary<string, string>> ReadCsv(string path)
    {
        var lines = Csv.Read(path, ',').ToList();
        return [.. lines.Skip(1).Select(fields => lines[0].Select((h, i) => (h, fields[i])).ToDictionary(x => x.h, x => x.Item2))];
    }

    /// <summary>A Parquet file as read by hyparquet (npm), an implementation independent of the writer.</summary>
    private static async Task<List<Dictionary<string, JsonElement>>> ReadParquetAsync(string path)
    {
        var start = new ProcessStartInfo("node", [Path.Combine(TestData.RepoRoot, "tests", "js", "parquet.mjs"), path]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var node = Process.Start(start)!;
        var stdout = node.StandardOutput.ReadToEndAsync();
        var stderr = node.StandardError.ReadToEndAsync();
        await node.WaitForExitAsync();
        Assert.True(node.ExitCode == 0, "node tests/js/parquet.mjs failed (npm ci --prefix tests/js): " + await stderr);
        return JsonSerializer.Deserialize<List<Dictionary<string, JsonElement>>>(await stdout)!;
    }

    [Fact]
    public async Task The_export_holds_no_direct_identifier_no_opted_out_patient_and_consistent_pseudonyms_and_intervals()
    {
        var outDir = await ExportAsync(Config);
        var blind = Node.Store.Keys.Blind;
        string Pseudonym(string serverId) => blind.Hash('r', "research:cardio-2026", serverId);

        // Every file the export writes.
        foreach (var name in new[] { "patients", "conditions", "observations", "encounters", "medications", "procedures", "immunizations" })
        {
            Assert.True(File.Exists(Path.Combine(outDir, name + ".csv")), name);
            Assert.True(File.Exists(Path.Combine(outDir, name + ".parquet")), name);
        }
        foreach (var name in new[] { "Patient.ndjson", "Condition.ndjson", "risk-report.json", "risk-report.html", "dictionary.csv" })
        {
            Assert.True(File.Exists(Path.Combine(outDir, name)), name);
        }

        // No birth date (shifted dates of other events may fall on any day, so dates are not searched for as text).
        Assert.DoesNotContain("birth", await File.ReadAllTextAsync(Path.Combine(outDir, "Patient.ndjson")), StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("birth", File.ReadLines(Path.Combine(outDir, "patients.csv")).First(), StringComparison.OrdinalIgnoreCase);

        // No direct identifier of the source: names, identifiers, contact details, addresses, ids.
        var forbidden = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (serverId, resources) in research.SourceByPatient)
        {
            forbidden.Add(serverId);
            var patient = resources.First(r => r.GetProperty("resourceType").GetString() == "Patient");
            forbidden.Add(patient.GetProperty("id").GetString()!);
            foreach (var name in patient.GetProperty("name").EnumerateArray())
            {
                forbidden.Add(name.GetProperty("family").GetString()!);
                foreach (var given in name.GetProperty("given").EnumerateArray())
                {
                    forbidden.Add(given.GetString()!);
                }
            }
            foreach (var id in patient.GetProperty("identifier").EnumerateArray())
            {
                forbidden.Add(id.GetProperty("value").GetString()!);
            }
            foreach (var t in patient.TryGetProperty("telecom", out var telecom) ? telecom.EnumerateArray() : [])
            {
                forbidden.Add(t.GetProperty("value").GetString()!);
            }
            foreach (var a in patient.GetProperty("address").EnumerateArray())
            {
                forbidden.UnionWith(a.GetProperty("line").EnumerateArray().Select(l => l.GetString()!));
                forbidden.Add(a.GetProperty("city").GetString()!);
                if (a.TryGetProperty("postalCode", out var postal))
                {
                    forbidden.Add(postal.GetString()!);
                }
            }
            foreach (var r in resources.Where(r => r.GetProperty("resourceType").GetString() != "Patient"))
            {
                forbidden.Add(r.GetProperty("id").GetString()!);
            }
        }
        forbidden.RemoveWhere(v => v.Length < 5);
        var texts = new List<(string File, string Text)>();
        foreach (var file in Directory.GetFiles(outDir).Where(f => !f.EndsWith(".parquet", StringComparison.Ordinal)))
        {
            texts.Add((Path.GetFileName(file), await File.ReadAllTextAsync(file)));
        }
        foreach (var file in Directory.GetFiles(outDir, "*.parquet"))
        {
            texts.Add((Path.GetFileName(file), JsonSerializer.Serialize(await ReadParquetAsync(file))));
        }
        foreach (var (file, text) in texts)
        {
            var leaked = forbidden.Where(v => text.Contains(v, StringComparison.Ordinal)).ToList();
            Assert.True(leaked.Count == 0, $"{file} holds source identifiers: {string.Join(", ", leaked.Take(5))}");
        }

        // The opted-out patient is nowhere; every other patient is there once, under the project pseudonym.
        var patients = ReadCsv(Path.Combine(outDir, "patients.csv"));
        var expected = research.SourceByPatient.Keys.Where(p => p != research.OptedOut).Select(Pseudonym).Order().ToList();
        Assert.Equal(expected, patients.Select(p => p["patient"]).Order().ToList());
        var pseudonyms = patients.Select(p => p["patient"]).ToHashSet();
        foreach (var table in new[] { "conditions", "observations", "encounters", "medications", "procedures", "immunizations" })
        {
            var rows = ReadCsv(Path.Combine(outDir, table + ".csv"));
            Assert.NotEmpty(rows);
            Assert.All(rows, r => Assert.Contains(r["patient"], pseudonyms));
            Assert.DoesNotContain(Pseudonym(research.OptedOut), rows.Select(r => r["patient"]));
        }
        using (var report = JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(outDir, "risk-report.json"))))
        {
            Assert.Equal(1, report.RootElement.GetProperty("optedOut").GetInt32());
            Assert.Equal(ResearchNode.Patients - 1, report.RootElement.GetProperty("patients").GetInt32());
        }

        // Each patient's encounters move by one offset (never 0, within the configured range): intervals are kept.
        var encounters = ReadCsv(Path.Combine(outDir, "encounters.csv"));
        foreach (var (serverId, resources) in research.SourceByPatient.Where(p => p.Key != research.OptedOut))
        {
            var source = resources.Where(r => r.GetProperty("resourceType").GetString() == "Encounter")
                .Select(r => DateTimeOffset.Parse(r.GetProperty("period").GetProperty("start").GetString()!, CultureInfo.InvariantCulture)).Order().ToList();
            var exported = encounters.Where(e => e["patient"] == Pseudonym(serverId)).Select(e => DateTimeOffset.Parse(e["start"], CultureInfo.InvariantCulture)).Order().ToList();
            Assert.Equal(source.Count, exported.Count);
            var shifts = source.Zip(exported, (s, e) => (e - s).TotalDays).Distinct().ToList();
            Assert.Single(shifts);
            Assert.InRange(Math.Abs(shifts[0]), 1, 120);
            Assert.Equal(Math.Round(shifts[0]), shifts[0]);
        }

        // The released quasi-identifiers are 3-anonymous (suppressed records as *), departments at most two characters.
        var classes = patients.Where(p => p["age"] != "*").GroupBy(p => (p["age"], p["gender"], p["department"]));
        Assert.All(classes, c => Assert.True(c.Count() >= 3, $"class {c.Key} has {c.Count()} records"));
        Assert.All(patients, p => Assert.True(p["department"].Length <= 2 || p["department"] == "unknown", p["department"]));
        Assert.All(patients, p => Assert.Equal("", p["race"]));
        Assert.All(patients, p => Assert.False(int.TryParse(p["age"], CultureInfo.InvariantCulture, out var age) && age > 89, "an age over 89 is released only as 90+"));

        // The Parquet tables hold what the CSV tables hold.
        var parquet = await ReadParquetAsync(Path.Combine(outDir, "observations.parquet"));
        var csv = ReadCsv(Path.Combine(outDir, "observations.csv"));
        Assert.Equal(csv.Count, parquet.Count);
        for (var i = 0; i < csv.Count; i++)
        {
            Assert.Equal(csv[i]["patient"], parquet[i]["patient"].GetString());
            Assert.Equal(csv[i]["code"], parquet[i]["code"].GetString());
            Assert.Equal(csv[i]["value"], parquet[i]["value"].ValueKind == JsonValueKind.Null ? "" : parquet[i]["value"].GetDouble().ToString("R", CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public async Task Pseudonyms_are_stable_within_a_project_and_unlinkable_across_projects()
    {
        var first = ReadCsv(Path.Combine(await ExportAsync(Config), "patients.csv")).Select(p => p["patient"]).Order().ToList();
        var again = ReadCsv(Path.Combine(await ExportAsync(Config), "patients.csv")).Select(p => p["patient"]).Order().ToList();
        var other = ReadCsv(Path.Combine(await ExportAsync(Config.Replace("cardio-2026", "onco-2027", StringComparison.Ordinal)), "patients.csv")).Select(p => p["patient"]).ToList();
        Assert.Equal(first, again);
        Assert.Empty(first.Intersect(other));
    }

    [Fact]
    public async Task A_bad_configuration_is_refused_with_every_mistake_named_and_nothing_written()
    {
        var dir = Path.Combine(Node.DataDir, "bad-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var file = Path.Combine(dir, "project.yaml");
        await File.WriteAllTextAsync(file, "project: 'a b'\ntables: [patients, notes]\nformats: [xlsx]\nquasi-identifiers: [name]\nprivacy:\n  k: 0\n");
        var (code, output) = await WardProcess.OutputAsync(["research", "export", "--data", Node.DataDir, "--config", file, "--out", Path.Combine(dir, "out")]);
        Assert.Equal(2, code);
        foreach (var mistake in new[] { "project:", "'notes' is not a research table", "'xlsx'", "'name' is not a quasi-identifier", "privacy: k and l" })
        {
            Assert.Contains(mistake, output, StringComparison.Ordinal);
        }
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }

    [Fact]
    public void Differential_privacy_counts_leave_out_the_opted_out_patient()
    {
        var cells = Node.Store.Read(s => PrivateCounts.Exact(s, Node.Store.Keys.Blind, new CountQuery("Patient", ["gender"], [], 1), DateTime.UtcNow));
        Assert.Equal(ResearchNode.Patients - 1, cells.Sum(c => c.Count));
        Assert.Equal(CountQuery.Genders, cells.Select(c => c.Key[0]));
    }

    [Fact]
    public async Task A_researcher_spends_their_budget_over_HTTP_and_is_refused_once_it_is_spent()
    {
        var name = "researcher-" + Guid.NewGuid().ToString("N")[..6];
        var add = await WardProcess.RunAsync(["users", "add", "--data", Node.DataDir, "--username", name, "--role", "researcher", "--password-stdin"], "a-long-enough-password-123");
        Assert.True(add.Code == 0, add.Stdout + add.Stderr);
        var (granted, grantOutput) = await WardProcess.OutputAsync(["research", "budget", "--data", Node.DataDir, "--researcher", name, "--epsilon", "1"]);
        Assert.True(granted == 0, grantOutput);
        var token = await WardProcess.RunAsync(["token", "--data", Node.DataDir, "--user", name, "--scope", "user/*.rs"]);
        Assert.True(token.Code == 0, token.Stderr);
        using var http = Node.NewHttp(token.Stdout.Trim());
        var url = Node.Origin + "/research/query";
        async Task<(HttpStatusCode, JsonDocument)> Ask(string json)
        {
            using var response = await http.PostAsync(url, new StringContent(json, Encoding.UTF8, "application/json"));
            return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()));
        }
        var question = """{"count":"Condition","by":["age-band","code"],"codes":["44054006","59621000"],"epsilon":0.4}""";
        var (status, first) = await Ask(question);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(CountQuery.AgeBands.Length * 2, first.RootElement.GetProperty("cells").GetArrayLength());
        Assert.Equal(2, first.RootElement.GetProperty("sensitivity").GetInt32());
        Assert.All(first.RootElement.GetProperty("cells").EnumerateArray(), c => Assert.True(c.GetProperty("count").GetInt64() >= 0));
        // A malformed question is refused and charges nothing.
        var (bad, badBody) = await Ask("""{"count":"Condition","by":["name"],"epsilon":0.4}""");
        Assert.Equal(HttpStatusCode.BadRequest, bad);
        Assert.Equal("OperationOutcome", badBody.RootElement.GetProperty("resourceType").GetString());
        Assert.Equal(HttpStatusCode.OK, (await Ask(question)).Item1);
        var (refused, outcome) = await Ask(question);
        Assert.Equal(HttpStatusCode.Forbidden, refused);
        Assert.Contains("remains", outcome.RootElement.GetProperty("issue")[0].GetProperty("diagnostics").GetString(), StringComparison.Ordinal);
        using var budget = JsonDocument.Parse(await http.GetStringAsync(Node.Origin + "/research/budget"));
        Assert.Equal(0.8, budget.RootElement.GetProperty("spent").GetDouble(), 9);

        // The CLI charges the same ledger: 0.2 still fits, then nothing more does.
        var (cliCode, cliOutput) = await WardProcess.OutputAsync(["research", "query", "--data", Node.DataDir, "--researcher", name, "--count", "Patient", "--by", "gender", "--epsilon", "0.2"]);
        Assert.True(cliCode == 0, cliOutput);
        Assert.Contains("\"remaining\": 0", cliOutput, StringComparison.Ordinal);
        (cliCode, cliOutput) = await WardProcess.OutputAsync(["research", "query", "--data", Node.DataDir, "--researcher", name, "--epsilon", "0.01"]);
        Assert.Equal(2, cliCode);

        // Other roles cannot ask.
        using var clinician = Node.NewHttp(Node.Token(new Ward.Core.Access.AccessGrant("doc", "app", "clinician", Ward.Core.Access.SmartScopes.Parse("user/*.rs"), null, "Practitioner/doc")));
        using var denied = await clinician.PostAsync(url, new StringContent(question, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
    }
}

public sealed class DifferentialPrivacyTests
{
    /// <summary>P(k) of the discrete Laplace law with α = exp(−ε/Δ).</summary>
    private static double Law(long k, double epsilon, int sensitivity)
    {
        var a = Math.Exp(-epsilon / sensitivity);
        return (1 - a) / (1 + a) * Math.Pow(a, Math.Abs(k));
    }

    /// <summary>Pearson's χ² of draws against a law, over the values −B..B and the two tails.</summary>
    private static double ChiSquare(long[] draws, double epsilon, int sensitivity, int bound)
    {
        var observed = new double[2 * bound + 3];
        foreach (var d in draws)
        {
            observed[d < -bound ? 0 : d > bound ? observed.Length - 1 : d + bound + 1]++;
        }
        var expected = new double[observed.Length];
        for (var k = -bound; k <= bound; k++)
        {
            expected[k + bound + 1] = Law(k, epsilon, sensitivity);
        }
        var tail = (1 - expected.Sum()) / 2;
        expected[0] = expected[^1] = tail;
        return observed.Select((o, i) => Math.Pow(o - expected[i] * draws.Length, 2) / (expected[i] * draws.Length)).Sum();
    }

    [Theory]
    [InlineData(0.5, 1)]
    [InlineData(1.0, 3)]
    public void The_noise_follows_the_discrete_Laplace_law(double epsilon, int sensitivity)
    {
        var draws = Enumerable.Range(0, 200_000).Select(_ => DiscreteLaplace.Noise(epsilon, sensitivity)).ToArray();
        // 23 cells, 22 degrees of freedom: χ² above 63 has probability below 1e-6 under the law.
        Assert.InRange(ChiSquare(draws, epsilon, sensitivity, 10), 0, 63);
        // The same test rejects a law whose ε is 20 % off: the test can fail.
        Assert.True(ChiSquare(draws, epsilon * 1.2, sensitivity, 10) > 63);
        var a = Math.Exp(-epsilon / sensitivity);
        Assert.InRange(draws.Average(), -0.05 * sensitivity / epsilon, 0.05 * sensitivity / epsilon);
        var variance = draws.Select(d => (double)d * d).Average();
        Assert.InRange(variance / (2 * a / ((1 - a) * (1 - a))), 0.95, 1.05);
    }

    [Fact]
    public void Questions_whose_cells_would_come_from_the_data_or_that_spend_nothing_are_refused()
    {
        Assert.Throws<PrivacyException>(() => new CountQuery("Condition", ["code"], [], 0.1).Validate());
        Assert.Throws<PrivacyException>(() => new CountQuery("Patient", ["code"], ["x"], 0.1).Validate());
        Assert.Throws<PrivacyException>(() => new CountQuery("Patient", [], [], 0).Validate());
        Assert.Throws<PrivacyException>(() => new CountQuery("Patient", [], [], double.NaN).Validate());
        Assert.Throws<PrivacyException>(() => new CountQuery("AuditEvent", [], [], 0.1).Validate());
        Assert.Throws<PrivacyException>(() => DiscreteLaplace.Noise(-1, 1));
    }

    [Theory]
    [InlineData("0", "0-9")]
    [InlineData("89", "80-89")]
    [InlineData("90+", "90+")]
    [InlineData("unknown", "unknown")]
    public void Ages_fall_in_fixed_bands(string age, string band) => Assert.Equal(band, PrivateCounts.AgeBand(age));

    [Theory]
    [InlineData("75001", "75")]
    [InlineData("97411", "974")]
    [InlineData("20000", "2A")]
    [InlineData("20200", "2B")]
    [InlineData("02139", "02")]
    [InlineData("1", null)]
    public void Postal_codes_are_reduced_to_the_department(string postal, string? department) =>
        Assert.Equal(department, ResearchData.Department(postal));

    [Theory]
    [InlineData("2019-05-03", 10, "2019-05-13")]
    [InlineData("2019-05-03T10:22:01-04:00", -3, "2019-04-30T10:22:01-04:00")]
    [InlineData("2019-05-03T10:22:01Z", 1, "2019-05-04T10:22:01Z")]
    [InlineData("2019-05-03T10:22:01.250+02:00", 1, "2019-05-04T10:22:01.250+02:00")]
    [InlineData("2019-05", 20, "2019-06")]
    [InlineData("2019", -200, "2018")]
    [InlineData("not a date", 5, null)]
    public void Dates_move_by_whole_days_in_their_own_precision(string value, int days, string? shifted) =>
        Assert.Equal(shifted, ResearchData.Shift(value, days));
}
