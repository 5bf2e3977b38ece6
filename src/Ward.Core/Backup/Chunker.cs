using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Ward.Core.Backup;

/// <summary>
/// Content-defined chunking, FastCDC (Xia et al., USENIX ATC 2016) with normalised chunking: a gear rolling hash cuts
/// where its top bits are zero, with a stricter mask before the average size and a looser one after. Cuts depend only on
/// the 64 bytes before them, so a change moves the cuts near it and nowhere else; equal content yields equal chunks.
/// Sizes 4 KiB (min), 16 KiB (average), 64 KiB (max): small enough that a page changed here and there in a SQLite file
/// costs one small chunk each.
/// </summary>
internal static class Chunker
{
    public const int MinSize = 4 * 1024;
    public const int AverageSize = 16 * 1024;
    public const int MaxSize = 64 * 1024;

    // 16 bits before the average (harder to cut), 12 after (easier): sizes concentrate around the average.
    private const ulong MaskSmall = 0xFFFF_0000_0000_0000UL;
    private const ulong MaskLarge = 0xFFF0_0000_0000_0000UL;

    private static readonly ulong[] Gear = CreateGear();

    /// <summary>The length of the next chunk at the start of <paramref name="data"/>; the whole span when it is the end of the input and shorter than the maximum.</summary>
    public static int Cut(ReadOnlySpan<byte> data)
    {
        var n = Math.Min(data.Length, MaxSize);
        if (n <= MinSize)
        {
            return n;
        }
        var gear = Gear;
        ulong hash = 0;
        var normal = Math.Min(AverageSize, n);
        var i = MinSize;
        for (; i < normal; i++)
        {
            hash = (hash << 1) + gear[data[i]];
            if ((hash & MaskSmall) == 0)
            {
                return i + 1;
            }
        }
        for (; i < n; i++)
        {
            hash = (hash << 1) + gear[data[i]];
            if ((hash & MaskLarge) == 0)
            {
                return i + 1;
            }
        }
        return n;
    }

    /// <summary>A fixed gear table (SHA-256 of a label, so that every node and version cuts alike).</summary>
    private static ulong[] CreateGear()
    {
        var table = new ulong[256];
        Span<byte> digest = stackalloc byte[32];
        for (var i = 0; i < 256; i++)
        {
            SHA256.HashData([.. "ward/fastcdc/gear/"u8, (byte)i], digest);
            table[i] = BinaryPrimitives.ReadUInt64LittleEndian(digest);
        }
        return table;
    }
}
