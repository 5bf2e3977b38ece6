using System.Globalization;
using System.Text.Json;
using Ward.Core.Storage;

namespace Ward.Core.Audit;

/// <summary>The outcome of a verification: what was checked, and every problem found (empty: intact).</summary>
internal sealed class VerificationReport
{
    public List<string> Problems { get; } = [];
    public List<string> Checked { get; } = [];

    /// <summary>What could not be checked and is no problem in itself (an old node without a high-water mark yet).</summary>
    public List<string> Notices { get; } = [];

    public bool Intact => Problems.Count == 0;
}

/// <summary>
/// Offline verification of a node's data folder, reading the database directly (no server, no trust in its code paths):
/// the Merkle tree is recomputed from the stored entries and checked against the stored subtree hashes, every
/// checkpoint's signature, root and the consistency between consecutive checkpoints; with <c>records</c>, every stored
/// version is also checked against the digest its audit entry committed, and with <c>indexes</c> every index row and row
/// summary against the current version it was derived from. The entries are read once for all.
/// </summary>
internal static class Verification
{
    private const int Chunk = 10_000;

    /// <param name="indexes">With <paramref name="records"/>: also derive every index row and row summary again from the
    /// sealed current versions and compare (<see cref="IndexVerification"/>).</param>
    /// <param name="highWater">The node's high-water mark, which the log must extend (a copy restored for checking has none to compare with).</param>
    public static void Verify(RecordStore store, SignedNote.Verifier verifier, VerificationReport report, bool records, bool indexes = false,
        AuditHighWater? highWater = null) => store.Read(s =>
    {
        // What the log says was written: the digest of each version, and the entry that committed it.
        var logged = records ? new Dictionary<string, (string Digest, long Entry)>(StringComparer.Ordinal) : null;
        VerifyLog(s, verifier, report, logged);
        if (highWater?.Check(s, verifier) is { } mark)
        {
            (mark.Ok switch { true => report.Checked, false => report.Problems, null => report.Notices }).Add(mark.Text);
        }
        if (logged is not null)
        {
            VerifyRecords(s, store.Blobs, logged, report);
            if (indexes)
            {
                IndexVerification.Verify(s, store.Keys, report);
            }
        }
        return 0;
    });

    /// <summary>Every row of a paged audit table, in index order.</summary>
    private static IEnumerable<(long Index, T Value)> All<T>(Func<long, int, IEnumerable<(long Index, T Value)>> page)
    {
        for (long from = 0; ;)
        {
            var chunk = page(from, Chunk).ToList();
            foreach (var row in chunk)
            {
                yield return row;
            }
            if (chunk.Count < Chunk)
            {
                yield break;
            }
            from = chunk[^1].Index + 1;
        }
    }

    /// <summary>Recomputes the log from its entries and checks it against the stored subtree hashes and every checkpoint.</summary>
    private static void VerifyLog(StoreSession s, SignedNote.Verifier verifier, VerificationReport report, Dictionary<string, (string Digest, long Entry)>? logged)
    {
        var size = s.AuditSize();
        var leaves = new List<byte[]>((int)Math.Min(size, int.MaxValue));
        var missing = new HashSet<long>();
        long expected = 0;
        foreach (var (index, data) in All(s.AuditEntries))
        {
            if (index < expected)
            {
                continue;
            }
            for (; expected < index; expected++)
            {
                missing.Add(expected);
                report.Problems.Add($"audit entry {expected} is missing (deleted from the log).");
                leaves.Add(new byte[Merkle.HashSize]);
            }
            expected = index + 1;
            if (data is null)
            {
                // Sealed entries are bound to their index: altered or moved ciphertext does not open. The stored leaf stands in
                // for it so that the damage is reported here, once, and the tree above is still checked.
                report.Problems.Add($"audit entry {index} does not open under the node's audit key: its sealed bytes were altered or moved from another index.");
                leaves.Add(s.AuditHash(0, index) ?? new byte[Merkle.HashSize]);
                continue;
            }
            leaves.Add(Merkle.LeafHash(data));
            if (logged is not null)
            {
                foreach (var (reference, digest) in WrittenVersions(data))
                {
                    logged[reference] = (digest, index);
                }
            }
        }
        if (leaves.Count != size)
        {
            report.Problems.Add(leaves.Count < size
                ? $"the log's head says {size} entries, but only {leaves.Count} are stored (the log was truncated)."
                : $"the log holds {leaves.Count} entries, more than the {size} its head records (entries were inserted).");
        }
        report.Checked.Add($"{leaves.Count:N0} audit entries hashed");

        // Every level, recomputed, against the stored complete-subtree hashes that proofs are served from.
        var levels = new List<List<byte[]>> { leaves };
        for (var level = 0; levels[level].Count > 1; level++)
        {
            var below = levels[level];
            var above = new List<byte[]>(below.Count / 2);
            for (var i = 0; i + 1 < below.Count; i += 2)
            {
                above.Add(Merkle.NodeHash(below[i], below[i + 1]));
            }
            levels.Add(above);
        }
        var stored = 0L;
        var beyond = 0L;
        // A damaged entry makes every subtree above it differ: report the lowest level only.
        var damaged = new HashSet<long>(missing);
        for (var level = 0; level < levels.Count; level++)
        {
            var computed = levels[level];
            var below = damaged;
            damaged = [];
            void Damaged(long index, string problem)
            {
                damaged.Add(index);
                if (level == 0 ? !missing.Contains(index) : !(below.Contains(2 * index) || below.Contains(2 * index + 1)))
                {
                    report.Problems.Add(problem);
                }
            }
            long next = 0;
            foreach (var (index, hash) in All((from, count) => s.AuditLevel(level, from, count)))
            {
                stored++;
                for (; next < index && next < computed.Count; next++)
                {
                    Damaged(next, $"the stored subtree hash at level {level}, index {next} is missing.");
                }
                next = index + 1;
                if (index >= computed.Count)
                {
                    beyond++;
                }
                else if (!hash.AsSpan().SequenceEqual(computed[(int)index]))
                {
                    Damaged(index, level == 0
                        ? $"audit entry {index} does not match its stored leaf hash: the entry was altered."
                        : $"the stored subtree hash at level {level}, index {index} (entries {index << level} to {((index + 1) << level) - 1}) was altered.");
                }
            }
            for (; next < computed.Count; next++)
            {
                Damaged(next, $"the stored subtree hash at level {level}, index {next} is missing.");
            }
        }
        if (beyond > 0)
        {
            report.Problems.Add($"{beyond:N0} stored subtree hashes cover entries beyond the {leaves.Count:N0} the log holds: entries were removed from its end.");
        }
        report.Checked.Add($"{stored:N0} stored subtree hashes compared");

        Merkle.Subtree subtree = (level, index) => levels[level][(int)index];
        var checkpoints = s.AuditCheckpoints();
        Checkpoint? previous = null;
        foreach (var (cpSize, _, note) in checkpoints)
        {
            if (!SignedNote.TryOpen(note, [verifier], out var text, out _, out var error) || !Checkpoint.TryParse(text, out var cp))
            {
                report.Problems.Add($"the checkpoint of size {cpSize} does not verify under the node key {verifier.Name}: {error ?? "not a checkpoint"}.");
                continue;
            }
            if (cp.Size != cpSize || cp.Origin != verifier.Name)
            {
                report.Problems.Add($"the checkpoint stored for size {cpSize} is a checkpoint of {cp.Origin} at size {cp.Size}.");
                continue;
            }
            if (cp.Size > leaves.Count)
            {
                report.Problems.Add($"the checkpoint of size {cp.Size} covers more entries than the log holds ({leaves.Count}): the log was truncated.");
                continue;
            }
            if (!Merkle.Root(cp.Size, subtree).AsSpan().SequenceEqual(cp.Root))
            {
                report.Problems.Add($"the signed root at size {cp.Size} does not match the stored entries: entries below {cp.Size} were altered, removed or reordered.");
                continue;
            }
            if (previous is not null && previous.Size > 0 && !Merkle.VerifyConsistency(previous.Size, cp.Size, previous.Root, cp.Root,
                    Merkle.ConsistencyProof(previous.Size, cp.Size, subtree)))
            {
                report.Problems.Add($"the checkpoints of sizes {previous.Size} and {cp.Size} are not consistent.");
            }
            previous = cp;
        }
        report.Checked.Add($"{checkpoints.Count:N0} signed checkpoints verified (signature, root, consistency with the one before)");
        if (previous is null || previous.Size < leaves.Count)
        {
            var unsigned = leaves.Count - (previous?.Size ?? 0);
            report.Checked.Add($"{unsigned:N0} entries newer than the latest checkpoint (signed within a second while the node runs)");
        }
    }

    /// <summary>Checks every stored version (current and historical) against the digest its audit entry committed.</summary>
    /// <param name="blobs">Where large versions are written once (their rows hold references, which the digests cover): each
    /// reference is checked against the bytes it names.</param>
    private static void VerifyRecords(StoreSession s, BlobFiles? blobs, Dictionary<string, (string Digest, long Entry)> logged, VerificationReport report)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var versions = 0L;
        var latest = new Dictionary<string, int>(StringComparer.Ordinal);
        var altered = new List<StoredRow>();
        using (var cmd = s.Command("SELECT r.type, r.id, v.version, v.last_updated, v.method, v.deleted, v.data FROM version v JOIN resource r ON r.rid = v.rid ORDER BY v.seq"))
        using (var reader = cmd.ExecuteReader())
        {
            while (reader.Read())
            {
                versions++;
                var row = new StoredRow(reader.GetString(0), reader.GetString(1), reader.GetInt32(2), reader.GetInt64(3), reader.GetString(4), reader.GetInt32(5) != 0,
                    reader.IsDBNull(6) ? null : StoreSession.Bytes(reader.GetValue(6)));
                seen.Add(row.Reference);
                var key = $"{row.Type}/{row.Id}";
                latest[key] = Math.Max(latest.GetValueOrDefault(key), row.Version);
                if (!logged.TryGetValue(row.Reference, out var expected))
                {
                    report.Problems.Add($"inserted: {row.Reference} is stored but no audit entry records writing it.");
                }
                else if (expected.Digest != row.Digest(row.Data))
                {
                    altered.Add(row);
                }
                else if (row.Data is { } data && BlobFiles.IsReference(data) && (blobs is null ? "no blob files are kept by this store" : blobs.Check(data)) is { } why)
                {
                    report.Problems.Add($"modified: {row.Reference} differs from what audit entry {expected.Entry} recorded for it: {why}.");
                }
            }
        }
        foreach (var row in altered)
        {
            // Swapped: this version's logged digest is met by another altered row's content.
            var partner = altered.FirstOrDefault(other => other != row && row.Digest(other.Data) == logged[row.Reference].Digest);
            report.Problems.Add(partner is not null
                ? $"swapped: {row.Reference} no longer holds its own content; {partner.Reference} holds what audit entry {logged[row.Reference].Entry} recorded for it."
                : $"modified: {row.Reference} differs from what audit entry {logged[row.Reference].Entry} recorded for it.");
        }
        foreach (var (reference, (_, entry)) in logged)
        {
            if (!seen.Contains(reference))
            {
                report.Problems.Add($"deleted: {reference}, written as audit entry {entry} records, is no longer stored.");
            }
        }
        using (var cmd = s.Command("SELECT type, id, version FROM resource ORDER BY rid"))
        using (var reader = cmd.ExecuteReader())
        {
            while (reader.Read())
            {
                var key = $"{reader.GetString(0)}/{reader.GetString(1)}";
                var current = reader.GetInt32(2);
                if (latest.TryGetValue(key, out var newest) && newest != current)
                {
                    report.Problems.Add($"modified: {key} points to version {current} as current, but its latest stored version is {newest}.");
                }
            }
        }
        report.Checked.Add($"{versions:N0} stored versions checked against {logged.Count:N0} logged digests");
    }

    private sealed record StoredRow(string Type, string Id, int Version, long Ticks, string Method, bool Deleted, byte[]? Data)
    {
        public string Reference => $"{Type}/{Id}/_history/{Version.ToString(CultureInfo.InvariantCulture)}";

        /// <summary>The digest of this version's identity and metadata with the given stored content.</summary>
        public string Digest(byte[]? content) => Convert.ToBase64String(VersionDigest.Of(Type, Id, Version, Ticks, Method, Deleted, content));
    }

    /// <summary>The versions an AuditEvent records as written: entity references with a sha256 detail.</summary>
    internal static IEnumerable<(string Reference, string Digest)> WrittenVersions(byte[] data)
    {
        var found = new List<(string, string)>();
        using var json = JsonDocument.Parse(data);
        if (!json.RootElement.TryGetProperty("entity", out var entities))
        {
            return found;
        }
        foreach (var entity in entities.EnumerateArray())
        {
            if (entity.TryGetProperty("detail", out var details) && entity.TryGetProperty("what", out var what))
            {
                foreach (var detail in details.EnumerateArray())
                {
                    if (detail.GetProperty("type").GetString() == AuditRecord.DigestDetail)
                    {
                        found.Add((what.GetProperty("reference").GetString()!, detail.GetProperty("valueBase64Binary").GetString()!));
                    }
                }
            }
        }
        return found;
    }
}
