using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace Ward.Core.Node;

/// <summary>The node's configuration file, <c>ward.yaml</c> in the data folder. Relative paths are relative to that folder.</summary>
internal sealed class NodeConfig
{
    public const string FileName = "ward.yaml";

    public string Name { get; set; } = "ward";

    /// <summary>The SQLite file (relative to the data folder), or a PostgreSQL connection string (Npgsql form, without a password).</summary>
    public string Database { get; set; } = "ward.db";
    public string Urls { get; set; } = "http://127.0.0.1:8080";
    public long MaxRequestBodyBytes { get; set; } = 64L * 1024 * 1024;
    public TlsConfig Tls { get; set; } = new();
    public RateLimitConfig RateLimits { get; set; } = new();

    /// <summary>What one request may make the node hold or do, before and after its caller is authorized (docs/SECURITY.md).</summary>
    public RequestLimitsConfig Limits { get; set; } = new();
    public BackupConfig Backup { get; set; } = new();

    /// <summary>The Prometheus endpoint <c>/metrics</c> of <c>ward serve</c>: who may scrape it (docs/SECURITY.md).</summary>
    public MetricsConfig Metrics { get; set; } = new();

    /// <summary>The format of <c>ward serve</c>'s log on standard output.</summary>
    public LoggingConfig Logging { get; set; } = new();

    /// <summary>The master key file; the environment variable <c>WARD_MASTER_KEY_FILE</c> overrides it.</summary>
    public string MasterKeyFile { get; set; } = "keys/master.key";

    [YamlIgnore]
    public string DataDir { get; private set; } = "";

    [YamlIgnore]
    public string DatabasePath => Resolve(Database);

    /// <summary>A connection string (<c>Host=...;Database=...</c>) names PostgreSQL; anything else is the SQLite file.</summary>
    [YamlIgnore]
    public bool IsPostgres => Database.Contains('=', StringComparison.Ordinal);

    public const string MasterKeyVariable = "WARD_MASTER_KEY_FILE";

    [YamlIgnore]
    public string MasterKeyPath => Environment.GetEnvironmentVariable(MasterKeyVariable) is { Length: > 0 } env ? System.IO.Path.GetFullPath(env) : Resolve(MasterKeyFile);

    public string Resolve(string path) => System.IO.Path.IsPathRooted(path) ? path : System.IO.Path.Combine(DataDir, path);

    private static readonly ISerializer Writer = new SerializerBuilder().WithNamingConvention(HyphenatedNamingConvention.Instance).Build();

    public static NodeConfig Load(string dataDir)
    {
        var full = System.IO.Path.GetFullPath(dataDir);
        var file = System.IO.Path.Combine(full, FileName);
        RefuseFile(full);
        if (!File.Exists(file))
        {
            throw new NodeException($"No Ward node in '{full}': {FileName} is missing. Create one with: ward init --data {dataDir}");
        }
        NodeConfig config;
        try
        {
            config = Yaml.Reader.Deserialize<NodeConfig>(File.ReadAllText(file)) ?? new NodeConfig();
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new NodeException($"{file} is not valid: {e.Message}");
        }
        config.DataDir = full;
        return config;
    }

    /// <summary>A node is a folder: a file where it is named is refused, with what was expected.</summary>
    private static void RefuseFile(string full)
    {
        if (File.Exists(full))
        {
            throw new NodeException($"'{full}' is a file: --data names the node's folder (the one holding {FileName}).");
        }
    }

    public void Save()
    {
        var header = "# Ward node configuration. Relative paths are relative to this folder.\n";
        File.WriteAllText(System.IO.Path.Combine(DataDir, FileName), header + Writer.Serialize(this));
    }

    /// <summary>Creates a node: configuration, key folder (0700) with the master key and a development TLS certificate.</summary>
    /// <param name="database">A PostgreSQL connection string, or null for the embedded SQLite file.</param>
    public static NodeConfig Init(string dataDir, string name, string? database = null)
    {
        if (database is not null)
        {
            Storage.PostgresStore.Check(database);
        }
        var full = System.IO.Path.GetFullPath(dataDir);
        RefuseFile(full);
        if (File.Exists(System.IO.Path.Combine(full, FileName)) || File.Exists(System.IO.Path.Combine(full, "ward.db")))
        {
            throw new NodeException($"'{full}' already holds a Ward node; refusing to overwrite it.");
        }
        Directory.CreateDirectory(full);
        var keys = System.IO.Path.Combine(full, "keys");
        Directory.CreateDirectory(keys);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(keys, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        var config = new NodeConfig { Name = name, DataDir = full };
        if (database is not null)
        {
            config.Database = database;
        }
        config.Tls = new TlsConfig { Certificate = "keys/tls.crt", Key = "keys/tls.key" };
        Crypto.MasterKeyFile.Create(config.MasterKeyPath);
        WriteDevelopmentCertificate(config.Resolve(config.Tls.Certificate), config.Resolve(config.Tls.Key), name);
        using (var nodeKey = Audit.NodeKey.Create(config))
        {
            Ward.Core.Backup.BackupKeys.LoadOrCreate(config);
            Ward.Core.Backup.RecoveryKey.Create(config, nodeKey.Verifier.VKey);
        }
        config.Save();
        return config;
    }

    private static void WriteDevelopmentCertificate(string certPath, string keyPath, string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name} (Ward development certificate)", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        san.AddIpAddress(System.Net.IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = DateTimeOffset.UtcNow;
        using var cert = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(1));
        File.WriteAllText(certPath, cert.ExportCertificatePem());
        WritePrivate(keyPath, key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>Writes a secret file readable by the owner only (0600) from its creation, flushed to disk.</summary>
    public static void WritePrivate(string path, string content, bool durable = false)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        using var stream = new FileStream(path, options);
        using var writer = new StreamWriter(stream);
        writer.Write(content);
        writer.Flush();
        if (durable)
        {
            stream.Flush(flushToDisk: true);
        }
    }
}

internal sealed class TlsConfig
{
    /// <summary>PEM certificate file; TLS is configured when both files are named and exist.</summary>
    public string? Certificate { get; set; }
    public string? Key { get; set; }
}

/// <summary>Requests per minute and client address on the sign-in pages and the token endpoint (429 beyond).</summary>
internal sealed class RateLimitConfig
{
    public int LoginPerMinute { get; set; } = 20;
    public int TokenPerMinute { get; set; } = 120;
}

/// <summary>
/// The bounds on what a request can make the node hold or compute (<c>limits</c> in <c>ward.yaml</c>). Each has a safe
/// default; each is documented in docs/SECURITY.md with what it bounds.
/// </summary>
internal sealed class RequestLimitsConfig
{
    /// <summary>All the header lines of a request together, in bytes (431 beyond): the bearer token is read from them before anything else.</summary>
    public int MaxHeaderBytes { get; set; } = 32 * 1024;

    /// <summary>Header lines in a request (431 beyond).</summary>
    public int MaxHeaders { get; set; } = 100;

    /// <summary>The body of a request whose caller is not authenticated yet (sign-in pages, token and other OAuth endpoints), in bytes (413 beyond).</summary>
    public long MaxUnauthenticatedBodyBytes { get; set; } = 64 * 1024;

    /// <summary>Parts of one multipart body (a STOW-RS request), 413 beyond.</summary>
    public int MaxMultipartParts { get; set; } = 1000;

    /// <summary>The header lines of one part of a multipart body together, in bytes (400 beyond).</summary>
    public int MaxPartHeaderBytes { get; set; } = 16 * 1024;

    /// <summary>Nesting depth of a JSON or XML body (400 beyond).</summary>
    public int MaxBodyDepth { get; set; } = 128;

    /// <summary>JSON tokens or XML nodes in one body (413 beyond): what the parsed resource costs in memory grows with them, not with the bytes.</summary>
    public int MaxBodyElements { get; set; } = 2_000_000;

    /// <summary>Entries of a transaction or batch Bundle (413 beyond).</summary>
    public int MaxBundleEntries { get; set; } = 10_000;

    /// <summary>Expensive requests (STOW-RS, WADO-RS, transactions and batches, operations such as $everything, searches with _include, _revinclude or _has, research questions) one caller may have in progress at once (429 with Retry-After beyond).</summary>
    public int HeavyRequestsPerCaller { get; set; } = 4;

    /// <summary>Requests the node works on at once, all callers together (503 with Retry-After beyond, instead of running out of memory).</summary>
    public int MaxConcurrentRequests { get; set; } = 128;
}

/// <summary>Scheduled backups while the node serves (<c>ward backup create</c> does the same by hand).</summary>
internal sealed class BackupConfig
{
    /// <summary>The backup target folder (a mount of another machine or of append-only storage); none: no scheduled backups.</summary>
    public string? Target { get; set; }

    /// <summary>Minutes between two scheduled backups (the first one a minute after the node starts).</summary>
    public int IntervalMinutes { get; set; } = 360;
}

/// <summary>
/// The metrics endpoint (<c>/metrics</c>, Prometheus text). Without a token file it answers only requests from a loopback
/// address that came through no proxy (no <c>Forwarded</c> or <c>X-Forwarded-For</c> header); with one, only requests
/// carrying <c>Authorization: Bearer</c> and the file's token, from any address. Every other request gets 404.
/// </summary>
internal sealed class MetricsConfig
{
    /// <summary>Whether the node measures and serves <c>/metrics</c> at all.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>A file holding the scrape token (relative to the data folder; owner-only, like the keys); none: loopback only.</summary>
    public string? TokenFile { get; set; }
}

/// <summary>The log of <c>ward serve</c> on standard output (<c>--log-format</c> overrides it).</summary>
internal sealed class LoggingConfig
{
    public const string Text = "text";
    public const string Json = "json";

    /// <summary><c>text</c> (one escaped line per event, the default) or <c>json</c> (one JSON object per line).</summary>
    public string Format { get; set; } = Text;
}

/// <summary>A node-level failure the operator must fix (missing node, bad configuration): printed, never a stack trace.</summary>
internal sealed class NodeException(string message) : Exception(message);
