using System.Buffers;
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
        var known = new Dictionary<UInt128, ChunkEntry>();
        List<string> knownPacks = [];
        string? previous = null;
        if (target.Snapshots() is [.., var last])
        {
            var (before, bytes) = target.ReadManifest(last, signer.Verifier);
            previous = BackupTarget.Sha256(bytes);
            knownPacks = before.Packs;
            var present = before.Packs.Select(p => File.Exists(target.PackPath(p))).ToArray();
            if (present.Contains(false))
            {
                warnings.Add($"{present.Count(p => !p)} packs of snapshot {last} are missing from the target; their chunks are stored again.");
            }
            foreach (var entry in before.Files.SelectMany(f => f.Entries()).Where(e => present[e.Pack]))
            {
                known[entry.Id] = entry;
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
        // One backup of a node at a time (the schedule and an operator's command): each builds on the latest snapshot.
        using var running = LockWork(work);
        try
        {
            sqlite.BackupTo(copy);
            // The blob files as they are now, after the copy: every blob a row of the copy names was on disk before its
            // row committed, so it lies within these lengths (the files only grow; what follows is read no further).
            var sources = new List<SourceFile> { new(Path.GetFileName(config.DatabasePath), copy, new FileInfo(copy).Length) };
            foreach (var name in BlobFiles.Names(sqlite.BlobFolder))
            {
                var path = Path.Combine(sqlite.BlobFolder, Path.GetFileName(name));
                sources.Add(new(name, path, new FileInfo(path).Length));
            }
            string checkpoint;
            int schema;
            using (var snapshotStore = new SqliteStore(copy, store.Keys))
            {
                // The copy's own checkpoint, for the manifest: not the node's high-water mark (the node may be further on by now).
                await using var audit = new AuditLog(snapshotStore, NodeKey.LoadOrCreate(config, snapshotStore), clock);
                checkpoint = await audit.CheckpointAsync(ct);
                schema = snapshotStore.TryGetSchemaVersion() ?? 0;
            }
            var sealedKeys = RecoveryKey.Seal(recovery, KeyBundle.Collect(config));
            target.WriteNew(target.KeysPath(id), sealedKeys);

            var (packs, entries, newChunks, packBytes) = await StoreChunksAsync(sources, keys, target, known, knownPacks, progress, ct);

            var ledger = KeyAdmin.ErasureLedgerPath(store.Keys);
            foreach (var (tag, when) in File.Exists(ledger) ? KeyBundle.ErasureTags(File.ReadAllLines(ledger)) : [])
            {
                target.RecordErasure(signer, tag, when);
            }

            var manifest = new Manifest(Manifest.FormatName, id, now, signer.Verifier.Name, "sqlite", schema,
                Fhir.CapabilityStatementBuilder.SoftwareVersion, previous, checkpoint, RecoveryKey.IdOf(recovery), BackupTarget.Sha256(sealedKeys),
                packs, [.. sources.Select((f, i) => new ManifestFile(f.Name, f.Length, ManifestFile.Table(entries[i])))],
                new ManifestStats(entries.Sum(e => e.Count), newChunks, packBytes + sealedKeys.Length, Math.Round(watch.Elapsed.TotalSeconds, 3)));
            var note = Encoding.UTF8.GetBytes(SignedNote.Sign(JsonSerializer.Serialize(manifest, ManifestJson.Default.Manifest) + "\n", signer));
            target.WriteNew(target.ManifestPath(id), note);
            return new BackupResult(manifest, manifest.Files.Sum(f => f.Size), note.Length, warnings);
        }
        finally
        {
            foreach (var file in Directory.EnumerateFiles(work, id + ".db*"))
            {
                File.Delete(file);
            }
        }
    }

    private static FileStream LockWork(string work)
    {
        try
        {
            return new FileStream(Path.Combine(work, "running.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
        }
        catch (IOException)
        {
            throw new NodeException("Another backup of this node is running (the schedule of 'ward serve', or another 'ward backup create'); try again when it is done.");
        }
    }

    /// <param name="PlainLength">For a sealed chunk: the length of its content.</param>
    private readonly record struct Piece(byte[] Buffer, int Length, UInt128 Id, int PlainLength = 0);

    /// <summary>
    /// Three stages: one thread reads the copy, cuts it and names each chunk (HMAC), keeping the ids in file order and
    /// passing on only the chunks that neither the previous snapshot nor this one already holds; one sealer per core
    /// compresses and encrypts them; this task appends them to packs in the order they come. Positions are resolved
    /// into the chunk table at the end.
    /// </summary>
    /// <returns>Each file's chunk table, in the order of <paramref name="files"/>.</returns>
    private static async Task<(List<string> Packs, List<List<ChunkEntry>> Entries, long NewChunks, long PackBytes)> StoreChunksAsync(
        List<SourceFile> files, BackupKeys keys, BackupTarget target, Dictionary<UInt128, ChunkEntry> previous, List<string> previousPacks,
        IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        var fresh = Channel.CreateBounded<Piece>(new BoundedChannelOptions(64) { SingleWriter = true });
        var sealedChunks = Channel.CreateBounded<Piece>(new BoundedChannelOptions(64) { SingleReader = true });
        var ids = files.Select(_ => new List<UInt128>()).ToList();
        var producer = Task.Run(() => Cut(files, keys, previous, ids, fresh.Writer, progress, ct), ct);
        var sealers = Task.WhenAll(Enumerable.Range(0, Environment.ProcessorCount).Select(_ => Task.Run(async () =>
        {
            using var seal = new ChunkSeal(keys.ChunkKey);
            await foreach (var piece in fresh.Reader.ReadAllAsync(ct))
            {
                var (buffer, length) = seal.Seal(piece.Buffer.AsSpan(0, piece.Length), piece.Id);
                ArrayPool<byte>.Shared.Return(piece.Buffer);
                await sealedChunks.Writer.WriteAsync(new Piece(buffer, length, piece.Id, piece.Length), ct);
            }
        }, ct)));
        _ = sealers.ContinueWith(t => sealedChunks.Writer.Complete(t.Exception), TaskScheduler.Default);

        var packs = new List<string>();
        var placed = new Dictionary<UInt128, ChunkEntry>();
        var flushes = new List<Task>();
        long packBytes = 0;
        var pack = ArrayPool<byte>.Shared.Rent(PackSize + Chunker.MaxSize + 2048);
        var length = 0;
        void Flush()
        {
            if (length == 0)
            {
                return;
            }
            var hash = BackupTarget.Sha256(pack.AsSpan(0, length));
            flushes.Add(target.WriteNewThenFlush(target.PackPath(hash), pack.AsSpan(0, length)));
            packs.Add(hash);
            packBytes += length;
            length = 0;
        }
        try
        {
            await foreach (var piece in sealedChunks.Reader.ReadAllAsync(ct))
            {
                piece.Buffer.AsSpan(0, piece.Length).CopyTo(pack.AsSpan(length));
                placed[piece.Id] = new ChunkEntry(packs.Count, length, piece.Length, piece.PlainLength, piece.Id);
                length += piece.Length;
                ArrayPool<byte>.Shared.Return(piece.Buffer);
                if (length >= PackSize)
                {
                    Flush();
                }
            }
            await producer;
            await sealers;
            Flush();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(pack);
            // Every pack is on disk before the manifest that names it is written (and before a failure is reported).
            await Task.WhenAll(flushes);
        }

        // The chunk tables in file order: this snapshot's packs first, then those of the previous snapshot that it reuses.
        var reused = new Dictionary<int, int>();
        var entries = new List<List<ChunkEntry>>(ids.Count);
        foreach (var fileIds in ids)
        {
            var table = new List<ChunkEntry>(fileIds.Count);
            foreach (var id in fileIds)
            {
                if (!placed.TryGetValue(id, out var entry))
                {
                    entry = previous[id];
                    if (!reused.TryGetValue(entry.Pack, out var index))
                    {
                        reused[entry.Pack] = index = packs.Count;
                        packs.Add(previousPacks[entry.Pack]);
                    }
                    entry = entry with { Pack = index };
                }
                table.Add(entry);
            }
            entries.Add(table);
        }
        return (packs, entries, placed.Count, packBytes);
    }

    /// <summary>A file the snapshot holds: its name in the manifest, where it is read from, and how much of it is taken.</summary>
    private readonly record struct SourceFile(string Name, string Path, long Length);

    /// <summary>Cuts each file, up to its length, into chunks; each file's chunk ids go to its list of <paramref name="ids"/>.</summary>
    private static void Cut(List<SourceFile> files, BackupKeys keys, Dictionary<UInt128, ChunkEntry> previous, List<List<UInt128>> ids,
        ChannelWriter<Piece> output, IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        try
        {
            var total = files.Sum(f => f.Length);
            var seen = new HashSet<UInt128>();
            var buffer = ArrayPool<byte>.Shared.Rent(ReadBuffer);
            long done = 0, reported = 0;
            try
            {
                for (var f = 0; f < files.Count; f++)
                {
                    if (!Cut(files[f], keys, previous, ids[f], seen, buffer, output, ref done, ref reported, total, progress, ct))
                    {
                        return;
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

    /// <summary>Cuts one file; false when the output was closed (the backup is failing).</summary>
    private static bool Cut(SourceFile file, BackupKeys keys, Dictionary<UInt128, ChunkEntry> previous, List<UInt128> ids, HashSet<UInt128> seen,
        byte[] buffer, ChannelWriter<Piece> output, ref long done, ref long reported, long total, IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        // Shared for writing: a blob file keeps growing while it is read, up to the length it had at the snapshot.
        using var stream = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
        var left = file.Length;
        int start = 0, end = 0;
        var eof = false;
        while (true)
        {
            if (!eof && end - start < Chunker.MaxSize)
            {
                Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                end -= start;
                start = 0;
                int n;
                while (end < buffer.Length && left > 0 && (n = stream.Read(buffer, end, (int)Math.Min(buffer.Length - end, left))) > 0)
                {
                    end += n;
                    left -= n;
                }
                eof = end < buffer.Length;
            }
            if (start == end)
            {
                break;
            }
            var data = buffer.AsSpan(start, end - start);
            var cut = Chunker.Cut(data);
            var id = keys.ChunkId(data[..cut]);
            ids.Add(id);
            if (!previous.ContainsKey(id) && seen.Add(id))
            {
                var piece = ArrayPool<byte>.Shared.Rent(cut);
                data[..cut].CopyTo(piece);
                var chunk = new Piece(piece, cut, id);
                while (!output.TryWrite(chunk))
                {
                    if (!output.WaitToWriteAsync(ct).AsTask().GetAwaiter().GetResult())
                    {
                        ArrayPool<byte>.Shared.Return(piece);
                        return false;
                    }
                }
            }
            start += cut;
            done += cut;
            if (done - reported >= 4 * 1024 * 1024 || done == total)
            {
                progress?.Report((done, total));
                reported = done;
            }
        }
        if (left > 0)
        {
            throw new IOException($"{file.Name} is shorter than when the snapshot was taken.");
        }
        return true;
    }
}
