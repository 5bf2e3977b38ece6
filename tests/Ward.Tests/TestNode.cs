using System.Data.Common;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Hl7.Fhir.Rest;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server;
using Ward.Server.Identity;

namespace Ward.Tests;

/// <summary>
/// A real node in a temporary folder, served by Kestrel on 127.0.0.1 with an ephemeral port, on SQLite or (with
/// <see cref="PostgresTestNode"/>) on a fresh PostgreSQL database of its own.
/// </summary>
public class TestNode : IAsyncLifetime, IDisposable
{
    private WebApplication? _app;

    public TestNode() : this(postgres: false)
    {
    }

    protected internal TestNode(bool postgres) => IsPostgres = postgres;

    public bool IsPostgres { get; }

    /// <summary>Rate limits of the sign-in pages and token endpoint (default: high enough for the whole suite).</summary>
    internal RateLimitConfig? Limits { get; init; }

    /// <summary>The node's clock (tests that move time give one); the system clock otherwise.</summary>
    internal TimeProvider? Clock { get; init; }

    /// <summary>Bounds on requests (<c>limits</c> in ward.yaml); null for the defaults.</summary>
    internal RequestLimitsConfig? RequestLimits { get; init; }

    /// <summary>The node's own access policy (policy.yaml in its data folder); null for the default.</summary>
    internal string? PolicyYaml { get; init; }

    /// <summary>A new, not yet started node on the same engine.</summary>
    public TestNode Sibling() => new(IsPostgres);

    internal NodeConfig Config { get; private set; } = null!;
    internal RecordStore Store { get; private set; } = null!;
    public string DataDir { get; } = Path.Combine(Path.GetTempPath(), "ward-test-" + Guid.NewGuid().ToString("N")[..12]);
    public string BaseUrl { get; private set; } = "";

    /// <summary>Everything the node logged (a hand-written in-memory provider).</summary>
    public LogCapture Logs { get; } = new();
    public HttpClient Http { get; private set; } = null!;

    public FhirClient Client(bool strict = false) => new(BaseUrl, Http, new FhirClientSettings
    {
        PreferredFormat = ResourceFormat.Json,
        VerifyFhirVersion = false,
        ReturnPreference = ReturnPreference.Representation,
    });

    public virtual async Task InitializeAsync()
    {
        Config = NewConfig(DataDir, "test");
        Config.MaxRequestBodyBytes = 8 * 1024 * 1024;
        // The whole suite signs in and asks for tokens from one address, far beyond a person's pace.
        Config.RateLimits = Limits ?? new RateLimitConfig { LoginPerMinute = 100_000, TokenPerMinute = 100_000 };
        // The suite runs its tests in parallel with one operator token: far more expensive requests at once than a caller's share.
        Config.Limits = RequestLimits ?? new RequestLimitsConfig { HeavyRequestsPerCaller = 10_000, MaxConcurrentRequests = 10_000 };
        Config.Save();
        if (PolicyYaml is not null)
        {
            File.WriteAllText(Path.Combine(DataDir, Ward.Core.Policy.AccessPolicy.FileName), PolicyYaml);
        }
        Store = RecordStore.Open(Config, create: true);
        _app = WardServer.Build(Config, "http://127.0.0.1:0", Store, logging => logging.AddProvider(Logs), clock: Clock);
        await _app.StartAsync();
        var address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        BaseUrl = address.TrimEnd('/') + "/fhir";
        Origin = address.TrimEnd('/');
        Http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None }) { Timeout = TimeSpan.FromMinutes(5) };
        Http.DefaultRequestHeaders.Authorization = new("Bearer", Token(AdminGrant));
    }

    /// <summary>The running server's services.</summary>
    internal IServiceProvider Services => _app!.Services;

    /// <summary>The server's origin (scheme, host, port): the authorization server's base.</summary>
    public string Origin { get; private set; } = "";

    /// <summary>What the default client of the tests may do: everything, as a backend service of the operator.</summary>
    internal static readonly AccessGrant AdminGrant = new("test-operator", "test-operator", "service", SmartScopes.Parse("system/*.cruds"), null, null);

    /// <summary>An access token of this node for a grant, made with its signing key (as <c>ward token</c> does).</summary>
    internal string Token(AccessGrant grant, TimeSpan? lifetime = null, DateTimeOffset? at = null) =>
        _app!.Services.GetRequiredService<AccessTokens>().Issue(grant, lifetime ?? TimeSpan.FromMinutes(60), "urn:ward:test", at);

    /// <summary>
    /// An interaction as the operator ('ward import' on the data folder): loads data that the test client's service role
    /// may not write (R or V labels), and shows what a search would find without the access policy.
    /// </summary>
    internal async Task<Ward.Core.Fhir.FhirResponse> AsOperator(string method, string path, string? json = null, List<KeyValuePair<string, string>>? query = null)
    {
        var engine = Services.GetRequiredService<Ward.Core.Fhir.FhirEngine>();
        return await engine.HandleAsync(new Ward.Core.Fhir.FhirRequest
        {
            Method = method,
            Path = path,
            Query = query ?? [],
            Resource = json is null ? null : Ward.Core.Fhir.FhirJson.Parse(System.Text.Encoding.UTF8.GetBytes(json)),
            BaseUrl = BaseUrl,
            Caller = AccessGrant.Operator,
        }, CancellationToken.None);
    }

    /// <summary>A SMART Backend Services client registered on this node (system/*.rs) with a fresh RSA key, for signing client assertions.</summary>
    internal async Task<BackendClient> BackendClientAsync()
    {
        var rsa = RSA.Create(2048);
        var key = new RsaSecurityKey(rsa) { KeyId = Guid.NewGuid().ToString("N") };
        var jwk = JsonWebKeyConverter.ConvertFromRSASecurityKey(new RsaSecurityKey(rsa.ExportParameters(false)) { KeyId = key.KeyId });
        var jwks = JsonSerializer.Serialize(new { keys = new[] { jwk } }, new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull });
        var id = "svc-" + Guid.NewGuid().ToString("N")[..8];
        await using var accounts = Accounts.Open(Config);
        await accounts.AddClientAsync(id, ClientKind.Backend, [], "system/*.rs", jwks, "Lab", CancellationToken.None);
        return new BackendClient(id, key);
    }

    /// <summary>Gives a practitioner a care relationship with a patient (an active CareTeam), as the access policy requires of clinicians.</summary>
    internal async Task CareTeamAsync(string patient, string practitioner)
    {
        var team = $$$"""{"resourceType":"CareTeam","status":"active","subject":{"reference":"Patient/{{{patient}}}"},"participant":[{"member":{"reference":"{{{practitioner}}}"}}]}""";
        var response = await Http.PostAsync($"{BaseUrl}/CareTeam", new StringContent(team, System.Text.Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    /// <summary>A new HTTP client with its own token (or none).</summary>
    internal HttpClient NewHttp(string? token)
    {
        var http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None }) { Timeout = TimeSpan.FromMinutes(5) };
        if (token is not null)
        {
            http.DefaultRequestHeaders.Authorization = new("Bearer", token);
        }
        return http;
    }

    /// <summary>
    /// A second node process on the same data (its own store, connections and write gate, as <c>ward import</c> or a
    /// second <c>ward serve</c> beside this one would have), served on its own port. Dispose it to stop it.
    /// </summary>
    internal async Task<Twin> TwinAsync()
    {
        var store = RecordStore.Open(Config);
        var app = WardServer.Build(Config, "http://127.0.0.1:0", store, logging => logging.AddProvider(Logs));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new Twin(app, store, address.TrimEnd('/') + "/fhir");
    }

    internal sealed class Twin(WebApplication app, RecordStore store, string baseUrl) : IAsyncDisposable
    {
        public string BaseUrl { get; } = baseUrl;

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync();
            await app.DisposeAsync();
            store.Dispose();
        }
    }

    /// <summary>Creates a node configuration on this node's engine (on PostgreSQL, with a new empty database).</summary>
    internal NodeConfig NewConfig(string dir, string name) =>
        NodeConfig.Init(dir, name, IsPostgres ? TestPostgres.CreateDatabase(PostgresAdmin) : null);

    /// <summary>The PostgreSQL server to create databases on (default: the test run's, <see cref="TestPostgres"/>).</summary>
    internal string? PostgresAdmin { get; init; }

    /// <summary>A direct connection to a node's database, behind the node's back (tamper tests, checks of what is stored).</summary>
    internal DbConnection Db(NodeConfig? config = null)
    {
        config ??= Config;
        DbConnection db = config.IsPostgres
            ? new Npgsql.NpgsqlConnection(config.Database)
            : new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={config.DatabasePath};Pooling=False");
        db.Open();
        return db;
    }

    internal static object? Scalar(DbConnection db, string sql, params (string, object?)[] args)
    {
        using var cmd = db.CreateCommand();
        cmd.CommandText = sql;
        StoreSession.Bind(cmd, args);
        return cmd.ExecuteScalar();
    }

    /// <summary>Removes what a configuration made outside its folder (its PostgreSQL database).</summary>
    internal static void Drop(NodeConfig config)
    {
        if (config.IsPostgres)
        {
            TestPostgres.DropDatabase(config.Database);
        }
        else
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        }
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        Dispose();
    }

    public void Dispose()
    {
        Http?.Dispose();
        Store?.Dispose();
        if (Config is not null)
        {
            Drop(Config);
        }
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Keeps every formatted log line, for tests that prove what is (and is not) logged.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner._lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)} {exception}");
    }
}

/// <summary>A test node on its own PostgreSQL database (see <see cref="TestPostgres"/> for the server).</summary>
public sealed class PostgresTestNode() : TestNode(postgres: true);

/// <summary>A backend client of a test node and the key its assertions are signed with.</summary>
internal sealed record BackendClient(string ClientId, SecurityKey Key);

[CollectionDefinition(Name)]
public sealed class SharedNode : ICollectionFixture<TestNode>
{
    public const string Name = "shared node";
}

[CollectionDefinition(Name)]
public sealed class SharedPostgresNode : ICollectionFixture<PostgresTestNode>
{
    public const string Name = "shared PostgreSQL node";
}

/// <summary>Where the shared test data lives (../shared/data from the repository root).</summary>
internal static class TestData
{
    /// <summary>
    /// Writes a transaction Bundle of one Patient and a DocumentReference carrying a scanned letter of about 100 KB inline:
    /// a version too large for its row, which the store writes to its blob files.
    /// </summary>
    public static string LargeDocumentBundle(string dir)
    {
        var patient = Guid.NewGuid().ToString();
        var scan = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(100_000));
        var bundle = $$$"""
            {"resourceType":"Bundle","type":"transaction","entry":[
              {"fullUrl":"urn:uuid:{{{patient}}}","resource":{"resourceType":"Patient","name":[{"family":"Scanned","given":["Letter"]}]},
               "request":{"method":"POST","url":"Patient"}},
              {"resource":{"resourceType":"DocumentReference","status":"current","subject":{"reference":"urn:uuid:{{{patient}}}"},
                "content":[{"attachment":{"contentType":"image/png","title":"referral letter","data":"{{{scan}}}"}}]},
               "request":{"method":"POST","url":"DocumentReference"}}]}
            """;
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "scanned-letter.json");
        File.WriteAllText(path, bundle);
        return path;
    }

    public static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null)
            {
                var candidate = Path.Combine(dir.FullName, "shared", "data");
                if (Directory.Exists(candidate))
                {
                    return candidate;
                }
                candidate = Path.Combine(dir.FullName, "..", "shared", "data");
                if (Directory.Exists(candidate))
                {
                    return Path.GetFullPath(candidate);
                }
                dir = dir.Parent;
            }
            return Environment.GetEnvironmentVariable("WARD_SHARED_DATA")
                ?? throw new InvalidOperationException("The shared test data (../shared/data) was not found; set WARD_SHARED_DATA.");
        }
    }

    public static string RepoRoot
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ward.slnx")))
            {
                dir = dir.Parent;
            }
            return dir?.FullName ?? throw new InvalidOperationException("Repository root not found.");
        }
    }
}

/// <summary>An installed tool (dcmdump, Debian's python3), run as a child process: exit status, output, errors.</summary>
internal static class ExternalTool
{
    public static async Task<(int Code, string Output, string Error)> RunAsync(string file, IEnumerable<string> args)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await output, await error);
    }
}

/// <summary>The built <c>ward</c> executable, run as a child process.</summary>
internal static class WardProcess
{
    /// <summary>Output and errors together, for tests that read what the operator sees.</summary>
    public static async Task<(int Code, string Output)> OutputAsync(string[] args, params (string Name, string Value)[] env)
    {
        var (code, stdout, stderr) = await RunAsync(args, null, env);
        return (code, stdout + stderr);
    }

    /// <summary>How to start the <c>ward</c> command built with the tests, with these arguments, its output redirected.</summary>
    public static System.Diagnostics.ProcessStartInfo StartInfo(string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ward.dll"));
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        return start;
    }

    public static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string[] args, string? stdin = null, params (string Name, string Value)[] env)
    {
        var start = StartInfo(args);
        start.RedirectStandardInput = stdin is not null;
        foreach (var (name, value) in env)
        {
            start.Environment[name] = value;
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout, await stderr);
    }
}
