using System.Text.Json;
using Ward.Core.Audit;

namespace Ward.Tests;

/// <summary>
/// The RFC 9162 Merkle tree against the published vectors (transparency-dev/merkle: reference roots and proofs, and
/// its 500+ valid and corrupted proof files), computed from stored complete subtrees as the audit log stores them.
/// </summary>
public class MerkleTests
{
    private static readonly string Dir = Path.Combine(TestData.Root, "merkle");

    /// <summary>An in-memory log: leaves appended through <see cref="Merkle.Completed"/>, as the store does.</summary>
    private sealed class Log
    {
        private readonly Dictionary<(int, long), byte[]> _subtrees = [];

        public long Size { get; private set; }

        public byte[] Get(int level, long index) => _subtrees[(level, index)];

        public void Append(byte[] entry)
        {
            foreach (var (level, index, hash) in Merkle.Completed(Size, Merkle.LeafHash(entry), Get))
            {
                _subtrees[(level, index)] = hash;
            }
            Size++;
        }

        public int Stored => _subtrees.Count;
    }

    private static JsonElement Json(string file) => JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, file))).RootElement;

    private static byte[][] Hex(JsonElement array) => array.EnumerateArray().Select(e => Convert.FromHexString(e.GetString()!)).ToArray();

    private static Log Reference()
    {
        var log = new Log();
        foreach (var leaf in Json("rfc6962_reference_vectors.json").GetProperty("leafInputs").EnumerateArray())
        {
            log.Append(Convert.FromHexString(leaf.GetString()!));
        }
        return log;
    }

    [Fact]
    public void Hasher_vectors_and_the_roots_of_every_size_match_the_reference()
    {
        var reference = Json("rfc6962_reference_vectors.json");
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Convert.ToHexStringLower(Merkle.EmptyRoot()));
        Assert.Equal(Hex(reference.GetProperty("leafHashes")), reference.GetProperty("leafInputs").EnumerateArray()
            .Select(l => Merkle.LeafHash(Convert.FromHexString(l.GetString()!))).ToArray());
        var log = new Log();
        var leaves = Hex(reference.GetProperty("leafInputs"));
        foreach (var expected in reference.GetProperty("rootHashesBySize").EnumerateArray())
        {
            var size = expected.GetProperty("treeSize").GetInt64();
            while (log.Size < size)
            {
                log.Append(leaves[log.Size]);
            }
            Assert.Equal(expected.GetProperty("root").GetString(), Convert.ToHexStringLower(Merkle.Root(size, log.Get)));
        }
        // One stored hash per complete subtree: 8 leaves, 4 pairs, 2 quads, 1 octet.
        Assert.Equal(15, log.Stored);
    }

    [Fact]
    public void Every_inclusion_and_consistency_proof_up_to_eight_leaves_is_the_reference_and_verifies()
    {
        var log = Reference();
        var all = Json("rfc6962_derived_all_proofs_size1to8.json");
        var roots = all.GetProperty("rootHashesBySize").EnumerateArray().ToDictionary(r => r.GetProperty("treeSize").GetInt64(), r => Convert.FromHexString(r.GetProperty("root").GetString()!));
        var leaves = Hex(all.GetProperty("leafInputs"));
        var count = 0;
        foreach (var p in all.GetProperty("inclusionProofs").EnumerateArray())
        {
            var (index, size) = (p.GetProperty("leafIndex").GetInt64(), p.GetProperty("treeSize").GetInt64());
            var proof = Merkle.InclusionProof(index, size, log.Get);
            Assert.Equal(Hex(p.GetProperty("proof")), proof);
            Assert.True(Merkle.VerifyInclusion(index, size, Merkle.LeafHash(leaves[index]), proof, roots[size]));
            count++;
        }
        foreach (var p in all.GetProperty("consistencyProofs").EnumerateArray())
        {
            var (m, n) = (p.GetProperty("size1").GetInt64(), p.GetProperty("size2").GetInt64());
            var proof = Merkle.ConsistencyProof(m, n, log.Get);
            Assert.Equal(Hex(p.GetProperty("proof")), proof);
            Assert.True(Merkle.VerifyConsistency(m, n, roots[m], roots[n], proof));
            count++;
        }
        Assert.Equal(72, count);
    }

    public static TheoryData<string> VectorFiles()
    {
        var data = new TheoryData<string>();
        foreach (var kind in new[] { "inclusion", "consistency" })
        {
            foreach (var file in Directory.EnumerateFiles(Path.Combine(Dir, "transparency-dev-merkle", "testdata", kind), "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                data.Add(Path.GetRelativePath(Dir, file));
            }
        }
        return data;
    }

    private static byte[][] Base64(JsonElement proof) =>
        proof.ValueKind == JsonValueKind.Null ? [] : proof.EnumerateArray().Select(e => Convert.FromBase64String(e.GetString()!)).ToArray();

    /// <summary>Vectors use unsigned 64-bit sizes; beyond a log's range is an invalid (negative) size.</summary>
    private static long Size(JsonElement value) => value.TryGetInt64(out var n) ? n : -1;

    [Theory]
    [MemberData(nameof(VectorFiles))]
    public void Transparency_dev_proof_vectors_verify_exactly_when_they_should(string file)
    {
        var v = Json(file);
        var valid = file.Contains("inclusion", StringComparison.Ordinal)
            ? Merkle.VerifyInclusion(Size(v.GetProperty("leafIdx")), Size(v.GetProperty("treeSize")),
                Convert.FromBase64String(v.GetProperty("leafHash").GetString()!), Base64(v.GetProperty("proof")), Convert.FromBase64String(v.GetProperty("root").GetString()!))
            : Merkle.VerifyConsistency(Size(v.GetProperty("size1")), Size(v.GetProperty("size2")),
                Convert.FromBase64String(v.GetProperty("root1").GetString()!), Convert.FromBase64String(v.GetProperty("root2").GetString()!), Base64(v.GetProperty("proof")));
        Assert.Equal(!v.GetProperty("wantErr").GetBoolean(), valid);
    }

    [Fact]
    public void Proofs_of_a_large_log_verify_and_any_flipped_bit_is_caught()
    {
        var log = new Log();
        var random = new Random(9162);
        var roots = new List<byte[]> { Merkle.EmptyRoot() };
        for (var i = 0; i < 1000; i++)
        {
            log.Append(BitConverter.GetBytes(random.NextInt64()));
            roots.Add(Merkle.Root(log.Size, log.Get));
        }
        Assert.True(log.Stored < 2 * log.Size);
        for (var trial = 0; trial < 300; trial++)
        {
            var size = random.NextInt64(1, log.Size + 1);
            var index = random.NextInt64(0, size);
            var leaf = log.Get(0, index);
            var proof = Merkle.InclusionProof(index, size, log.Get);
            Assert.True(proof.Count <= 64 - long.LeadingZeroCount(size));
            Assert.True(Merkle.VerifyInclusion(index, size, leaf, proof, roots[(int)size]));
            var older = random.NextInt64(1, size + 1);
            var consistency = Merkle.ConsistencyProof(older, size, log.Get);
            Assert.True(Merkle.VerifyConsistency(older, size, roots[(int)older], roots[(int)size], consistency));
            if (proof.Count > 0)
            {
                var tampered = proof.Select(p => (byte[])p.Clone()).ToList();
                tampered[random.Next(tampered.Count)][random.Next(32)] ^= (byte)(1 << random.Next(8));
                Assert.False(Merkle.VerifyInclusion(index, size, leaf, tampered, roots[(int)size]));
            }
            if (older < size)
            {
                // The same proof against another (earlier) second root must fail.
                Assert.False(Merkle.VerifyConsistency(older, size, roots[(int)older], roots[(int)size - 1], consistency));
            }
        }
    }
}
