using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Ward.Core.Audit;
using Ward.Core.Crypto;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Core.Backup;

internal sealed record BackupResult(Manifest Manifest, long SourceBytes, long ManifestBytes, List<string> Warnings);

/// <summary>
/// <c>ward backup create</c>: a consistent copy of the database (SQLite online backup, while the node serves), with a
/// checkpoint signed over its audit log; the copy cut into content-defined chunks; chunks the previous snapshot already
/// holds are referenced, new ones sealed (AES-256-GCM under the backup key, the chunk id as associated data) into packs
/// of about 16 MiB; the node's keys sealed to the recovery key; the signed manifest last.
/// </summary>
internal static class BackupWriter
{
    public const int PackSize = 16 * 1024 * 1024;
    private const int ReadBuffer = 8 * 1024 * 1024;

    public static async Task<BackupResult> CreateAsync(NodeConfig config, RecordStore store, string targetDir, TimeProvider clock, IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        if (store is not SqliteStore sqlite)
        {
            throw new NodeException("'ward backup' copies the embedded SQLite database. A node on PostgreSQL is backed up with PostgreSQL's own tools "
                + "(pg_basebackup with WAL archiving), plus its data folder (ward.yaml and keys/): see docs/RECOVERY.md.");
        }
        var recovery = RecoveryKey.TryLoadPublic(config)
            ?? throw new NodeException($"This node has no recovery key ({config.Resolve(RecoveryKey.PublicFile)} is missing), so nothing could restore its backups. "
                + $"Create one with: ward keys new-recovery --data {config.DataDir}");
        var keys = BackupKeys.LoadOrCreate(config);
        using var signer = NodeKey.LoadOrCreate(config, store);
        var target = BackupTarget.OpenFor(targetDir, signer.Verifier);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var warnings = new List<string>();

        // The snapshot it builds on: its chunks are reused, its manifest hash chains the snapshots.
        var known = new Dictionary<UInt128, (string Pack, int Offset, int Length)>();
        string? previous = null;
        if (target.Snapshots() is [.., var last])
        {
            var (before, bytes) = target.ReadManifest(last, signer.Verifier);
            previous = BackupTarget.Sha256(bytes);
            var present = before.Packs.Select(p => File.Exists(target.PackPath(p))).ToArray();
            if (present.Contains(false))
            {
                warnings.Add($"{present.Count(p => !p)} packs of snapshot {last} are missing from the target; their chunks are stored again.");
            }
            foreach (var entry in before.Files.SelectMany(f => f.Entries()).Where(e => present[e.Pack]))
            {
                known[entry.Id] = (before.Packs[entry.Pack], entry.Offset, entry.Length);
            }
        }

        var now = clock.GetUtcNow();
        var id = now.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var work = config.Resolve("backup-work");
        Directory.CreateDirectory(work);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        var copy = Path.Combine(work, id + ".db");
        try
        {
            sqlite.BackupTo(copy);
            string checkpoint;
            int schema;
            using (var snapshotStore = new SqliteStore(copy, store.Keys))
            {
                await using var audit = AuditLog.Open(config, snapshotStore, clock);
                checkpoint = await audit.CheckpointAsync(ct);
                schema = snapshotStore.TryGetSchemaVersion() ?? 0;
            }
            var sealedKeys = RecoveryKey.Seal(recovery, KeyBundle.Collect(config));
            target.WriteNew(target.Relative(target.KeysPath(id)), sealedKeys);

            var packs = new List<string?>();
            var packIndex = new Dictionary<string, int>(StringComparer.Ordinal);
            var (entries, newChunks, packBytes) = await StoreChunksAsync(copy, keys, target, known, packs, packIndex, progress, ct);

            var ledger = KeyAdmin.ErasureLedgerPath(store.Keys);
            foreach (var (tag, when) in File.Exists(ledger) ? KeyBundle.ErasureTags(File.ReadAllLines(ledger)) : [])
            {
                target.RecordErasure(signer, tag, when);
            }

            var manifest = new Manifest(Manifest.FormatName, id, now, signer.Verifier.Name, "sqlite", schema,
                Fhir.CapabilityStatementBuilder.SoftwareVersion, previous, checkpoint, RecoveryKey.IdOf(recovery), BackupTarget.Sha256(sealedKeys),
                packs.Select(p => p!).ToList(), [new ManifestFile(Path.GetFileName(config.DatabasePath), new FileInfo(copy).Length, ManifestFile.Table(entries))],
                new ManifestStats(entries.Count, newChunks, packBytes + sealedKeys.Length, Math.Round(watch.Elapsed.TotalSeconds, 3)));
            var note = Encoding.UTF8.GetBytes(SignedNote.Sign(JsonSerializer.Serialize(manifest, ManifestJson.Default.Manifest) + "\n", signer));
            target.WriteNew(target.Relative(target.ManifestPath(id)), note);
            return new BackupResult(manifest, manifest.Files[0].Size, note.Length, warnings);
        }
        finally
        {
            foreach (var file in Directory.EnumerateFiles(work, id + ".db*"))
            {
                File.Delete(file);
            }
        }
    }

    private readonly record struct Piece(byte[] Buffer, int Length, UInt128 Id);

    /// <summary>
    /// Two stages on two threads: reading, cutting and naming chunks (HMAC) on one; looking them up and sealing the new
    /// ones into packs on the other.
    /// </summary>
    private static async Task<(List<ChunkEntry> Entries, long NewChunks, long PackBytes)> StoreChunksAsync(string file, BackupKeys keys, BackupTarget target,
        Dictionary<UInt128, (string Pack, int Offset, int Length)> known, List<string?> packs, Dictionary<string, int> packIndex,
        IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        var channel = Channel.CreateBounded<Piece>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
        var total = new FileInfo(file).Length;
        var producer = Task.Run(() => Cut(file, keys, channel.Writer, progress, total, ct), ct);
        var entries = new List<ChunkEntry>();
        long newChunks = 0, packBytes = 0;
        var pack = ArrayPool<byte>.Shared.Rent(PackSize + Chunker.MaxSize + ChunkEntry.Overhead);
        var length = 0;
        var current = -1;
        var aad = new byte[16];
        var flushes = new List<Task>();
        using var aes = new AesGcm(keys.ChunkKey, 16);
        void Flush()
        {
            if (length == 0)
            {
                return;
            }
            var hash = BackupTarget.Sha256(pack.AsSpan(0, length));
            flushes.Add(target.WriteNewThenFlush(target.Relative(target.PackPath(hash)), pack.AsSpan(0, length)));
            packs[current] = hash;
            packBytes += length;
            length = 0;
            current = -1;
        }
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(ct))
            {
                if (known.TryGetValue(piece.Id, out var at))
                {
                    if (!packIndex.TryGetValue(at.Pack, out var index))
                    {
                        packIndex[at.Pack] = index = packs.Count;
                        packs.Add(at.Pack);
                    }
                    entries.Add(new ChunkEntry(index, at.Offset, at.Length, piece.Id));
                }
                else
                {
                    if (current < 0)
                    {
                        current = packs.Count;
                        packs.Add(null);
                        packIndex[PendingPack(current)] = current;
                    }
                    var sealedLength = piece.Length + ChunkEntry.Overhead;
                    var slot = pack.AsSpan(length, sealedLength);
                    RandomNumberGenerator.Fill(slot[..12]);
                    BinaryPrimitives.WriteUInt128BigEndian(aad, piece.Id);
                    aes.Encrypt(slot[..12], piece.Buffer.AsSpan(0, piece.Length), slot.Slice(12, piece.Length), slot[^16..], aad);
                    var entry = new ChunkEntry(current, length, sealedLength, piece.Id);
                    entries.Add(entry);
                    newChunks++;
                    length += sealedLength;
                    // Equal chunks within this snapshot are stored once too; the pack's name is filled in when it is written.
                    known[piece.Id] = (PendingPack(current), entry.Offset, entry.Length);
                    if (length >= PackSize)
                    {
                        Flush();
                    }
                }
                ArrayPool<byte>.Shared.Return(piece.Buffer);
            }
            await producer;
            Flush();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(pack);
            // Every pack is on disk before the manifest that names it is written (and before a failure is reported).
            await Task.WhenAll(flushes);
        }
        return (entries, newChunks, packBytes);
    }

    // A pack being filled has no name yet: its chunks are looked up by a placeholder that maps to its index.
    private static string PendingPack(int index) => "pending:" + index.ToString(CultureInfo.InvariantCulture);

    private static void Cut(string file, BackupKeys keys, ChannelWriter<Piece> output, IProgress<(long Done, long Total)>? progress, long total, CancellationToken ct)
    {
        try
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            var buffer = ArrayPool<byte>.Shared.Rent(ReadBuffer);
            try
            {
                int start = 0, end = 0;
                long done = 0, reported = 0;
                var eof = false;
                while (true)
                {
                    if (!eof && end - start < Chunker.MaxSize)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                        int n;
                        while (end < buffer.Length && (n = stream.Read(buffer, end, buffer.Length - end)) > 0)
                        {
                            end += n;
                        }
                        eof = end < buffer.Length;
                    }
                    if (start == end)
                    {
                        break;
                    }
                    var data = buffer.AsSpan(start, end - start);
                    var cut = Chunker.Cut(data);
                    var piece = ArrayPool<byte>.Shared.Rent(cut);
                    data[..cut].CopyTo(piece);
                    var chunk = new Piece(piece, cut, keys.ChunkId(data[..cut]));
                    while (!output.TryWrite(chunk))
                    {
                        output.WaitToWriteAsync(ct).AsTask().GetAwaiter().GetResult();
                    }
                    start += cut;
                    done += cut;
                    if (done - reported >= 4 * 1024 * 1024 || done == total)
                    {
                        progress?.Report((done, total));
                        reported = done;
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            output.Complete();
        }
        catch (Exception e)
        {
            output.Complete(e);
            throw;
        }
    }
}
