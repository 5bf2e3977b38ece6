using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Data.Sqlite;
using Npgsql;
using Ward.Core.Audit;
using Ward.Core.Node;

namespace Ward.Tests;

/// <summary>
/// The command never lies about the node's database (issue 30): every command but <c>init</c> refuses a database that is
/// missing, empty, not a database, truncated, or without a Ward node's tables, says what is wrong, exits 2 and creates or
/// changes nothing; <c>ward verify</c> and <c>ward doctor</c> fail on a database that lost data or was rolled back (its
/// log does not extend the node's high-water mark); <c>ward users add</c> links users only to records the node holds.
/// Every command runs as the real <c>ward</c> process.
/// </summary>
public sealed class MissingOrDamagedDatabaseTests(MissingOrDamagedDatabaseTests.SourceNode source) : IClassFixture<MissingOrDamagedDatabaseTests.SourceNode>
{
    /// <summary>A Patient and a Practitioner.</summary>
    private const string First = """{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"a1","name":[{"family":"One"}]},"request":{"method":"PUT","url":"Patient/a1"}},{"resource":{"resourceType":"Practitioner","id":"d1"},"request":{"method":"PUT","url":"Practitioner/d1"}}]}""";

    /// <summary>Two more patients, and the practitioner deleted.</summary>
    private const string Second = """{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"a2"},"request":{"method":"PUT","url":"Patient/a2"}},{"resource":{"resourceType":"Patient","id":"a3"},"request":{"method":"PUT","url":"Patient/a3"}},{"request":{"method":"DELETE","url":"Practitioner/d1"}}]}""";

    private const string Password = "a long enough password 1";

    /// <summary>A node made by <c>ward init</c> and one import, its recovery key moved away (as the operator must), copied for each test.</summary>
    public sealed class SourceNode : IAsyncLifetime
    {
        public string Root { get; } = Path.Combine(Path.GetTempPath(), "ward-damaged-" + Guid.NewGuid().ToString("N")[..8]);

        public string Dir => Path.Combine(Root, "source");

        public string FirstBundle => Path.Combine(Root, "first.json");

        public string SecondBundle => Path.Combine(Root, "second.json");

        public async Task InitializeAsync()
        {
            Directory.CreateDirectory(Root);
            await File.WriteAllTextAsync(FirstBundle, First);
            await File.WriteAllTextAsync(SecondBundle, Second);
            await Ok(["init", "--data", Dir]);
            await Ok(["import", "--data", Dir, FirstBundle]);
            File.Delete(Path.Combine(Dir, "recovery.key"));
        }

        /// <summary>A copy of the node in a new folder.</summary>
        public string Copy(string name)
        {
            var to = Path.Combine(Root, name + "-" + Guid.NewGuid().ToString("N")[..6]);
            foreach (var file in Directory.EnumerateFiles(Dir, "*", SearchOption.AllDirectories))
            {
                var target = Path.Combine(to, Path.GetRelativePath(Dir, file));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(file, target);
            }
            return to;
        }

        public Task DisposeAsync()
        {
            Directory.Delete(Root, recursive: true);
            return Task.CompletedTask;
        }
    }

    public static TheoryData<string, string> Damages => new()
    {
        { "missing", "is missing" },
        { "empty", "is empty (0 bytes)" },
        { "garbage", "is not a SQLite database" },
        { "truncated", "is truncated" },
        { "foreign", "holds no Ward node" },
    };

    /// <summary>Damages the node's database file as named.</summary>
    private static void Damage(string dir, string damage)
    {
        var db = Path.Combine(dir, "ward.db");
        foreach (var side in Directory.EnumerateFiles(dir, "ward.db-*"))
        {
            File.Delete(side);
        }
        var length = new FileInfo(db).Length;
        switch (damage)
        {
            case "missing":
                File.Delete(db);
                break;
            case "empty":
                File.WriteAllBytes(db, []);
                break;
            case "garbage":
                File.WriteAllBytes(db, RandomNumberGenerator.GetBytes(64 * 1024));
                break;
            case "truncated":
                // Whole pages cut off the end: the header still counts them.
                var bytes = File.ReadAllBytes(db);
                Assert.True(length >= 4 * 4096, $"the database is only {length} bytes");
                File.WriteAllBytes(db, bytes[..(int)(length / 2 / 4096 * 4096)]);
                break;
            case "foreign":
                File.Delete(db);
                using (var other = new SqliteConnection($"Data Source={db};Pooling=False"))
                {
                    other.Open();
                    using var cmd = other.CreateCommand();
                    cmd.CommandText = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('someone else''s database');";
                    cmd.ExecuteNonQuery();
                }
                break;
        }
    }

    /// <summary>Every verb of the CLI reference that opens a node, with the arguments it needs to get that far.</summary>
    private List<(string[] Args, string? Stdin)> Verbs(string dir, string outside) =>
    [
        (["serve", "--data", dir, "--urls", $"http://127.0.0.1:{PrivateCluster.FreePort()}"], null),
        (["demo", "--data", dir, "--urls", $"http://127.0.0.1:{PrivateCluster.FreePort()}"], null),
        (["import", "--data", dir, source.SecondBundle], null),
        (["export", "--data", dir, "--out", Path.Combine(outside, "export")], null),
        (["verify", "--data", dir], null),
        (["audit", "verify", "--data", dir], null),
        (["doctor", "--data", dir], null),
        (["users", "list", "--data", dir], null),
        (["users", "add", "--data", dir, "--username", "u1", "--role", "clinician", "--password-stdin"], Password + "\n"),
        (["users", "disable", "--data", dir, "--username", "u1"], null),
        (["clients", "list", "--data", dir], null),
        (["clients", "add", "--data", dir, "--client-id", "app", "--kind", "public", "--redirect-uri", "http://127.0.0.1:9/cb", "--scopes", "openid"], null),
        (["token", "--data", dir, "--user", "u1", "--scope", "user/*.rs"], null),
        (["policy", "check", "--data", dir], null),
        (["breakglass", "list", "--data", dir], null),
        (["keys", "rotate-master", "--data", dir], null),
        (["keys", "new-recovery", "--data", dir], null),
        (["patient", "erase", "--data", dir, "--patient", "Patient/a1", "--reason", "test"], null),
        (["research", "budget", "--data", dir], null),
        (["backup", "create", "--data", dir, "--target", Path.Combine(outside, "target")], null),
    ];

    [Theory]
    [MemberData(nameof(Damages))]
    public async Task Every_command_refuses_the_node_says_why_and_creates_or_changes_nothing(string damage, string reason)
    {
        var dir = source.Copy(damage);
        var outside = Directory.CreateDirectory(Path.Combine(source.Root, damage + "-out-" + Guid.NewGuid().ToString("N")[..6])).FullName;
        Damage(dir, damage);
        var before = Hash(dir);
        var results = new List<(string Verb, int Code, string Output)>();
        await Parallel.ForEachAsync(Verbs(dir, outside), new ParallelOptions { MaxDegreeOfParallelism = 3 }, async (verb, _) =>
        {
            var (code, output) = await RunAsync(verb.Args, verb.Stdin);
            lock (results)
            {
                results.Add((string.Join(' ', verb.Args.TakeWhile(a => a != "--data")), code, output));
            }
        });
        Assert.All(results, r =>
        {
            Assert.True(r.Code == 2, $"ward {r.Verb} on a {damage} database: exit {r.Code}\n{r.Output}");
            Assert.Contains(reason, r.Output);
            Assert.Contains("docs/RECOVERY.md", r.Output);
            Assert.DoesNotContain("   at ", r.Output);
        });
        Assert.Equal(before, Hash(dir));
        Assert.False(damage == "missing" && File.Exists(Path.Combine(dir, "ward.db")));
    }

    [Fact]
    public async Task A_postgres_database_without_a_node_is_refused_and_left_empty()
    {
        var dir = Path.Combine(source.Root, "pg-" + Guid.NewGuid().ToString("N")[..6]);
        var (node, empty) = (TestPostgres.CreateDatabase(), TestPostgres.CreateDatabase());
        try
        {
            await Ok(["init", "--data", dir, "--database", node]);
            // The node's ward.yaml now names a database without Ward's tables (a wrong name, or a server restored empty).
            var config = NodeConfig.Load(dir);
            config.Database = empty;
            config.Save();
            var before = Hash(dir);
            foreach (var args in new[]
            {
                ["serve", "--data", dir, "--urls", $"http://127.0.0.1:{PrivateCluster.FreePort()}"], ["verify", "--data", dir], ["doctor", "--data", dir], ["users", "list", "--data", dir],
                ["import", "--data", dir, source.FirstBundle], ["policy", "check", "--data", dir], new[] { "breakglass", "list", "--data", dir },
            })
            {
                var (code, output) = await RunAsync(args, null);
                Assert.True(code == 2, $"ward {args[0]}: exit {code}\n{output}");
                Assert.Contains("holds no Ward node", output);
                Assert.Contains("docs/RECOVERY.md", output);
            }
            Assert.Equal(before, Hash(dir));
            using var connection = new NpgsqlConnection(empty);
            connection.Open();
            using var tables = new NpgsqlCommand("SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')", connection);
            Assert.Equal(0L, (long)tables.ExecuteScalar()!);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            TestPostgres.DropDatabase(node);
            TestPostgres.DropDatabase(empty);
        }
    }

    [Fact]
    public async Task A_rolled_back_database_fails_verify_and_doctor_with_the_loss_named()
    {
        var dir = source.Copy("rollback");
        var db = Path.Combine(dir, "ward.db");
        var mark = Path.Combine(dir, AuditHighWater.FileName);

        // The serving node advances the mark as it signs checkpoints (a refused request is audited too).
        var signed = MarkSize(mark);
        await ServeUntilAsync(dir, () => MarkSize(mark) > signed);
        // An import checkpoints what it wrote: the database and the mark are at the same size when it ends.
        await Ok(["import", "--data", dir, source.FirstBundle]);
        var intact = await RunAsync(["verify", "--data", dir], null);
        Assert.True(intact.Code == 0, intact.Output);
        Assert.Contains("extends the node's high-water mark", intact.Output);

        // A copy of the database, taken aside while the node is stopped; the node goes on writing.
        var aside = Directory.EnumerateFiles(dir, "ward.db*").ToDictionary(f => f, File.ReadAllBytes);
        var copied = MarkSize(mark);
        await Ok(["import", "--data", dir, source.SecondBundle]);
        await Ok(["users", "add", "--data", dir, "--username", "later", "--role", "patient", "--patient", "Patient/a2", "--password-stdin"], Password + "\n");
        var lost = MarkSize(mark);
        Assert.True(lost > copied, $"the mark stayed at {copied}");

        // The old copy is put back (a restore from an old file, a snapshot rolled back, a disk that lost its last writes).
        foreach (var file in Directory.EnumerateFiles(dir, "ward.db*"))
        {
            File.Delete(file);
        }
        foreach (var (file, bytes) in aside)
        {
            File.WriteAllBytes(file, bytes);
        }
        foreach (var args in new[] { new[] { "verify", "--data", dir }, ["audit", "verify", "--data", dir], ["doctor", "--data", dir] })
        {
            var (code, output) = await RunAsync(args, null);
            Assert.True(code == 1, $"ward {args[0]}: exit {code}\n{output}");
            Assert.Contains($"the database holds {copied:N0} audit entries; this node had signed {lost:N0} at", output);
            Assert.Contains("lost data or was rolled back", output);
            Assert.Contains("docs/RECOVERY.md", output);
        }
        Assert.Contains("WARN  the database holds", (await RunAsync(["doctor", "--data", dir], null)).Output);

        // Written to since, the old copy grows past the size the node had signed: its first entries are still not those.
        await Ok(["import", "--data", dir, source.SecondBundle]);
        await Ok(["import", "--data", dir, source.SecondBundle]);
        Assert.Equal(lost, MarkSize(mark));
        var grown = await RunAsync(["verify", "--data", dir], null);
        Assert.True(grown.Code == 1, grown.Output);
        Assert.Contains($"the database's first {lost:N0} audit entries are not the ones this node signed", grown.Output);
        Assert.Equal(1, (await RunAsync(["doctor", "--data", dir], null)).Code);

        // A mark that is not the node's signed checkpoint is a problem in itself.
        var saved = File.ReadAllText(mark);
        File.WriteAllText(mark, saved.Replace("\n" + lost.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n", "\n1\n", StringComparison.Ordinal));
        var forged = await RunAsync(["verify", "--data", dir], null);
        Assert.True(forged.Code == 1, forged.Output);
        Assert.Contains("is not a checkpoint signed by the node key", forged.Output);

        // No mark at all (a node from before the mark): said once, not a failure.
        File.Delete(mark);
        var old = await RunAsync(["verify", "--data", dir], null);
        Assert.True(old.Code == 0, old.Output);
        Assert.Single(old.Output.Split('\n'), l => l.Contains("no high-water mark", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_rolled_back_postgres_database_fails_verify_and_doctor()
    {
        var dir = Path.Combine(source.Root, "pg-rollback-" + Guid.NewGuid().ToString("N")[..6]);
        var database = TestPostgres.CreateDatabase();
        var builder = new NpgsqlConnectionStringBuilder(database);
        var copy = builder.Database + "_old";
        var old = new NpgsqlConnectionStringBuilder(database) { Database = copy }.ConnectionString;
        try
        {
            await Ok(["init", "--data", dir, "--database", database]);
            await Ok(["import", "--data", dir, source.FirstBundle]);
            var mark = Path.Combine(dir, AuditHighWater.FileName);
            var copied = MarkSize(mark);
            // A copy of the database as it is now (the node's processes have ended: no one is connected to it).
            await CopyDatabaseAsync(builder.Database!, copy);
            await Ok(["import", "--data", dir, source.SecondBundle]);
            var lost = MarkSize(mark);
            Assert.True(lost > copied);

            // The node is pointed at the old copy (a database server restored from an older dump).
            var config = NodeConfig.Load(dir);
            config.Database = old;
            config.Save();
            foreach (var args in new[] { new[] { "verify", "--data", dir }, ["doctor", "--data", dir] })
            {
                var (code, output) = await RunAsync(args, null);
                Assert.True(code == 1, $"ward {args[0]}: exit {code}\n{output}");
                Assert.Contains($"the database holds {copied:N0} audit entries; this node had signed {lost:N0} at", output);
            }
        }
        finally
        {
            TestPostgres.DropDatabase(old);
            TestPostgres.DropDatabase(database);
        }
    }

    [Fact]
    public async Task Users_are_linked_only_to_records_the_node_holds()
    {
        var dir = source.Copy("links");
        await Ok(["import", "--data", dir, source.SecondBundle]);
        await Ok(["patient", "erase", "--data", dir, "--patient", "Patient/a3", "--reason", "the patient's request"]);
        foreach (var (name, link, state) in new[]
        {
            ("nobody", new[] { "--role", "patient", "--patient", "Patient/nope" }, "Patient/nope does not exist"),
            ("typo", ["--role", "clinician", "--practitioner", "Practitioner/d2"], "Practitioner/d2 does not exist"),
            ("gone", ["--role", "clinician", "--practitioner", "Practitioner/d1"], "Practitioner/d1 was deleted"),
            ("erased", ["--role", "patient", "--patient", "Patient/a3"], "Patient/a3 was erased"),
        })
        {
            var (code, output) = await RunAsync(["users", "add", "--data", dir, "--username", name, .. link, "--password-stdin"], Password + "\n");
            Assert.True(code == 2, $"{name}: exit {code}\n{output}");
            Assert.Contains(state, output);
            Assert.Contains("no user was created", output);
        }
        await Ok(["users", "add", "--data", dir, "--username", "real", "--role", "patient", "--patient", "Patient/a2", "--password-stdin"], Password + "\n");
        var list = (await RunAsync(["users", "list", "--data", dir], null)).Output;
        Assert.Contains("real", list);
        Assert.All(new[] { "nobody", "typo", "gone", "erased" }, name => Assert.DoesNotContain(name, list));
    }

    /// <summary>Every file of a folder, by relative path, with a hash of its content.</summary>
    private static string Hash(string dir) => string.Join('\n', Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
        .Order(StringComparer.Ordinal)
        .Select(f => $"{Path.GetRelativePath(dir, f)} {Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))}"));

    /// <summary>The size of the checkpoint in the node's high-water mark (0 without one).</summary>
    private static long MarkSize(string mark) =>
        File.Exists(mark) ? long.Parse(File.ReadAllLines(mark)[1], System.Globalization.CultureInfo.InvariantCulture) : 0;

    private static async Task Ok(string[] args, string? stdin = null)
    {
        var (code, output) = await RunAsync(args, stdin);
        Assert.True(code == 0, $"ward {string.Join(' ', args)}: exit {code}\n{output}");
    }

    /// <summary>Runs <c>ward</c>; a command that should have refused and serves instead is stopped after a minute (exit -1).</summary>
    private static async Task<(int Code, string Output)> RunAsync(string[] args, string? stdin)
    {
        var start = WardProcess.StartInfo(args);
        start.RedirectStandardInput = true;
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(stdin ?? "");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            return (-1, await stdout + await stderr);
        }
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>Serves the node, asks it something, until <paramref name="done"/> (the node's checkpoints come every second); then stops it.</summary>
    private static async Task ServeUntilAsync(string dir, Func<bool> done)
    {
        var port = PrivateCluster.FreePort();
        using var process = Process.Start(WardProcess.StartInfo(["serve", "--data", dir, "--urls", $"http://127.0.0.1:{port}"]))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            using var http = new HttpClient();
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (!done())
            {
                if (DateTime.UtcNow > deadline || process.HasExited)
                {
                    Assert.Fail("ward serve did not advance its high-water mark: " + (process.HasExited ? await stdout + await stderr : "not in 60 s"));
                }
                try
                {
                    await http.GetAsync($"http://127.0.0.1:{port}/fhir/Patient");
                }
                catch (HttpRequestException)
                {
                }
                await Task.Delay(300);
            }
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
    }

    /// <summary>CREATE DATABASE ... TEMPLATE, retried while a background worker of the server (autovacuum) is still connected to the source.</summary>
    private static async Task CopyDatabaseAsync(string from, string to)
    {
        using var connection = new NpgsqlConnection(TestPostgres.AdminConnectionString);
        connection.Open();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                using var cmd = new NpgsqlCommand($"CREATE DATABASE {to} TEMPLATE {from}", connection);
                cmd.ExecuteNonQuery();
                return;
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ObjectInUse && attempt < 20)
            {
                await Task.Delay(500);
            }
        }
    }
}
