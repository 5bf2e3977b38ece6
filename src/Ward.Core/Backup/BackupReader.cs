using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Ward.Core.Audit;
using Ward.Core.Crypto;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Core.Backup;

internal sealed record RestoreResult(Manifest Manifest, NodeConfig Config, long Bytes, List<string> Erased, List<string> Warnings);

/// <summary><c>ward backup verify</c> and <c>ward backup restore</c>.</summary>
internal static class BackupReader
{
    /// <summary>
    /// Checks what can be checked without the recovery key: every manifest's signature and its link to the one before,
    /// the sealed keys' hash, every referenced pack present with the SHA-256 its name says, every chunk inside its pack.
    /// Returns the problems found (none: intact) and reports each snapshot checked.
    /// </summary>
    public static List<string> Verify(BackupTarget target, SignedNote.Verifier verifier, Action<string>? checkedSnapshot = null)
    {
        var problems = new List<string>();
        var packs = new Dictionary<string, long?>(StringComparer.Ordinal);
        string? previous = null;
        foreach (var id in target.Snapshots())
        {
            Manifest manifest;
            byte[] bytes;
            try
            {
                (manifest, bytes) = target.ReadManifest(id, verifier);
            }
            catch (BackupDamageException e)
            {
                problems.Add(e.Message);
                previous = null;
                continue;
            }
            var before = problems.Count;
            if (previous is not null && manifest.Previous != previous)
            {
                problems.Add($"snapshot {id}: it does not follow the snapshot before it on the target (a snapshot was removed or replaced).");
            }
            previous = BackupTarget.Sha256(bytes);
            var keys = target.KeysPath(id);
            if (!File.Exists(keys))
            {
                problems.Add($"snapshot {id}: its sealed keys ({target.Relative(keys)}) are missing.");
            }
            else if (BackupTarget.Sha256(File.ReadAllBytes(keys)) != manifest.KeysSha256)
            {
                problems.Add($"snapshot {id}: its sealed keys ({target.Relative(keys)}) were altered.");
            }
            foreach (var pack in manifest.Packs)
            {
                if (!packs.ContainsKey(pack))
                {
                    packs[pack] = CheckPack(target, pack);
                }
                if (packs[pack] is null)
                {
                    problems.Add($"snapshot {id}: pack {target.Relative(target.PackPath(pack))} is {(File.Exists(target.PackPath(pack)) ? "corrupt (its content does not match its hash)" : "missing")}.");
                }
            }
            foreach (var file in manifest.Files)
            {
                var size = 0L;
                foreach (var chunk in file.Entries())
                {
                    size += chunk.PlainLength;
                    if (chunk.Pack < 0 || chunk.Pack >= manifest.Packs.Count || chunk.Offset < 0 || chunk.PlainLength <= 0
                        || packs[manifest.Packs[chunk.Pack]] is { } length && chunk.Offset + (long)chunk.Length > length)
                    {
                        problems.Add($"snapshot {id}: a chunk of {file.Name} points outside its pack.");
                        break;
                    }
                }
                if (size != file.Size)
                {
                    problems.Add($"snapshot {id}: the chunks of {file.Name} add up to {size:N0} bytes, not {file.Size:N0}.");
                }
            }
            if (problems.Count == before)
            {
                checkedSnapshot?.Invoke(id);
            }
        }
        return problems;
    }

    /// <summary>The pack's length when its content matches its name, else null (missing or altered).</summary>
    private static long? CheckPack(BackupTarget target, string hash)
    {
        var path = target.PackPath(hash);
        if (!File.Exists(path))
        {
            return null;
        }
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream)) == hash ? stream.Length : null;
    }

    /// <summary>
    /// Restores a snapshot into a new data folder: opens its sealed keys with the recovery key, writes the node's keys and
    /// configuration, rebuilds the database from its chunks (each pack checked against its hash, each chunk authenticated
    /// by AES-GCM and its id), checks the restored audit log against the manifest's checkpoint, then destroys again the
    /// data key of every patient erased since (the target's erasure records and the snapshot's ledger).
    /// All of it happens in a sibling folder (<c>.NAME.restoring</c>), renamed to the data folder at the very end, after
    /// <paramref name="finish"/> (the caller's audit of the restore): a restore that fails, for a wrong key, a damaged pack
    /// or an interruption, leaves nothing in the data folder, and the same command can simply run again.
    /// </summary>
    public static async Task<RestoreResult> RestoreAsync(BackupTarget target, string snapshot, string dataDir, byte[] recoveryKey, string? pinnedNodeKey,
        TimeProvider clock, IProgress<(long Done, long Total)>? progress, CancellationToken ct, Func<RestoreResult, Task>? finish = null)
    {
        var root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dataDir));
        if (File.Exists(root))
        {
            throw new NodeException($"'{root}' is a file: restore into a new folder.");
        }
        if (Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any())
        {
            throw new NodeException($"'{root}' is not empty: restore into a new folder.");
        }
        var staging = Path.Combine(Path.GetDirectoryName(root) ?? root, "." + Path.GetFileName(root) + ".restoring");
        if (Directory.Exists(staging))
        {
            // Left by a restore that was killed before it could clean up.
            Directory.Delete(staging, recursive: true);
        }
        try
        {
            var result = await RestoreIntoAsync(target, snapshot, staging, recoveryKey, pinnedNodeKey, clock, progress, ct);
            if (finish is not null)
            {
                await finish(result);
            }
            if (Directory.Exists(root))
            {
                Directory.Delete(root);
            }
            Directory.Move(staging, root);
            return result with { Config = NodeConfig.Load(root) };
        }
        catch
        {
            if (Directory.Exists(staging))
            {
                Directory.Delete(staging, recursive: true);
            }
            throw;
        }
    }

    private static async Task<RestoreResult> RestoreIntoAsync(BackupTarget target, string snapshot, string root, byte[] recoveryKey, string? pinnedNodeKey,
        TimeProvider clock, IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        var verifier = target.Verifier(pinnedNodeKey);
        var (manifest, _) = target.ReadManifest(snapshot, verifier);
        var sealedPath = target.KeysPath(snapshot);
        if (!File.Exists(sealedPath))
        {
            throw new BackupDamageException($"snapshot {snapshot}: its sealed keys ({target.Relative(sealedPath)}) are missing; restore another snapshot.");
        }
        var sealedKeys = File.ReadAllBytes(sealedPath);
        if (BackupTarget.Sha256(sealedKeys) != manifest.KeysSha256)
        {
            throw new BackupDamageException($"snapshot {snapshot}: its sealed keys ({target.Relative(sealedPath)}) were altered; restore another snapshot.");
        }
        var bundle = RecoveryKey.Open(recoveryKey, sealedKeys, $"snapshot {snapshot}'s keys");
        Directory.CreateDirectory(root);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        var config = KeyBundle.Extract(bundle, root);
        var nodeKey = config.Resolve(NodeKey.VerifierFile);
        if (!File.Exists(nodeKey) || File.ReadAllText(nodeKey).Trim() != verifier.VKey)
        {
            throw new BackupDamageException($"snapshot {snapshot}: the node key sealed in it is not the key that signed the target's manifests.");
        }
        var keys = BackupKeys.Read(config.Resolve(BackupKeys.KeyFile));
        // The database first, then the blob files of large versions beside it (ADR 0014), each by its fixed name.
        var file = manifest.Files[0];
        if (config.DatabasePath != Path.Combine(root, file.Name))
        {
            config.Database = file.Name;
            config.Save();
        }
        await Task.Run(() => RebuildFile(target, manifest, file, keys, config.DatabasePath, progress, ct), ct);
        foreach (var blob in manifest.Files.Skip(1))
        {
            if (!BlobFiles.IsName(blob.Name))
            {
                throw new BackupDamageException($"snapshot {snapshot}: the manifest names a file ({blob.Name}) that is neither the database nor a blob file.");
            }
            BlobFiles.CreateFolder(Path.Combine(root, BlobFiles.FolderName));
            await Task.Run(() => RebuildFile(target, manifest, blob, keys, Path.Combine(root, blob.Name), progress, ct), ct);
        }

        var warnings = new List<string>();
        var erased = new List<string>();
        using (var store = RecordStore.Open(config))
        {
            var latest = store.Read(s => s.AuditLatestCheckpoint()?.Note);
            if (latest != manifest.Checkpoint)
            {
                throw new BackupDamageException($"snapshot {snapshot}: the restored audit log does not end at the checkpoint the manifest signed.");
            }
            // The restored node's high-water mark: what it had signed as of the snapshot.
            AuditHighWater.Of(config).Write(manifest.Checkpoint);
            var ledger = KeyAdmin.ErasureLedgerPath(store.Keys);
            var tags = target.Erasures(verifier, warnings).ToHashSet(StringComparer.Ordinal);
            tags.UnionWith(File.Exists(ledger) ? KeyBundle.ErasureTags(File.ReadAllLines(ledger)).Select(t => t.Tag) : []);
            foreach (var owner in store.Read(s => s.LivePatientKeyOwners()))
            {
                var tag = keys.ErasureTag(owner);
                if (tags.Contains(tag))
                {
                    await KeyAdmin.EraseAsync(store, owner, $"erased before the restore of snapshot {snapshot} (erasure {tag})", clock, ct, tag);
                    erased.Add(owner);
                }
            }
        }
        return new RestoreResult(manifest, config, manifest.Files.Sum(f => f.Size), erased, warnings);
    }

    private static void RebuildFile(BackupTarget target, Manifest manifest, ManifestFile file, BackupKeys keys, string path,
        IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        // Where each chunk goes in the file, grouped by pack so that each pack is read and checked once.
        var byPack = new Dictionary<int, List<(ChunkEntry Chunk, long At)>>();
        var at = 0L;
        foreach (var chunk in file.Entries())
        {
            if (chunk.Pack < 0 || chunk.Pack >= manifest.Packs.Count)
            {
                throw new BackupDamageException($"snapshot {manifest.Snapshot}: a chunk of {file.Name} names no pack of the manifest.");
            }
            (byPack.TryGetValue(chunk.Pack, out var list) ? list : byPack[chunk.Pack] = []).Add((chunk, at));
            at += chunk.PlainLength;
        }
        if (at != file.Size)
        {
            throw new BackupDamageException($"snapshot {manifest.Snapshot}: the chunks of {file.Name} add up to {at:N0} bytes, not {file.Size:N0}.");
        }
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, PreallocationSize = file.Size };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        using (var output = new FileStream(path, options))
        {
            output.SetLength(file.Size);
            var handle = output.SafeFileHandle;
            long done = 0;
            try
            {
                Parallel.ForEach(byPack, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount },
                    () => new ChunkSeal(keys.ChunkKey),
                    (pack, _, seal) =>
                    {
                        WritePack(target, manifest, pack.Key, pack.Value, keys, seal, handle);
                        var total = Interlocked.Add(ref done, pack.Value.Sum(c => (long)c.Chunk.PlainLength));
                        progress?.Report((total, file.Size));
                        return seal;
                    },
                    seal => seal.Dispose());
            }
            catch (AggregateException e) when (e.InnerExceptions.FirstOrDefault(i => i is BackupDamageException) is { } damage)
            {
                // The first damaged pack is what the operator reads, not the parallel loop's wrapper.
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(damage);
            }
            output.Flush(flushToDisk: true);
        }
    }

    private static void WritePack(BackupTarget target, Manifest manifest, int index, List<(ChunkEntry Chunk, long At)> chunks, BackupKeys keys, ChunkSeal seal, SafeFileHandle output)
    {
        var hash = manifest.Packs[index];
        var path = target.PackPath(hash);
        if (!File.Exists(path))
        {
            throw new BackupDamageException($"snapshot {manifest.Snapshot}: pack {target.Relative(path)} is missing.");
        }
        var pack = File.ReadAllBytes(path);
        if (BackupTarget.Sha256(pack) != hash)
        {
            throw new BackupDamageException($"snapshot {manifest.Snapshot}: pack {target.Relative(path)} is corrupt (its content does not match its hash).");
        }
        var plain = new byte[Chunker.MaxSize];
        foreach (var (chunk, at) in chunks)
        {
            if (chunk.Offset < 0 || chunk.Length < ChunkEntry.Overhead || chunk.Offset + (long)chunk.Length > pack.Length || chunk.PlainLength is <= 0 or > Chunker.MaxSize)
            {
                throw new BackupDamageException($"snapshot {manifest.Snapshot}: a chunk points outside pack {target.Relative(path)}.");
            }
            var text = plain.AsSpan(0, chunk.PlainLength);
            if (!seal.TryOpen(pack.AsSpan(chunk.Offset, chunk.Length), chunk.Id, text))
            {
                throw new BackupDamageException($"snapshot {manifest.Snapshot}: a chunk in pack {target.Relative(path)} does not decrypt under the node's backup key.");
            }
            if (keys.ChunkId(text) != chunk.Id)
            {
                throw new BackupDamageException($"snapshot {manifest.Snapshot}: a chunk in pack {target.Relative(path)} is not the content its id names.");
            }
            RandomAccess.Write(output, text, at);
        }
    }

    /// <summary>The deep check: a full restore into a scratch folder, then the checks of <c>ward verify</c> on it; the folder is removed after.</summary>
    public static async Task<VerificationReport> DeepVerifyAsync(BackupTarget target, string snapshot, byte[] recoveryKey, string? pinnedNodeKey, CancellationToken ct)
    {
        var scratch = Path.Combine(Path.GetTempPath(), "ward-verify-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)));
        try
        {
            var restored = await RestoreAsync(target, snapshot, scratch, recoveryKey, pinnedNodeKey, TimeProvider.System, null, ct);
            using var store = RecordStore.Open(restored.Config);
            var report = new VerificationReport();
            Verification.Verify(store, target.Verifier(pinnedNodeKey), report, records: true, indexes: true);
            return report;
        }
        finally
        {
            if (Directory.Exists(scratch))
            {
                Directory.Delete(scratch, recursive: true);
            }
        }
    }
}
