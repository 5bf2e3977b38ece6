using System.Globalization;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Core.Audit;

/// <summary>
/// The node's high-water mark: the latest audit checkpoint it signed, kept outside its database, in the data folder
/// (<see cref="FileName"/>: the C2SP signed note as signed, 0600, replaced atomically once per new checkpoint). A database
/// is consistent in itself when it is rolled back to an older copy or loses the end of its log; only something kept
/// elsewhere shows it. The database's log must extend the mark: hold at least its entries, with the signed root at its
/// size (ADR 0016). <c>ward verify</c>, <c>ward audit verify</c> and <c>ward doctor</c> check it.
/// </summary>
internal sealed class AuditHighWater(string path)
{
    public const string FileName = "audit-checkpoint.note";

    private readonly Lock _gate = new();

    /// <summary>In this process: whether the database extended the mark found at its first checkpoint (null: not looked yet).</summary>
    private bool? _extended;

    /// <summary>The size of the mark on disk as this process last read or wrote it.</summary>
    private long _size = -1;

    public static AuditHighWater Of(NodeConfig config) => new(config.Resolve(FileName));

    /// <summary>What a check found: <see cref="Ok"/> true (the log extends the mark), false (data lost, rolled back or the mark
    /// altered), null (no mark yet: a notice, not a failure).</summary>
    internal readonly record struct Finding(bool? Ok, string Text);

    /// <summary>Checks the database's log against the mark: O(log n) reads of stored subtree hashes.</summary>
    public Finding Check(StoreSession s, SignedNote.Verifier verifier)
    {
        if (!File.Exists(path))
        {
            return new(null, $"no high-water mark ({path}) yet: the node writes it at its next audit checkpoint; from then on a database that lost data or was rolled back is found");
        }
        string note;
        DateTime written;
        try
        {
            note = File.ReadAllText(path);
            written = File.GetLastWriteTimeUtc(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new(false, $"the high-water mark {path} cannot be read ({e.Message.TrimEnd('.')})");
        }
        if (!SignedNote.TryOpen(note, [verifier], out var text, out _, out var error) || !Checkpoint.TryParse(text, out var mark) || mark.Origin != verifier.Name)
        {
            return new(false, $"the high-water mark {path} is not a checkpoint signed by the node key {verifier.Name} ({error ?? "not a checkpoint of this node"}): "
                + $"it was altered or replaced; compare the node with its latest backup (docs/RECOVERY.md)");
        }
        var at = written.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);
        var size = s.AuditSize();
        if (size < mark.Size)
        {
            return new(false, $"the database holds {size:N0} audit entries; this node had signed {mark.Size:N0} at {at}: it lost data or was rolled back; {SqliteFile.Restore}");
        }
        byte[] root;
        try
        {
            root = Merkle.Root(mark.Size, AuditLog.Subtrees(s));
        }
        catch (AuditIntegrityException e)
        {
            return new(false, $"the database's audit log cannot be compared with the high-water mark: {e.Message}");
        }
        if (!root.AsSpan().SequenceEqual(mark.Root))
        {
            return new(false, $"the database's first {mark.Size:N0} audit entries are not the ones this node signed at {at}: it lost data or was rolled back "
                + $"(and written to since), or its history was rewritten; {SqliteFile.Restore}");
        }
        return new(true, $"the audit log extends the node's high-water mark ({mark.Size:N0} entries signed at {at}, {path})");
    }

    /// <summary>
    /// Called with each checkpoint the node signs (or finds): writes it as the new mark when it is further on than the one on
    /// disk. The first time in a process, the mark found is checked against the database: one the database does not extend
    /// is left as it is, for <c>ward verify</c> to report, and never overwritten by this process. Returns what went wrong (for
    /// the logs), or null.
    /// </summary>
    public string? Advance(RecordStore store, SignedNote.Verifier verifier, string note)
    {
        if (Peek(note) is not { } size)
        {
            return null;
        }
        lock (_gate)
        {
            if (size <= _size)
            {
                return null;
            }
            string? problem = null;
            if (_extended is null)
            {
                var found = store.Read(s => Check(s, verifier));
                _extended = found.Ok != false;
                problem = _extended == false ? found.Text : null;
            }
            if (_extended == false)
            {
                return problem;
            }
            try
            {
                // Another process of the node (ward import beside ward serve) may have written a later one.
                var onDisk = File.Exists(path) ? Peek(File.ReadAllText(path)) ?? -1 : -1;
                if (onDisk < size)
                {
                    Write(note);
                }
                _size = Math.Max(size, onDisk);
                return null;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return $"the high-water mark {path} could not be written ({e.Message.TrimEnd('.')})";
            }
        }
    }

    /// <summary>Replaces the mark (a temporary file flushed to disk, then renamed over it): never half written.</summary>
    public void Write(string note)
    {
        var temp = $"{path}.{Environment.ProcessId}.tmp";
        File.Delete(temp);
        NodeConfig.WritePrivate(temp, note, durable: true);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>The size a checkpoint note names, without checking its signature (the node's own, or read only to compare sizes).</summary>
    private static long? Peek(string note)
    {
        var split = note.LastIndexOf("\n\n", StringComparison.Ordinal);
        return split >= 0 && Checkpoint.TryParse(note[..(split + 1)], out var checkpoint) ? checkpoint.Size : null;
    }
}
