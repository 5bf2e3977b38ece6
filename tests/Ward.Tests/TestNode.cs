using System.Net;
using Hl7.Fhir.Rest;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server;

namespace Ward.Tests;

/// <summary>A real node in a temporary folder, served by Kestrel on 127.0.0.1 with an ephemeral port.</summary>
public sealed class TestNode : IAsyncLifetime, IDisposable
{
    private WebApplication? _app;

    internal NodeConfig Config { get; private set; } = null!;
    internal SqliteStore Store { get; private set; } = null!;
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

    public async Task InitializeAsync()
    {
        Config = NodeConfig.Init(DataDir, "test");
        Config.MaxRequestBodyBytes = 8 * 1024 * 1024;
        Store = SqliteStore.Open(Config);
        _app = WardServer.Build(Config, "http://127.0.0.1:0", Store, logging => logging.AddProvider(Logs));
        await _app.StartAsync();
        var address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        BaseUrl = address.TrimEnd('/') + "/fhir";
        Http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None }) { Timeout = TimeSpan.FromMinutes(5) };
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
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
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

[CollectionDefinition(Name)]
public sealed class SharedNode : ICollectionFixture<TestNode>
{
    public const string Name = "shared node";
}

/// <summary>Where the shared test data lives (../shared/data from the repository root).</summary>
internal static class TestData
{
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
