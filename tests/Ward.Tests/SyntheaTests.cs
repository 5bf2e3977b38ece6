using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Ward.Core.Search;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The 100-patient Synthea set (53,413 resources), loaded as HTTP transactions, then unpacked once for the checks.</summary>
public class SyntheaNode : IAsyncLifetime
{
    public SyntheaNode() : this(new TestNode())
    {
    }

    protected SyntheaNode(TestNode node) => Node = node;

    public TestNode Node { get; }
    public string SourceDir { get; } = Path.Combine(Path.GetTempPath(), "ward-synthea-" + Guid.NewGuid().ToString("N")[..8]);
    public List<JsonDocument> PatientBundles { get; } = [];
    public List<JsonDocument> InfoBundles { get; } = [];

    public async Task InitializeAsync()
    {
        await Node.InitializeAsync();
        var files = await UnpackAsync(SourceDir);
        foreach (var file in files)
        {
            var doc = JsonDocument.Parse(await File.ReadAllBytesAsync(file));
            (Path.GetFileName(file).StartsWith("0-", StringComparison.Ordinal) ? InfoBundles : PatientBundles).Add(doc);
        }
        foreach (var info in files.Where(f => Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)))
        {
            await PostAsync(await File.ReadAllBytesAsync(info));
        }
        await Parallel.ForEachAsync(files.Where(f => !Path.GetFileName(f).StartsWith("0-", StringComparison.Ordinal)),
            new ParallelOptions { MaxDegreeOfParallelism = 2 }, async (file, ct) => await PostAsync(await File.ReadAllBytesAsync(file, ct)));
    }

    /// <summary>Unpacks the 100-patient set into <paramref name="dir"/>; its bundle files in order (the shared ones, <c>0-*</c>, first).</summary>
    internal static async Task<List<string>> UnpackAsync(string dir)
    {
        Directory.CreateDirectory(dir);
        var archive = Path.Combine(TestData.Root, "synthea", "synthea-r4-small-blaze100.tar.zst");
        using (var tar = Process.Start(new ProcessStartInfo("tar", ["--zstd", "-xf", archive, "-C", dir]) { RedirectStandardError = true })!)
        {
            await tar.WaitForExitAsync();
            Assert.True(tar.ExitCode == 0, "tar --zstd failed (install zstd): " + await tar.StandardError.ReadToEndAsync());
        }
        return Directory.EnumerateFiles(dir, "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
    }

    private async Task PostAsync(byte[] bundle)
    {
        using var content = new ByteArrayContent(bundle);
        content.Headers.ContentType = new("application/fhir+json");
        using var request = new HttpRequestMessage(HttpMethod.Post, Node.BaseUrl) { Content = content };
        request.Headers.Add("Prefer", "return=minimal");
        using var response = await Node.Http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {body[..Math.Min(body.Length, 2000)]}");
        Assert.DoesNotContain("\"outcome\"", body);
    }

    public async Task DisposeAsync()
    {
        await Node.DisposeAsync();
        foreach (var d in PatientBundles.Concat(InfoBundles))
        {
            d.Dispose();
        }
        Directory.Delete(SourceDir, recursive: true);
    }
}

public sealed class SyntheaPostgresNode() : SyntheaNode(new PostgresTestNode());

public sealed class SyntheaTestsOnSqlite(SyntheaNode synthea) : SyntheaTests(synthea), IClassFixture<SyntheaNode>;

public sealed class SyntheaTestsOnPostgres(SyntheaPostgresNode synthea) : SyntheaTests(synthea), IClassFixture<SyntheaPostgresNode>
{
    /// <summary>
    /// After a bulk import the node refreshes the planner's statistics itself (<c>last_analyze</c>; autovacuum's own runs
    /// set <c>last_autoanalyze</c> instead, up to a minute later), so that the first searches are not planned on the
    /// statistics of the first few resources.
    /// </summary>
    [Fact]
    public async Task The_planner_statistics_are_refreshed_by_the_node_after_a_bulk_import()
    {
        using var db = synthea.Node.Db();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        long analyzed;
        while ((analyzed = Convert.ToInt64(TestNode.Scalar(db,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('resource', 'version', 'ix_string', 'ix_token') AND last_analyze IS NOT NULL"),
            System.Globalization.CultureInfo.InvariantCulture)) < 4 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
        }
        Assert.Equal(4, analyzed);
        var estimated = Convert.ToInt64(TestNode.Scalar(db, "SELECT reltuples::bigint FROM pg_class WHERE relname = 'version'"), System.Globalization.CultureInfo.InvariantCulture);
        var stored = Convert.ToInt64(TestNode.Scalar(db, "SELECT count(*) FROM version"), System.Globalization.CultureInfo.InvariantCulture);
        // Refreshed once the tables had grown by a quarter: the estimate is at least four fifths of what is stored.
        Assert.True(estimated * 5 >= stored * 4, $"the planner estimates {estimated} versions; {stored} are stored");
    }
}

public abstract class SyntheaTests(SyntheaNode synthea)
{
    private TestNode Node => synthea.Node;

    private IEnumerable<JsonElement> AllResources(IEnumerable<JsonDocument> bundles) =>
        bundles.SelectMany(b => b.RootElement.GetProperty("entry").EnumerateArray()).Select(e => e.GetProperty("resource"));

    private static IEnumerable<JsonElement> Resources(JsonDocument bundle) =>
        bundle.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource"));

    private async Task<JsonDocument> GetAsync(string relative)
    {
        using var response = await Node.Http.GetAsync($"{Node.BaseUrl}/{relative}");
        var body = await response.Content.ReadAsByteArrayAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{relative}: {response.StatusCode} {Encoding.UTF8.GetString(body)}");
        return JsonDocument.Parse(body);
    }

    private async Task<long> TotalAsync(string relative)
    {
        using var doc = await GetAsync(relative);
        return doc.RootElement.GetProperty("total").GetInt64();
    }

    /// <summary>The server id of a source patient, found through its Synthea identifier.</summary>
    private async Task<string> ServerIdAsync(JsonDocument bundle)
    {
        var patient = Resources(bundle).First(r => r.GetProperty("resourceType").GetString() == "Patient");
        var sourceId = patient.GetProperty("id").GetString();
        using var found = await GetAsync($"Patient?identifier=https://github.com/synthetichealth/synthea|{sourceId}");
        return found.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString()!;
    }

    [Fact]
    public async Task Every_resource_type_has_the_count_of_the_source_files()
    {
        var expected = AllResources(synthea.InfoBundles.Concat(synthea.PatientBundles))
            .GroupBy(r => r.GetProperty("resourceType").GetString()!)
            .ToDictionary(g => g.Key, g => g.LongCount());
        Assert.Equal(53413, expected.Values.Sum());
        foreach (var (type, count) in expected)
        {
            Assert.True(count == await TotalAsync($"{type}?_summary=count"), $"{type}: expected {count}");
        }
    }

    [Fact]
    public async Task Patient_and_code_search_matches_a_scan_of_the_source()
    {
        foreach (var bundle in synthea.PatientBundles.Take(5))
        {
            var id = await ServerIdAsync(bundle);
            var byCode = Resources(bundle)
                .Where(r => r.GetProperty("resourceType").GetString() == "Observation")
                .GroupBy(r => r.GetProperty("code").GetProperty("coding")[0].GetProperty("code").GetString()!)
                .OrderByDescending(g => g.Count()).First();
            Assert.Equal(byCode.Count(), await TotalAsync($"Observation?patient={id}&code=http://loinc.org|{byCode.Key}"));
            Assert.Equal(byCode.Count(), await TotalAsync($"Observation?subject=Patient/{id}&code={byCode.Key}"));
        }
    }

    [Fact]
    public async Task Date_range_search_matches_a_scan_of_the_source()
    {
        const string code = "8302-2"; // body height
        var instants = AllResources(synthea.PatientBundles)
            .Where(r => r.GetProperty("resourceType").GetString() == "Observation"
                && r.GetProperty("code").GetProperty("coding")[0].GetProperty("code").GetString() == code)
            .Select(r => DateTimeOffset.Parse(r.GetProperty("effectiveDateTime").GetString()!, System.Globalization.CultureInfo.InvariantCulture).UtcDateTime)
            .ToList();
        var from = new DateTime(2015, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        var to = new DateTime(2018, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        var expected = instants.Count(t => t >= from && t < to);
        Assert.True(expected > 0);
        Assert.Equal(expected, await TotalAsync($"Observation?code={code}&date=ge2015-01-01&date=lt2018-01-01"));
        Assert.Equal(instants.Count(t => t < from), await TotalAsync($"Observation?code={code}&date=lt2015-01-01"));
        Assert.Equal(instants.Count(t => t >= to), await TotalAsync($"Observation?code={code}&date=ge2018"));
        Assert.Equal(instants.Count(t => t.Year == 2016), await TotalAsync($"Observation?code={code}&date=2016"));
    }

    [Fact]
    public async Task Chained_search_matches_a_scan_of_the_source()
    {
        var bundle = synthea.PatientBundles[7];
        var patient = Resources(bundle).First(r => r.GetProperty("resourceType").GetString() == "Patient");
        var family = patient.GetProperty("name")[0].GetProperty("family").GetString()!;
        var prefix = SearchValues.Normalize(family);
        var expected = synthea.PatientBundles
            .Where(b => Resources(b).Any(r => r.GetProperty("resourceType").GetString() == "Patient"
                && r.GetProperty("name").EnumerateArray().Any(n => SearchValues.Normalize(n.GetProperty("family").GetString()!).StartsWith(prefix, StringComparison.Ordinal))))
            .Sum(b => Resources(b).Count(r => r.GetProperty("resourceType").GetString() == "Encounter"));
        Assert.Equal(expected, await TotalAsync($"Encounter?patient.family={Uri.EscapeDataString(family)}"));
        Assert.Equal(expected, await TotalAsync($"Encounter?subject:Patient.family={Uri.EscapeDataString(family)}"));
    }

    [Fact]
    public async Task Include_and_revinclude_return_what_the_source_references()
    {
        var bundle = synthea.PatientBundles[3];
        var id = await ServerIdAsync(bundle);
        var encounters = Resources(bundle).Where(r => r.GetProperty("resourceType").GetString() == "Encounter").ToList();
        var practitioners = encounters.SelectMany(e => e.GetProperty("participant").EnumerateArray())
            .Select(p => p.GetProperty("individual").GetProperty("reference").GetString()).Distinct().Count();

        using var included = await GetAsync($"Encounter?patient={id}&_include=Encounter:practitioner&_count=1000");
        var entries = included.RootElement.GetProperty("entry").EnumerateArray().ToList();
        Assert.Equal(encounters.Count, entries.Count(e => e.GetProperty("search").GetProperty("mode").GetString() == "match"));
        var includes = entries.Where(e => e.GetProperty("search").GetProperty("mode").GetString() == "include").ToList();
        Assert.Equal(practitioners, includes.Count);
        Assert.All(includes, e => Assert.Equal("Practitioner", e.GetProperty("resource").GetProperty("resourceType").GetString()));

        using var reverse = await GetAsync($"Patient?_id={id}&_revinclude=Encounter:patient&_count=1000");
        var rev = reverse.RootElement.GetProperty("entry").EnumerateArray().ToList();
        Assert.Single(rev, e => e.GetProperty("search").GetProperty("mode").GetString() == "match");
        Assert.Equal(encounters.Count, rev.Count(e => e.GetProperty("search").GetProperty("mode").GetString() == "include"));
    }

    [Fact]
    public async Task Everything_returns_the_patient_bundle_and_what_it_references()
    {
        var bundle = synthea.PatientBundles[5];
        var id = await ServerIdAsync(bundle);
        var entries = bundle.RootElement.GetProperty("entry").EnumerateArray().ToList();
        var conditionalTargets = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in entries)
        {
            CollectConditional(e.GetProperty("resource"), conditionalTargets);
        }
        var expected = entries.Count + conditionalTargets.Count;

        var seen = new HashSet<string>(StringComparer.Ordinal);
        var next = $"Patient/{id}/$everything?_count=200";
        long total = 0;
        while (next is not null)
        {
            using var page = await GetAsync(next);
            total = page.RootElement.GetProperty("total").GetInt64();
            foreach (var e in page.RootElement.GetProperty("entry").EnumerateArray())
            {
                var r = e.GetProperty("resource");
                Assert.True(seen.Add(r.GetProperty("resourceType").GetString() + "/" + r.GetProperty("id").GetString()), "duplicate entry across pages");
            }
            next = page.RootElement.GetProperty("link").EnumerateArray()
                .Where(l => l.GetProperty("relation").GetString() == "next")
                .Select(l => l.GetProperty("url").GetString()![(Node.BaseUrl.Length + 1)..]).FirstOrDefault();
        }
        Assert.Equal(expected, total);
        Assert.Equal(expected, seen.Count);
    }

    /// <summary>
    /// Every name part, identifier value, telecom value and address line of the source bundles, at least
    /// <paramref name="minLength"/> characters long: shorter strings occur by chance in 100 MB of ciphertext.
    /// </summary>
    private static void CollectIdentifying(JsonElement element, HashSet<string> found, int minLength = 6)
    {
        void Add(JsonElement v)
        {
            if (v.ValueKind == JsonValueKind.String && v.GetString() is { } text && text.Length >= minLength)
            {
                found.Add(text);
            }
        }
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in element.EnumerateObject())
                {
                    switch (p.Name)
                    {
                        case "family":
                            Add(p.Value);
                            break;
                        case "given" or "line" when p.Value.ValueKind == JsonValueKind.Array:
                            foreach (var g in p.Value.EnumerateArray())
                            {
                                Add(g);
                            }
                            break;
                        case "identifier" or "telecom":
                            foreach (var id in p.Value.ValueKind == JsonValueKind.Array ? p.Value.EnumerateArray().ToList() : [p.Value])
                            {
                                if (id.ValueKind == JsonValueKind.Object && id.TryGetProperty("value", out var v))
                                {
                                    Add(v);
                                }
                            }
                            break;
                    }
                    CollectIdentifying(p.Value, found, minLength);
                }
                break;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    CollectIdentifying(item, found, minLength);
                }
                break;
        }
    }

    /// <summary>
    /// Reads and searches of the kinds the audit log records: the operator's, a patient reading their record, their access
    /// log and their AuditEvents, the security officer's AuditEvent searches, an identifier search by SSN, and a Flag whose
    /// subject is an unresolved conditional reference by that SSN, found again by it (a Flag: the other tests of the class
    /// count the types of the source). Returns the server ids of every patient.
    /// </summary>
    private async Task<List<string>> ReadAndSearchAsync()
    {
        using var all = await GetAsync("Patient?_count=1000");
        var ids = all.RootElement.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("id").GetString()!).ToList();
        var source = Resources(synthea.PatientBundles[11]).First(r => r.GetProperty("resourceType").GetString() == "Patient");
        var ssn = source.GetProperty("identifier").EnumerateArray()
            .First(i => i.TryGetProperty("system", out var sys) && sys.GetString() == "http://hl7.org/fhir/sid/us-ssn").GetProperty("value").GetString()!;
        var id = await ServerIdAsync(synthea.PatientBundles[11]);
        using (var bySsn = await GetAsync($"Patient?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}"))
        {
            Assert.Equal(id, bySsn.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString());
        }
        var conditional = $"Patient?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}";
        var created = await Node.Http.PostAsync($"{Node.BaseUrl}/Flag", new StringContent(
            $$$"""{"resourceType":"Flag","status":"active","code":{"text":"at rest"},"subject":{"reference":"{{{conditional}}}"}}""", Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(1, await TotalAsync($"Flag?subject={Uri.EscapeDataString(conditional)}"));
        Assert.True(await TotalAsync($"Observation?patient={id}&_count=50") > 0);

        using (var own = Node.NewHttp(Node.Token(new Ward.Core.Access.AccessGrant("patient-at-rest", "app", "patient", Ward.Core.Access.SmartScopes.Parse("patient/*.rs"), id, "Patient/" + id))))
        {
            Assert.Equal(HttpStatusCode.OK, (await own.GetAsync($"{Node.BaseUrl}/Patient/{id}")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await own.GetAsync($"{Node.BaseUrl}/Condition?patient=Patient/{id}")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await own.GetAsync($"{Node.BaseUrl}/Patient/{id}/$access-log")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await own.GetAsync($"{Node.BaseUrl}/AuditEvent")).StatusCode);
        }
        using (var officer = Node.NewHttp(Node.Token(new Ward.Core.Access.AccessGrant("officer-at-rest", "app", "security-officer", Ward.Core.Access.SmartScopes.Parse("user/AuditEvent.rs"), null, null))))
        {
            var events = await officer.GetFromJsonAsync<JsonElement>($"{Node.BaseUrl}/AuditEvent?patient={id}&agent=Patient/{id}");
            Assert.True(events.GetProperty("total").GetInt32() >= 3, events.GetRawText());
        }
        return ids;
    }

    /// <summary>Every table of the node's database as a dump shows it (sqlite3 on SQLite, every column read as text on PostgreSQL), stored bytes as Latin-1.</summary>
    private async Task<List<(string Table, string Text)>> TableDumpsAsync()
    {
        var tables = new List<string>();
        using (var db = Node.Db())
        using (var cmd = db.CreateCommand())
        {
            cmd.CommandText = Node.IsPostgres
                ? "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                : "SELECT name FROM sqlite_master WHERE type = 'table'";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                tables.Add(reader.GetString(0));
            }
        }
        Assert.Contains("audit_entry", tables);
        var dumps = new List<(string, string)>();
        foreach (var table in tables)
        {
            if (!Node.IsPostgres)
            {
                // sqlite3 prints a blob's bytes as they are in list mode (and .dump as hexadecimal): both are searched.
                var (code, output, error) = await ExternalTool.RunAsync("sqlite3", [Node.Config.DatabasePath, $"SELECT * FROM \"{table}\""]);
                Assert.True(code == 0, error);
                dumps.Add((table, output));
                continue;
            }
            var text = new StringBuilder();
            using var db = Node.Db();
            using var cmd = db.CreateCommand();
            cmd.CommandText = $"SELECT * FROM \"{table}\"";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                for (var i = 0; i < reader.FieldCount; i++)
                {
                    var value = reader.GetValue(i);
                    text.Append(value is byte[] bytes ? Encoding.Latin1.GetString(bytes) : Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)).Append('|');
                }
                text.Append('\n');
            }
            dumps.Add((table, text.ToString()));
        }
        if (!Node.IsPostgres)
        {
            var (code, output, error) = await ExternalTool.RunAsync("sqlite3", [Node.Config.DatabasePath, ".dump"]);
            Assert.True(code == 0, error);
            dumps.Add((".dump", output));
        }
        return dumps;
    }

    [Fact]
    public async Task After_import_reads_and_searches_nothing_identifying_no_record_and_no_audit_entry_is_in_clear_in_any_file_table_or_log()
    {
        var patientIds = await ReadAndSearchAsync();
        var needles = new HashSet<string>(StringComparer.Ordinal);
        foreach (var bundle in synthea.PatientBundles.Concat(synthea.InfoBundles))
        {
            CollectIdentifying(bundle.RootElement, needles);
        }
        Assert.True(needles.Count > 2000, $"only {needles.Count} identifying values collected");
        Assert.Equal(100, patientIds.Count);
        // The records' references to their patients, and what an AuditEvent names: never in clear at rest (in the logs, request paths name ids).
        var atRest = new HashSet<string>(needles, StringComparer.Ordinal) { "\"resourceType\"", "resourceType" };
        atRest.UnionWith(patientIds.Select(id => "Patient/" + id));
        // Files are searched as Latin-1 so that one byte is one char; needles become their UTF-8 bytes the same way.
        var latin1 = Encoding.Latin1;
        var search = System.Buffers.SearchValues.Create(atRest.Select(n => latin1.GetString(Encoding.UTF8.GetBytes(n))).ToArray(), StringComparison.Ordinal);
        // PostgreSQL's write-ahead log is shared by every database of the server (other nodes, other test runs): there the
        // needles are this node's own (identifying values, its patients' references), not the string every AuditEvent has.
        var ownOnly = System.Buffers.SearchValues.Create(atRest.Where(n => !n.Contains("resourceType", StringComparison.Ordinal))
            .Select(n => latin1.GetString(Encoding.UTF8.GetBytes(n))).ToArray(), StringComparison.Ordinal);
        var files = Directory.EnumerateFiles(Node.DataDir, "*", SearchOption.AllDirectories).ToList();
        if (Node.IsPostgres)
        {
            files.AddRange(TestPostgres.FilesOf(Node.Config.Database));
        }
        else
        {
            Assert.Contains(files, f => f.EndsWith("ward.db-wal", StringComparison.Ordinal));
        }
        long scanned = 0;
        foreach (var file in files)
        {
            byte[] bytes;
            try
            {
                bytes = File.ReadAllBytes(file);
            }
            catch (FileNotFoundException) when (Node.IsPostgres)
            {
                // A write-ahead log segment the server recycled between the listing and the read: its successor is read.
                continue;
            }
            var text = latin1.GetString(bytes);
            scanned += text.Length;
            var at = text.AsSpan().IndexOfAny(Node.IsPostgres && Path.GetFileName(Path.GetDirectoryName(file)) == "pg_wal" ? ownOnly : search);
            Assert.True(at < 0, $"{Path.GetFileName(file)} holds identifying text, a record or an audit entry in clear at byte {at}: '{(at < 0 ? "" : text.Substring(Math.Max(0, at - 20), Math.Min(80, text.Length - Math.Max(0, at - 20))))}'");
        }
        Assert.True(scanned > 10_000_000, $"only {scanned} bytes scanned");
        // In a dump numbers are digits: identifier values made of digits alone occur there by chance (in times and ranges).
        var inDumps = System.Buffers.SearchValues.Create(atRest.Where(n => !n.All(char.IsAsciiDigit))
            .Select(n => latin1.GetString(Encoding.UTF8.GetBytes(n))).ToArray(), StringComparison.Ordinal);
        foreach (var (table, dump) in await TableDumpsAsync())
        {
            var at = dump.AsSpan().IndexOfAny(inDumps);
            Assert.True(at < 0, $"the dump of {table} holds identifying text, a record or an audit entry in clear: '{(at < 0 ? "" : dump.Substring(Math.Max(0, at - 20), Math.Min(80, dump.Length - Math.Max(0, at - 20))))}'");
        }
        using (var db = Node.Db())
        {
            // The import's entries (one per patient per transaction at least) and the reads': all of them were in the files searched.
            Assert.True(Convert.ToInt64(TestNode.Scalar(db, "SELECT count(*) FROM audit_entry"), System.Globalization.CultureInfo.InvariantCulture) > patientIds.Count);
        }
        var logs = string.Join("\n", Node.Logs.Lines);
        var identifying = System.Buffers.SearchValues.Create(needles.Select(n => latin1.GetString(Encoding.UTF8.GetBytes(n))).ToArray(), StringComparison.Ordinal);
        var inLogs = logs.AsSpan().IndexOfAny(identifying);
        Assert.True(inLogs < 0, $"the logs hold identifying text: {(inLogs < 0 ? "" : logs.Substring(Math.Max(0, inLogs - 100), 200))}");
    }

    private static void CollectConditional(JsonElement element, HashSet<string> found)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in element.EnumerateObject())
                {
                    if (p.Name == "reference" && p.Value.ValueKind == JsonValueKind.String && p.Value.GetString()!.Contains('?'))
                    {
                        found.Add(p.Value.GetString()!);
                    }
                    CollectConditional(p.Value, found);
                }
                break;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    CollectConditional(item, found);
                }
                break;
        }
    }
}
