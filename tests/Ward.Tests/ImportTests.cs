using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// The HIV set of fhir-data-pipes (79 patients, 46,497 resources) unpacked once, and what it defines: for each resource
/// type, the number of distinct resources its files create.
/// </summary>
public sealed class HivSet : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "ward-hiv-" + Guid.NewGuid().ToString("N")[..8]);
    public string Dir => Path.Combine(Root, "fhir-data-pipes-synthea-hiv-79");

    /// <summary>
    /// Distinct resources per type in the source, which a node that imported it must hold exactly. Every entry with
    /// request method POST or PUT is one resource, except: a POST with <c>ifNoneExist</c> whose criteria an earlier
    /// entry already named (the conditional create matches the resource that entry made, so it adds none), and a PUT
    /// to a Type/id that an earlier entry already put (an update of the same resource). The information bundles of
    /// this set are batches of conditional creates (Organization, Location, Practitioner by identifier) and plain
    /// creates (PractitionerRole); its patient bundles are transactions of plain creates. Resource types an import
    /// never creates (none here) would not appear.
    /// </summary>
    public SortedDictionary<string, long> Expected { get; } = new(StringComparer.Ordinal);

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        var archive = Path.Combine(TestData.Root, "synthea", "large", "fhir-data-pipes-synthea-hiv-79.tar.zst");
        using (var tar = Process.Start(new ProcessStartInfo("tar", ["--zstd", "-xf", archive, "-C", Root]) { RedirectStandardError = true })!)
        {
            await tar.WaitForExitAsync();
            Assert.True(tar.ExitCode == 0, "tar --zstd failed (install zstd): " + await tar.StandardError.ReadToEndAsync());
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(Dir, "*.json"))
        {
            using var bundle = JsonDocument.Parse(await File.ReadAllBytesAsync(file));
            foreach (var entry in bundle.RootElement.GetProperty("entry").EnumerateArray())
            {
                var request = entry.GetProperty("request");
                var method = request.GetProperty("method").GetString();
                var url = request.GetProperty("url").GetString()!;
                var type = entry.GetProperty("resource").GetProperty("resourceType").GetString()!;
                var distinct = method switch
                {
                    "POST" when request.TryGetProperty("ifNoneExist", out var criteria) => seen.Add($"{type}?{criteria.GetString()}"),
                    "POST" => true,
                    "PUT" => seen.Add(url),
                    _ => false,
                };
                if (distinct)
                {
                    Expected[type] = Expected.GetValueOrDefault(type) + 1;
                }
            }
        }
        Assert.Equal(46_497, Expected.Values.Sum());
    }

    public Task DisposeAsync()
    {
        Directory.Delete(Root, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>
/// <c>ward import</c> follows the data, not the file names: the HIV set's patient files sort before the information
/// bundles whose Organizations, Locations and Practitioners they name by conditional reference, and load all the same;
/// NDJSON loads its valid lines and names each bad one by its line; a summary says what is already present.
/// </summary>
public sealed class ImportTests(HivSet hiv) : IClassFixture<HivSet>
{
    [Fact]
    public async Task The_HIV_set_imports_though_its_patients_sort_before_their_organizations_and_every_type_count_equals_the_source()
    {
        // In ordinal order the patient files (capitalised names) come before hospitalInformation and practitionerInformation.
        var files = Directory.GetFiles(hiv.Dir, "*.json").Order(StringComparer.Ordinal).Select(Path.GetFileName).ToList();
        Assert.True(files.IndexOf(files.First(f => f!.StartsWith("hospitalInformation", StringComparison.Ordinal))) > files.Count / 2);
        await ImportsExactly(hiv.Dir);
    }

    [Fact]
    public async Task The_HIV_set_imported_in_reverse_order_gives_the_same_counts()
    {
        var reversed = Path.Combine(hiv.Root, "reversed");
        Directory.CreateDirectory(reversed);
        var files = Directory.GetFiles(hiv.Dir, "*.json").Order(StringComparer.Ordinal).Reverse().ToList();
        for (var i = 0; i < files.Count; i++)
        {
            File.Copy(files[i], Path.Combine(reversed, $"{i:D3}-{Path.GetFileName(files[i])}"));
        }
        try
        {
            await ImportsExactly(reversed);
        }
        finally
        {
            Directory.Delete(reversed, recursive: true);
        }
    }

    [Fact]
    public async Task A_reimport_reports_the_conditional_creates_as_already_present()
    {
        using var node = new NodeDir();
        await node.InitAsync();
        var hospital = Directory.GetFiles(hiv.Dir, "hospitalInformation*.json").Single();
        var first = await WardProcess.OutputAsync(["import", "--data", node.Dir, hospital]);
        Assert.True(first.Code == 0, first.Output);
        Assert.Equal((hiv.Expected["Organization"], 0, 0, 0), Row(first.Output, "Organization"));
        var again = await WardProcess.OutputAsync(["import", "--data", node.Dir, hospital]);
        Assert.True(again.Code == 0, again.Output);
        // Created, Updated, Already present, Failed: nothing was written the second time.
        Assert.Equal((0, 0, hiv.Expected["Organization"], 0), Row(again.Output, "Organization"));
        Assert.Equal((0, 0, hiv.Expected["Location"], 0), Row(again.Output, "Location"));
        Assert.Contains($"Imported 0 resources from 1 files", again.Output);
        Assert.Equal(hiv.Expected["Organization"], (await node.CountsAsync())["Organization"]);
    }

    [Fact]
    public async Task Ndjson_imports_its_valid_lines_and_reports_each_bad_one_by_its_line_number()
    {
        using var node = new NodeDir();
        await node.InitAsync();
        var file = Path.Combine(node.Dir, "mixed.ndjson");
        string[] lines =
        [
            """{"resourceType":"Patient","id":"nd-1","name":[{"family":"Valid"}]}""",
            """{"resourceType":"Patient","id":"nd-2","name":[{"family":""",
            """{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/nd-1"}}""",
            "",
            """{"resourceType":"Spaceship","id":"s-1"}""",
            """{"resourceType":"Observation","id":"nd-3","code":{"text":"no status"},"subject":{"reference":"Patient/nd-1"}}""",
            """{"resourceType":"Patient","id":"nd-4","gender":"robot"}""",
            """{"resourceType":"Patient","id":"nd-5","name":[{"family":"Also valid"}]}""",
        ];
        await File.WriteAllLinesAsync(file, lines);
        var (code, output) = await WardProcess.OutputAsync(["import", "--data", node.Dir, file]);
        Assert.True(code == 1, output);
        var text = Regex.Replace(output, @"\s+", " ");
        Assert.Contains($"{file}:2: The body is not well-formed JSON", text);
        Assert.Contains($"{file}:5: The resource is not valid FHIR R4: Encountered unknown resource type 'Spaceship'", text);
        Assert.Contains($"{file}:6: The resource is not valid FHIR R4", text);
        Assert.Contains($"{file}:7: The resource is not valid FHIR R4", text);
        foreach (var good in new[] { 1, 3, 4, 8 })
        {
            Assert.DoesNotContain($"{file}:{good}:", text);
        }
        var counts = await node.CountsAsync();
        Assert.Equal(2, counts["Patient"]);
        Assert.Equal(1, counts["Observation"]);
    }

    [Fact]
    public async Task A_conditional_reference_that_nothing_defines_is_reported_by_name_and_a_patients_without_its_values()
    {
        using var node = new NodeDir();
        await node.InitAsync();
        var folder = Path.Combine(node.Dir, "bundles");
        Directory.CreateDirectory(folder);
        static string Transaction(string entries) => $$"""{"resourceType":"Bundle","type":"transaction","entry":[{{entries}}]}""";
        const string Patient = """{"fullUrl":"urn:uuid:6f1c2a9e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"secret-999"}]},"request":{"method":"POST","url":"Patient"}}""";
        string Encounter(string organization) => $$$"""{"resource":{"resourceType":"Encounter","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"urn:uuid:6f1c2a9e-0000-4000-8000-000000000001"},"serviceProvider":{"reference":"Organization?identifier=urn:test|{{{organization}}}"}},"request":{"method":"POST","url":"Encounter"}}""";
        // 1 names an Organization that 2, sorted after it, defines; 3 names one nothing defines; 4 names a patient nothing defines.
        await File.WriteAllTextAsync(Path.Combine(folder, "1-patient.json"), Transaction(Patient + "," + Encounter("later")));
        await File.WriteAllTextAsync(Path.Combine(folder, "2-organization.json"), Transaction("""{"resource":{"resourceType":"Organization","identifier":[{"system":"urn:test","value":"later"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:test|later"}}"""));
        await File.WriteAllTextAsync(Path.Combine(folder, "3-orphan.json"), Transaction(Encounter("nowhere").Replace("urn:uuid:6f1c2a9e-0000-4000-8000-000000000001", "Patient/none", StringComparison.Ordinal)));
        await File.WriteAllTextAsync(Path.Combine(folder, "4-observation.json"), Transaction("""{"resource":{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient?identifier=urn:mrn|secret-1000"}},"request":{"method":"POST","url":"Observation"}}"""));

        var (code, output) = await WardProcess.OutputAsync(["import", "--data", node.Dir, folder]);
        Assert.True(code == 1, output);
        var text = Regex.Replace(output, @"\s+", " ");
        Assert.Contains("3-orphan.json: the conditional reference Organization?identifier=urn:test|nowhere matches no resource", text);
        Assert.Contains("4-observation.json: the conditional reference Patient?identifier=... matches no resource", text);
        Assert.DoesNotContain("secret-1000", text);
        Assert.DoesNotContain("1-patient.json", text);
        var counts = await node.CountsAsync();
        Assert.Equal(new SortedDictionary<string, long> { ["Encounter"] = 1, ["Organization"] = 1, ["Patient"] = 1 }, counts);
    }

    private async Task ImportsExactly(string folder)
    {
        using var node = new NodeDir();
        await node.InitAsync();
        var (code, output) = await WardProcess.OutputAsync(["import", "--data", node.Dir, folder]);
        Assert.True(code == 0, output);
        Assert.Equal(hiv.Expected, await node.CountsAsync());
    }

    /// <summary>One row of the import summary: Created, Updated, Already present, Failed.</summary>
    private static (long, long, long, long) Row(string output, string type)
    {
        var match = Regex.Match(output, $@"│ {type}\s+│ ([\d,]+)\s+│ ([\d,]+)\s+│ ([\d,]+)\s+│ ([\d,]+)\s+│");
        Assert.True(match.Success, $"no summary row of four counts for {type} in:\n{output}");
        long At(int i) => long.Parse(match.Groups[i].Value.Replace(",", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
        return (At(1), At(2), At(3), At(4));
    }

    /// <summary>A node made by <c>ward init</c>; its counts read back through <c>ward export</c>.</summary>
    private sealed class NodeDir : IDisposable
    {
        public string Dir { get; } = Path.Combine(Path.GetTempPath(), "ward-import-" + Guid.NewGuid().ToString("N")[..8]);

        public async Task InitAsync()
        {
            var (code, output) = await WardProcess.OutputAsync(["init", "--data", Dir]);
            Assert.True(code == 0, output);
        }

        /// <summary>The current resources of each type, as <c>ward export</c> writes them (one NDJSON line each).</summary>
        public async Task<SortedDictionary<string, long>> CountsAsync()
        {
            var output = Path.Combine(Dir, "export");
            var (code, text) = await WardProcess.OutputAsync(["export", "--data", Dir, "--out", output]);
            Assert.True(code == 0, text);
            var counts = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var file in Directory.EnumerateFiles(output, "*.ndjson"))
            {
                var lines = File.ReadLines(file).LongCount(l => l.Length > 0);
                if (lines > 0)
                {
                    counts[Path.GetFileNameWithoutExtension(file)] = lines;
                }
            }
            Directory.Delete(output, recursive: true);
            return counts;
        }

        public void Dispose() => Directory.Delete(Dir, recursive: true);
    }
}
