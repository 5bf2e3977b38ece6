using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using Ward.Core.Node;

namespace Ward.Core.Storage;

/// <summary>
/// Large sealed versions (DICOM instances) written once, into append-only files beside the SQLite database
/// (<c>blobs/00000001.blob</c>, ...), instead of page by page into SQLite's write-ahead log and again into the database by
/// the checkpoint (ADR 0014). The version row then holds a <em>reference</em>: the file, the offset, the length and the
/// SHA-256 of the envelope, which the row's digest (and so the audit log) commits.
/// <para>
/// The envelope is the same as in a row (AES-256-GCM under the owning patient's key, bound to type, id, version and key
/// id), sealed by the writer as before; only where it goes changes. A reference is only ever committed once the bytes it names are
/// durable (<see cref="DurableAsync"/>, a group flush with <c>fdatasync</c>): a crash can leave bytes no row names (the
/// tail of a file, never read), never a row naming bytes that are not on disk. Files are never rewritten; each process
/// appends only to files it created (a new one when it first writes, and past <see cref="FileBytes"/>).
/// </para>
/// </summary>
internal sealed class BlobFiles : IDisposable
{
    /// <summary>The first byte of a stored version's data that is a reference (an envelope starts with its format version, 1).</summary>
    private const byte Marker = 0xB1;

    /// <summary>Marker, file number, offset, length, SHA-256 of the envelope.</summary>
    public const int ReferenceLength = 1 + 4 + 8 + 4 + 32;

    /// <summary>A new file is started once the current one holds this much.</summary>
    public const long FileBytes = 1L << 30;

    public const string FolderName = "blobs";

    /// <summary>Envelopes of this size or more go to a blob file (an image); smaller ones stay in their row (a record).</summary>
    public const int MinBytes = 64 * 1024;

    private readonly string _folder;
    private readonly Lock _lock = new();
    private readonly LogFlusher _flusher;
    private readonly ConcurrentDictionary<int, SafeFileHandle> _readers = new();
    /// <summary>Files written to since the last flush began.</summary>
    private readonly HashSet<int> _unflushed = [];
    private readonly Dictionary<int, SafeFileHandle> _writers = [];
    private int _file;
    private long _end;

    /// <param name="folder">The folder of the blob files (made when the first blob is written).</param>
    public BlobFiles(string folder, Func<ILogger> logger, NodeMetrics metrics)
    {
        _folder = folder;
        _flusher = new LogFlusher(Flush, "blob files", logger, metrics, "blob-files");
        var last = Directory.Exists(folder) ? Numbers(folder).DefaultIfEmpty(0).Max() : 0;
        // A file of its own from the first append: another process on the same node (ward import beside ward serve)
        // appends to files it created itself, so no two writers ever share one.
        (_file, _end) = (last, FileBytes);
    }

    public static bool IsReference(ReadOnlySpan<byte> data) => data.Length == ReferenceLength && data[0] == Marker;

    /// <summary>The blob files of a folder, in order, as names relative to the node's data folder.</summary>
    public static IEnumerable<string> Names(string folder) =>
        Directory.Exists(folder) ? Numbers(folder).Order().Select(n => $"{FolderName}/{FileName(n)}") : [];

    /// <summary>Whether a relative name is a blob file's, as <see cref="Names"/> gives it (a manifest is checked against it before a restore writes the file).</summary>
    public static bool IsName(string name) => System.Text.RegularExpressions.Regex.IsMatch(name, $"^{FolderName}/[0-9]{{8}}\\.blob$");

    private static IEnumerable<int> Numbers(string folder) =>
        Directory.EnumerateFiles(folder, "*.blob").Select(f => int.TryParse(Path.GetFileNameWithoutExtension(f), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0).Where(n => n > 0);

    private static string FileName(int number) => number.ToString("D8", CultureInfo.InvariantCulture) + ".blob";

    private static string PathOf(string folder, int number) => Path.Combine(folder, FileName(number));

    /// <summary>Writes an envelope at the end of the current file and returns its reference; durable only after <see cref="DurableAsync"/>.</summary>
    public byte[] Append(ReadOnlySpan<byte> envelope)
    {
        SafeFileHandle file;
        int number;
        long offset;
        lock (_lock)
        {
            if (_end + envelope.Length > FileBytes && _end > 0)
            {
                StartFile();
            }
            number = _file;
            offset = _end;
            _end += envelope.Length;
            file = Writer(number);
            _unflushed.Add(number);
        }
        RandomAccess.Write(file, envelope, offset);
        var reference = new byte[ReferenceLength];
        reference[0] = Marker;
        BinaryPrimitives.WriteInt32LittleEndian(reference.AsSpan(1), number);
        BinaryPrimitives.WriteInt64LittleEndian(reference.AsSpan(5), offset);
        BinaryPrimitives.WriteInt32LittleEndian(reference.AsSpan(13), envelope.Length);
        SHA256.HashData(envelope, reference.AsSpan(17));
        return reference;
    }

    /// <summary>Completes once everything appended before the call is on disk (shared by every append of the meantime).</summary>
    public Task DurableAsync() => _flusher.Flushed();

    /// <summary>The envelope a reference names (its integrity is the envelope's own tag's, checked when it is opened).</summary>
    public byte[] Read(ReadOnlySpan<byte> reference)
    {
        var (number, offset, length) = Parse(reference);
        var file = _readers.GetOrAdd(number, n => File.OpenHandle(PathOf(_folder, n), FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        // Checked before anything is allocated: a reference altered behind the node may name any length.
        var envelope = offset >= 0 && length >= 0 && offset + length <= RandomAccess.GetLength(file) ? new byte[length] : null;
        if (envelope is null || RandomAccess.Read(file, envelope, offset) != length)
        {
            throw new IOException($"{FileName(number)} ends before the blob a stored version names.");
        }
        return envelope;
    }

    /// <summary>Whether the bytes a reference names are there and hash to what it commits (for <c>ward verify</c>): null, or what is wrong.</summary>
    public string? Check(ReadOnlySpan<byte> reference)
    {
        var name = $"{FolderName}/{FileName(Parse(reference).Number)}";
        try
        {
            return SHA256.HashData(Read(reference)).AsSpan().SequenceEqual(reference[17..]) ? null : $"its bytes in {name} differ from what the row commits";
        }
        catch (FileNotFoundException)
        {
            return $"{name} is missing";
        }
        catch (IOException)
        {
            return $"its bytes in {name} differ from what the row commits";
        }
    }

    private static (int Number, long Offset, int Length) Parse(ReadOnlySpan<byte> reference) =>
        (BinaryPrimitives.ReadInt32LittleEndian(reference[1..]), BinaryPrimitives.ReadInt64LittleEndian(reference[5..]), BinaryPrimitives.ReadInt32LittleEndian(reference[13..]));

    private SafeFileHandle Writer(int number)
    {
        if (!_writers.TryGetValue(number, out var handle))
        {
            handle = _writers[number] = File.OpenHandle(PathOf(_folder, number), FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        }
        return handle;
    }

    /// <summary>Starts the next file, and makes its name durable in the folder before any reference can name it.</summary>
    private void StartFile()
    {
        CreateFolder(_folder);
        var number = _file;
        string path;
        while (true)
        {
            path = PathOf(_folder, ++number);
            try
            {
                using (new FileStream(path, FileMode.CreateNew))
                {
                }
                break;
            }
            catch (IOException) when (File.Exists(path))
            {
                // Created by another process of the node since: the next number.
            }
        }
        if (!OperatingSystem.IsWindows())
        {
            // Ciphertext only, but the node's to read: owner only, as the database.
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        Disk.FlushFolder(_folder);
        (_file, _end) = (number, 0);
    }

    /// <summary>Makes the blob files' folder if it is missing (the owner's only), durably: by the first blob, or by a restore.</summary>
    public static void CreateFolder(string folder)
    {
        if (Directory.Exists(folder))
        {
            return;
        }
        Directory.CreateDirectory(folder);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        Disk.FlushFolder(Path.GetDirectoryName(Path.GetFullPath(folder))!);
    }

    private void Flush()
    {
        List<SafeFileHandle> files;
        lock (_lock)
        {
            files = [.. _unflushed.Select(n => _writers[n])];
            _unflushed.Clear();
        }
        foreach (var file in files)
        {
            Disk.FlushData(file);
        }
    }

    public void Dispose()
    {
        _flusher.Dispose();
        foreach (var handle in _writers.Values.Concat(_readers.Values))
        {
            handle.Dispose();
        }
    }
}
