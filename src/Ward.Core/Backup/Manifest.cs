using System.Buffers.Binary;
using System.Text.Json.Serialization;

namespace Ward.Core.Backup;

/// <summary>
/// What a snapshot holds, signed by the node key (a C2SP signed note whose text is this JSON on one line). Chunks are
/// referenced by pack (an index into <see cref="Packs"/>, the SHA-256 names of the pack files), offset and stored length.
/// </summary>
/// <param name="Previous">SHA-256 of the manifest file of the snapshot before it on the target: the snapshots form a chain.</param>
/// <param name="Checkpoint">The signed audit checkpoint of the snapshot's log, at its exact size.</param>
/// <param name="RecoveryKey">The id of the recovery key that the snapshot's keys are sealed to.</param>
/// <param name="KeysSha256">SHA-256 of the sealed keys file (<c>snapshots/ID.keys</c>).</param>
internal sealed record Manifest(
    string Format,
    string Snapshot,
    DateTimeOffset Created,
    string Node,
    string Engine,
    int SchemaVersion,
    string Software,
    string? Previous,
    string Checkpoint,
    string RecoveryKey,
    string KeysSha256,
    List<string> Packs,
    List<ManifestFile> Files,
    ManifestStats Stats)
{
    public const string FormatName = "ward-backup-manifest-1";

    /// <summary>The audit log's size at the snapshot (the checkpoint's second line).</summary>
    [JsonIgnore]
    public string AuditEntries => Checkpoint.Split('\n')[1];
}

/// <param name="Chunks">The chunk table in base64: per chunk, in file order, pack index (int32), offset (int32), stored
/// length (int32), plain length (int32) and id (128 bits), big-endian: 32 bytes.</param>
internal sealed record ManifestFile(string Name, long Size, string Chunks)
{
    public const int EntrySize = 32;

    public IEnumerable<ChunkEntry> Entries()
    {
        var table = Convert.FromBase64String(Chunks);
        if (table.Length % EntrySize != 0)
        {
            throw new FormatException($"the chunk table of {Name} is malformed");
        }
        for (var i = 0; i < table.Length; i += EntrySize)
        {
            var e = table.AsSpan(i, EntrySize);
            yield return new ChunkEntry(BinaryPrimitives.ReadInt32BigEndian(e), BinaryPrimitives.ReadInt32BigEndian(e[4..]),
                BinaryPrimitives.ReadInt32BigEndian(e[8..]), BinaryPrimitives.ReadInt32BigEndian(e[12..]), BinaryPrimitives.ReadUInt128BigEndian(e[16..]));
        }
    }

    public static string Table(IReadOnlyList<ChunkEntry> entries)
    {
        var table = new byte[entries.Count * EntrySize];
        for (var i = 0; i < entries.Count; i++)
        {
            var e = table.AsSpan(i * EntrySize, EntrySize);
            BinaryPrimitives.WriteInt32BigEndian(e, entries[i].Pack);
            BinaryPrimitives.WriteInt32BigEndian(e[4..], entries[i].Offset);
            BinaryPrimitives.WriteInt32BigEndian(e[8..], entries[i].Length);
            BinaryPrimitives.WriteInt32BigEndian(e[12..], entries[i].PlainLength);
            BinaryPrimitives.WriteUInt128BigEndian(e[16..], entries[i].Id);
        }
        return Convert.ToBase64String(table);
    }
}

/// <summary>
/// One chunk of a file: where it is stored (pack, offset, sealed length), its length in the file, and its id. Sealed, a
/// chunk is a 12-byte nonce, the AES-256-GCM ciphertext of a format byte (0 stored, 1 Deflate) and the content, and the
/// 16-byte tag; the id is the associated data.
/// </summary>
internal readonly record struct ChunkEntry(int Pack, int Offset, int Length, int PlainLength, UInt128 Id)
{
    public const int Overhead = 12 + 1 + 16;
}

/// <param name="NewBytes">Bytes this snapshot added to the target (packs, keys and manifest).</param>
internal sealed record ManifestStats(long Chunks, long NewChunks, long NewBytes, double Seconds);

[JsonSerializable(typeof(Manifest))]
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
internal sealed partial class ManifestJson : JsonSerializerContext;
