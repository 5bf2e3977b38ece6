using System.Numerics;
using System.Security.Cryptography;

namespace Ward.Core.Audit;

/// <summary>
/// The Merkle tree of RFC 9162 section 2.1 (SHA-256; leaf = H(0x00 || entry), node = H(0x01 || left || right), empty
/// tree = H("")), computed from stored hashes of complete, aligned subtrees: <c>subtree(level, index)</c> is the hash of
/// leaves <c>[index·2^level, (index+1)·2^level)</c>. A root, an inclusion proof or a consistency proof then costs
/// O(log n) stored hashes, and appending a leaf stores at most log n new ones (<see cref="Completed"/>).
/// </summary>
internal static class Merkle
{
    public const int HashSize = 32;

    /// <summary>Reads the hash of a complete subtree that the log has stored.</summary>
    public delegate byte[] Subtree(int level, long index);

    public static byte[] EmptyRoot() => SHA256.HashData([]);

    public static byte[] LeafHash(ReadOnlySpan<byte> entry)
    {
        Span<byte> buffer = entry.Length < 1024 ? stackalloc byte[entry.Length + 1] : new byte[entry.Length + 1];
        buffer[0] = 0;
        entry.CopyTo(buffer[1..]);
        return SHA256.HashData(buffer);
    }

    public static byte[] NodeHash(ReadOnlySpan<byte> left, ReadOnlySpan<byte> right)
    {
        Span<byte> buffer = stackalloc byte[1 + 2 * HashSize];
        buffer[0] = 1;
        left.CopyTo(buffer[1..]);
        right.CopyTo(buffer[(1 + HashSize)..]);
        return SHA256.HashData(buffer);
    }

    /// <summary>The largest power of two strictly smaller than <paramref name="n"/> (n ≥ 2), RFC 9162's k.</summary>
    private static long Split(long n) => 1L << (63 - BitOperations.LeadingZeroCount((ulong)(n - 1)));

    /// <summary>MTH(D[start:end]) for 0 ≤ start &lt; end.</summary>
    public static byte[] Hash(long start, long end, Subtree subtree)
    {
        var n = end - start;
        if ((n & (n - 1)) == 0 && start % n == 0)
        {
            return subtree(BitOperations.TrailingZeroCount(n), start / n);
        }
        var k = Split(n);
        return NodeHash(Hash(start, start + k, subtree), Hash(start + k, end, subtree));
    }

    public static byte[] Root(long size, Subtree subtree) => size == 0 ? EmptyRoot() : Hash(0, size, subtree);

    /// <summary>The complete subtrees that leaf <paramref name="index"/> closes, bottom-up, its own leaf hash first.</summary>
    public static IEnumerable<(int Level, long Index, byte[] Hash)> Completed(long index, byte[] leafHash, Subtree subtree)
    {
        var hash = leafHash;
        yield return (0, index, hash);
        for (var level = 1; ((index + 1) & ((1L << level) - 1)) == 0; level++)
        {
            var at = index >> level;
            hash = NodeHash(subtree(level - 1, 2 * at), hash);
            yield return (level, at, hash);
        }
    }

    /// <summary>PATH(m, D[0:n]) of RFC 9162 section 2.1.3.1, for 0 ≤ m &lt; n.</summary>
    public static List<byte[]> InclusionProof(long m, long n, Subtree subtree)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(m, n);
        var proof = new List<byte[]>();
        Path(m, 0, n, subtree, proof);
        return proof;
    }

    private static void Path(long m, long start, long end, Subtree subtree, List<byte[]> proof)
    {
        if (end - start == 1)
        {
            return;
        }
        var k = Split(end - start);
        if (m < k)
        {
            Path(m, start, start + k, subtree, proof);
            proof.Add(Hash(start + k, end, subtree));
        }
        else
        {
            Path(m - k, start + k, end, subtree, proof);
            proof.Add(Hash(start, start + k, subtree));
        }
    }

    /// <summary>PROOF(m, D[0:n]) of RFC 9162 section 2.1.4.1, for 0 &lt; m ≤ n.</summary>
    public static List<byte[]> ConsistencyProof(long m, long n, Subtree subtree)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(m, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(m, n);
        var proof = new List<byte[]>();
        SubProof(m, 0, n, true, subtree, proof);
        return proof;
    }

    private static void SubProof(long m, long start, long end, bool complete, Subtree subtree, List<byte[]> proof)
    {
        var n = end - start;
        if (m == n)
        {
            if (!complete)
            {
                proof.Add(Hash(start, end, subtree));
            }
            return;
        }
        var k = Split(n);
        if (m <= k)
        {
            SubProof(m, start, start + k, complete, subtree, proof);
            proof.Add(Hash(start + k, end, subtree));
        }
        else
        {
            SubProof(m - k, start + k, end, false, subtree, proof);
            proof.Add(Hash(start, start + k, subtree));
        }
    }

    /// <summary>RFC 9162 section 2.1.3.2: whether <paramref name="proof"/> proves leaf <paramref name="index"/> in the tree of that root.</summary>
    public static bool VerifyInclusion(long index, long size, ReadOnlySpan<byte> leafHash, IReadOnlyList<byte[]> proof, ReadOnlySpan<byte> root)
    {
        if (index < 0 || index >= size || leafHash.Length != HashSize || root.Length != HashSize || proof.Any(p => p.Length != HashSize))
        {
            return false;
        }
        var fn = index;
        var sn = size - 1;
        var r = leafHash.ToArray();
        foreach (var p in proof)
        {
            if (sn == 0)
            {
                return false;
            }
            if ((fn & 1) == 1 || fn == sn)
            {
                r = NodeHash(p, r);
                ClimbRightEdge(ref fn, ref sn);
            }
            else
            {
                r = NodeHash(r, p);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    /// <summary>Both verifications: on the right edge of a subtree, right-shift until LSB(fn) is set or fn is 0.</summary>
    private static void ClimbRightEdge(ref long fn, ref long sn)
    {
        while ((fn & 1) == 0 && fn != 0)
        {
            fn >>= 1;
            sn >>= 1;
        }
    }

    /// <summary>RFC 9162 section 2.1.4.2: whether <paramref name="proof"/> shows the tree of root2 extends the tree of root1.</summary>
    public static bool VerifyConsistency(long size1, long size2, ReadOnlySpan<byte> root1, ReadOnlySpan<byte> root2, IReadOnlyList<byte[]> proof)
    {
        if (size1 < 1 || size2 < size1)
        {
            return false;
        }
        if (size1 == size2)
        {
            return proof.Count == 0 && root1.SequenceEqual(root2);
        }
        if (root1.Length != HashSize || root2.Length != HashSize || proof.Count == 0 || proof.Any(p => p.Length != HashSize))
        {
            return false;
        }
        var path = (size1 & (size1 - 1)) == 0 ? [root1.ToArray(), .. proof] : proof.ToList();
        var fn = size1 - 1;
        var sn = size2 - 1;
        while ((fn & 1) == 1)
        {
            fn >>= 1;
            sn >>= 1;
        }
        var fr = path[0];
        var sr = path[0];
        foreach (var c in path.Skip(1))
        {
            if (sn == 0)
            {
                return false;
            }
            if ((fn & 1) == 1 || fn == sn)
            {
                fr = NodeHash(c, fr);
                sr = NodeHash(c, sr);
                ClimbRightEdge(ref fn, ref sn);
            }
            else
            {
                sr = NodeHash(sr, c);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && fr.AsSpan().SequenceEqual(root1) && sr.AsSpan().SequenceEqual(root2);
    }
}
