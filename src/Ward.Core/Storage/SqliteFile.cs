using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;
using Ward.Core.Node;

namespace Ward.Core.Storage;

/// <summary>
/// The node's SQLite file as found on disk, checked before the store opens it for writing: a file that is missing, empty,
/// not a SQLite database, shorter than its header says, or a SQLite database without a Ward node's tables is refused
/// with what is wrong, and nothing is created or changed (opening for writing would create an empty database, or
/// switch the file to write-ahead logging).
/// </summary>
internal static class SqliteFile
{
    /// <summary>What to do about a database that is damaged or lost data: restore, not carry on.</summary>
    public const string Restore = "restore the node from its latest backup (docs/RECOVERY.md)";

    /// <summary>Whether the database has Ward's migration table (asked before anything is created in it).</summary>
    public const string HasSchemaSql = "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migration'";

    /// <summary>
    /// The database files a store of this process has open, with how many stores hold each. Closing any descriptor of a
    /// file drops every POSIX lock the process holds on it, SQLite's included: another process's last connection could then
    /// take the file for itself, checkpoint and delete the write-ahead log under this one's ("How To Corrupt An SQLite
    /// Database File", 2.2). A file a store of this process has open was checked when it was opened, and is never read
    /// through a descriptor of ours again.
    /// </summary>
    private static readonly ConcurrentDictionary<string, int> OpenHere = new(StringComparer.Ordinal);

    /// <summary>A store of this process opens the file (before its first connection).</summary>
    public static void Opened(string path) => OpenHere.AddOrUpdate(Path.GetFullPath(path), 1, (_, n) => n + 1);

    /// <summary>A store of this process has closed the file (after its last connection).</summary>
    public static void Closed(string path)
    {
        var full = Path.GetFullPath(path);
        while (OpenHere.TryGetValue(full, out var n)
            && !(n == 1 ? OpenHere.TryRemove(KeyValuePair.Create(full, n)) : OpenHere.TryUpdate(full, n - 1, n)))
        {
        }
    }

    /// <summary>Refuses a file that does not hold a Ward node's database (see the class); a file this process already has
    /// open as a node's database passes (see <see cref="OpenHere"/>).</summary>
    public static void CheckNode(string path)
    {
        if (OpenHere.ContainsKey(Path.GetFullPath(path)))
        {
            return;
        }
        if (HeaderProblem(path) is { } problem)
        {
            throw new NodeException(problem == Missing
                ? $"The database {path} is missing; {Restore}, or make a new node with 'ward init' in an empty folder."
                : $"The database {path} {problem}; {Restore}.");
        }
        bool hasSchema;
        try
        {
            using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
            connection.Open();
            using var cmd = connection.CreateCommand();
            cmd.CommandText = HasSchemaSql;
            hasSchema = Convert.ToBoolean(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (SqliteException e)
        {
            throw Damaged(path, e);
        }
        if (!hasSchema)
        {
            throw new NodeException($"The database {path} holds no Ward node (a SQLite database without Ward's tables); {Restore}.");
        }
    }

    /// <summary>SQLite found the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB) while the node opened it.</summary>
    public static bool IsDamage(SqliteException e) => e.SqliteErrorCode is 11 or 26;

    public static NodeException Damaged(string path, SqliteException e) =>
        new($"The database {path} is damaged (SQLite: {e.Message.TrimEnd('.')}); {Restore}.");

    private const string Missing = "is missing";

    /// <summary>What is wrong with the file's size or header, or null. A checkpoint that grows the file writes page 1 (and
    /// its new page count) before the pages past the old end: a file that looks short while its write-ahead log holds frames
    /// is looked at again for a moment before it is called truncated.</summary>
    private static string? HeaderProblem(string path)
    {
        for (var attempt = 0; ; attempt++)
        {
            var problem = Inspect(path, out var shortFile);
            if (!shortFile || attempt == 20 || !(new FileInfo(path + "-wal") is { Exists: true, Length: > 0 }))
            {
                return problem;
            }
            Thread.Sleep(50);
        }
    }

    private static string? Inspect(string path, out bool shortFile)
    {
        shortFile = false;
        if (Directory.Exists(path))
        {
            return "is a folder, not a database file";
        }
        if (!File.Exists(path))
        {
            return Missing;
        }
        var header = new byte[100];
        long length;
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            length = file.Length;
            file.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot be read ({e.Message.TrimEnd('.')})";
        }
        if (length == 0)
        {
            return "is empty (0 bytes)";
        }
        if (length < header.Length || !header.AsSpan(0, 16).SequenceEqual("SQLite format 3\0"u8))
        {
            return "is not a SQLite database (it does not begin with SQLite's header)";
        }
        var pageSize = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(16)) is var size && size == 1 ? 65536 : size;
        if (pageSize < 512 || (pageSize & (pageSize - 1)) != 0)
        {
            return $"is damaged (its header names a page size of {pageSize} bytes)";
        }
        // The page count in the header is valid when the change counter and the version-valid-for number agree (SQLite 3.7.0+).
        var pages = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(28));
        var valid = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(24)) == BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(92));
        if (valid && pages > 0 && length < (long)pages * pageSize)
        {
            shortFile = true;
            return $"is truncated ({length:N0} bytes, where its header counts {pages:N0} pages of {pageSize:N0} bytes)";
        }
        return null;
    }
}
