using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Ward.Tests;

/// <summary>
/// The PostgreSQL server of the test run. <c>WARD_TEST_POSTGRES</c> names one (an Npgsql connection string of a role
/// that may create databases, its password in <c>PGPASSWORD</c>; <c>.ci/run</c> starts Debian's cluster and sets both).
/// Without it, a private cluster is started in a temporary folder from the installed PostgreSQL binaries
/// (<c>apt-get install postgresql</c>). With neither, the PostgreSQL tests fail and say so.
/// Each test node gets a database of its own.
/// </summary>
internal static class TestPostgres
{
    public const string Variable = "WARD_TEST_POSTGRES";

    /// <summary>The server's data directory, for tests that read what it wrote to disk (set by .ci/run; known for a private cluster).</summary>
    public const string DataVariable = "WARD_TEST_POSTGRES_DATA";

    private static PrivateCluster? _private;

    private static readonly Lazy<string> Admin = new(() =>
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } configured)
        {
            return configured;
        }
        _private = PrivateCluster.Start();
        return _private.AdminConnectionString;
    });

    public static string AdminConnectionString => Admin.Value;

    /// <summary>
    /// Every file in which the server may hold a database's data after a checkpoint: the database's own relation files,
    /// and the write-ahead log (shared by all databases of the server).
    /// </summary>
    public static List<string> FilesOf(string connectionString)
    {
        var data = Environment.GetEnvironmentVariable(DataVariable) is { Length: > 0 } configured ? configured : _private?.DataDirectory
            ?? throw new InvalidOperationException($"Set {DataVariable} to the PostgreSQL server's data directory (SHOW data_directory) so that the test can read its files.");
        uint oid;
        using (var connection = new NpgsqlConnection(connectionString))
        {
            connection.Open();
            using var checkpoint = new NpgsqlCommand("CHECKPOINT", connection);
            checkpoint.ExecuteNonQuery();
            using var cmd = new NpgsqlCommand("SELECT oid FROM pg_database WHERE datname = current_database()", connection);
            oid = (uint)cmd.ExecuteScalar()!;
        }
        return [.. Directory.EnumerateFiles(Path.Combine(data, "base", oid.ToString(System.Globalization.CultureInfo.InvariantCulture))),
            .. Directory.EnumerateFiles(Path.Combine(data, "pg_wal"))];
    }

    /// <summary>Creates an empty database and returns the connection string a node uses for it (no password: it comes from the environment).</summary>
    public static string CreateDatabase(string? admin = null)
    {
        admin ??= AdminConnectionString;
        var name = "ward_test_" + Guid.NewGuid().ToString("N")[..12];
        using (var connection = new NpgsqlConnection(admin))
        {
            connection.Open();
            using var cmd = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
            cmd.ExecuteNonQuery();
        }
        var builder = new NpgsqlConnectionStringBuilder(admin) { Database = name, Password = null };
        return builder.ConnectionString;
    }

    /// <summary>Drops a node's database, connecting as its owner to the server's maintenance database.</summary>
    public static void DropDatabase(string connectionString)
    {
        NpgsqlConnection.ClearAllPools();
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        var name = builder.Database;
        builder.Database = "postgres";
        using var connection = new NpgsqlConnection(builder.ConnectionString);
        connection.Open();
        try
        {
            using var force = new NpgsqlCommand($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", connection);
            force.ExecuteNonQuery();
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.InsufficientPrivilege)
        {
            // FORCE may not terminate an autovacuum worker (started on a freshly loaded database) without
            // pg_signal_backend; a plain DROP DATABASE stops such workers itself.
            using var plain = new NpgsqlCommand($"DROP DATABASE IF EXISTS {name}", connection);
            plain.ExecuteNonQuery();
        }
    }
}

/// <summary>
/// A PostgreSQL cluster of the test run's own, in a temporary folder on a free loopback port (trust authentication,
/// fsync off: it holds only test data). Run as the <c>postgres</c> user when the tests run as root, as initdb requires.
/// </summary>
internal sealed class PrivateCluster : IDisposable
{
    private readonly string _dir;
    private readonly string _bin;

    private PrivateCluster(string bin, string dir, int port)
    {
        _bin = bin;
        _dir = dir;
        Port = port;
    }

    public int Port { get; }

    public string DataDirectory => Path.Combine(_dir, "data");

    public string AdminConnectionString => $"Host=127.0.0.1;Port={Port};Username=ward;Database=postgres;Timeout=5";

    public static PrivateCluster Start()
    {
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "initdb"))).Order().LastOrDefault()
            : null;
        if (bin is null)
        {
            throw new InvalidOperationException($"The PostgreSQL tests need a PostgreSQL server: set {TestPostgres.Variable} to an Npgsql connection string of a role "
                + "that may create databases (password in PGPASSWORD), or install PostgreSQL (apt-get install postgresql) so that the tests start a private one. "
                + ".ci/run does the former.");
        }
        var dir = Path.Combine(Path.GetTempPath(), "ward-pg-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        if (Environment.UserName == "root")
        {
            Run("chown", "postgres", dir);
        }
        var cluster = new PrivateCluster(bin, dir, FreePort());
        cluster.Pg("initdb", "-D", Path.Combine(dir, "data"), "-U", "ward", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8");
        cluster.Start(wait: true);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => cluster.Dispose();
        return cluster;
    }

    public void Start(bool wait) => Pg("pg_ctl", "-D", Path.Combine(_dir, "data"), "-l", Path.Combine(_dir, "log"), wait ? "-w" : "-W",
        "-o", $"-p {Port} -k {_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300", "start");

    /// <summary>Stops the server at once (as a crash or an operator's restart would), without waiting for clients.</summary>
    public void Stop() => Pg("pg_ctl", "-D", Path.Combine(_dir, "data"), "-m", "fast", "-w", "stop");

    private void Pg(string tool, params string[] args)
    {
        var path = Path.Combine(_bin, tool);
        if (Environment.UserName == "root")
        {
            Run("runuser", ["-u", "postgres", "--", path, .. args]);
        }
        else
        {
            Run(path, args);
        }
    }

    private static void Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = "/" };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)) || process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed: {stdout.Result}{stderr.Result}");
        }
    }

    /// <summary>A loopback port free at the time of asking.</summary>
    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        try
        {
            Pg("pg_ctl", "-D", Path.Combine(_dir, "data"), "-m", "immediate", "stop");
        }
        catch (InvalidOperationException)
        {
        }
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
