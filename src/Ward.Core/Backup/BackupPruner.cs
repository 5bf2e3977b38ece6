namespace Ward.Core.Backup;

internal sealed record PruneResult(int Snapshots, int Packs, long Bytes, int Kept);

/// <summary>
/// <c>ward backup prune</c>: the only code that deletes from a target. It runs with the recovery key (proved by opening
/// the latest snapshot's sealed keys), keeps the latest snapshots, and deletes the others and the packs that no kept
/// snapshot references. Packs newer than the latest manifest may belong to a backup in progress and are left alone.
/// Erasure records are never deleted.
/// </summary>
internal static class BackupPruner
{
    public static PruneResult Prune(BackupTarget target, int keep, byte[] recoveryKey, string? pinnedNodeKey)
    {
        var verifier = target.Verifier(pinnedNodeKey);
        var snapshots = target.Snapshots();
        if (snapshots.Count == 0)
        {
            return new PruneResult(0, 0, 0, 0);
        }
        var latest = snapshots[^1];
        RecoveryKey.Open(recoveryKey, File.ReadAllBytes(target.KeysPath(latest)), $"snapshot {latest}'s keys");
        var kept = snapshots.TakeLast(keep).ToList();
        var referenced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var id in kept)
        {
            referenced.UnionWith(target.ReadManifest(id, verifier).Manifest.Packs);
        }
        var cutoff = File.GetLastWriteTimeUtc(target.ManifestPath(latest));
        var deleted = 0;
        long bytes = 0;
        foreach (var id in snapshots.SkipLast(keep))
        {
            foreach (var path in new[] { target.ManifestPath(id), target.KeysPath(id) }.Where(File.Exists))
            {
                bytes += new FileInfo(path).Length;
                File.Delete(path);
            }
            deleted++;
        }
        var packs = 0;
        var folder = Path.Combine(target.Root, "packs");
        foreach (var pack in Directory.Exists(folder) ? Directory.EnumerateFiles(folder, "*.pack", SearchOption.AllDirectories).ToList() : [])
        {
            var info = new FileInfo(pack);
            if (!referenced.Contains(Path.GetFileNameWithoutExtension(pack)) && info.LastWriteTimeUtc <= cutoff)
            {
                bytes += info.Length;
                info.Delete();
                packs++;
            }
        }
        return new PruneResult(deleted, packs, bytes, kept.Count);
    }
}
