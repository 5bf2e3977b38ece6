using System.Globalization;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Core.Crypto;

internal sealed record RotationResult(string OldKeyId, string NewKeyId, int DataKeys);

/// <summary>The key lifecycle operations behind <c>ward keys rotate-master</c> and <c>ward patient erase</c>; both are safe while the node serves.</summary>
internal static class KeyAdmin
{
    /// <summary>
    /// Replaces the master key. The new key is written beside the old one (<c>master.key.new</c>), every data key is
    /// re-wrapped in one transaction, and only then does the new file replace the old. Interrupted before the commit,
    /// the next start deletes the new file (rollback); after it, the next start completes the rename (resume).
    /// </summary>
    public static async Task<RotationResult> RotateMasterAsync(RecordStore store, CancellationToken ct)
    {
        var keys = store.Keys;
        string oldKid, newKid;
        int count;
        // The new key file is created under the database's write lock, which every process opening the node also takes
        // to resolve leftovers: none can mistake this rotation's new key for an interrupted one and delete it.
        using (var session = await store.BeginWriteAsync(ct))
        {
            session.LockNode(keys: true);
            keys.Reload();
            if (keys.PendingKeyId is not null)
            {
                throw new NodeException($"{keys.PendingKeyPath} exists: a rotation was interrupted; start the node once to resolve it, then rotate again.");
            }
            oldKid = keys.FileKeyId;
            MasterKeyFile.Create(keys.PendingKeyPath);
            keys.Reload();
            newKid = keys.PendingKeyId!;
            try
            {
                count = session.Rewrap(oldKid, newKid);
                session.Commit();
            }
            catch when (!Committed(store, newKid))
            {
                // The database did not switch (the transaction rolls back on dispose): the new key never held anything.
                File.Delete(keys.PendingKeyPath);
                keys.Reload();
                throw;
            }
        }
        // Another process opening the node may already have completed the rename.
        if (File.Exists(keys.PendingKeyPath))
        {
            File.Move(keys.PendingKeyPath, keys.MasterKeyPath, overwrite: true);
        }
        keys.Reload();
        keys.Retire(oldKid);
        return new RotationResult(oldKid, newKid, count);
    }

    private static bool Committed(RecordStore store, string newKid)
    {
        try
        {
            return store.MasterKeyId() == newKid;
        }
        catch (System.Data.Common.DbException)
        {
            return false;
        }
    }

    /// <summary>
    /// Crypto-shredding of one patient; the erased key id is also appended to the erasure ledger beside the master key,
    /// with the erasure's <paramref name="tag"/> (a keyed hash of the patient id, Backup.BackupKeys.ErasureTag) by which a
    /// restore from an older backup destroys the key again.
    /// </summary>
    public static async Task<ErasureResult> EraseAsync(RecordStore store, string patientId, string reason, TimeProvider clock, CancellationToken ct, string? tag = null)
    {
        if (string.IsNullOrWhiteSpace(reason))
        {
            throw new NodeException("An erasure needs a reason (for example the reference of the patient's request).");
        }
        var now = clock.GetUtcNow();
        var result = await store.WriteAsync(session => session.Erase(patientId, reason, now.UtcTicks), ct);
        store.PurgeErased();
        var ledger = ErasureLedgerPath(store.Keys);
        File.AppendAllText(ledger, string.Create(CultureInfo.InvariantCulture, $"{now:O} erased data key {result.Kid}{(tag is null ? "" : " tag " + tag)}\n"));
        return result;
    }

    /// <summary>The append-only list of erased key ids (no patient identifiers), kept with the keys, outside the database.</summary>
    public static string ErasureLedgerPath(KeyRing keys) => Path.Combine(Path.GetDirectoryName(keys.MasterKeyPath)!, "erasures.log");
}
