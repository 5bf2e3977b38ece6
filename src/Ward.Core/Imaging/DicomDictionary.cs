using System.Collections.Frozen;
using System.Globalization;

namespace Ward.Core.Imaging;

/// <summary>
/// The standard data dictionary (PS3.6, from DCMTK's, see make-dictionary.sh): the VR to read implicit VR data with,
/// and keywords for reports. Private tags are not in it: their VR is UN unless they are private creators (LO).
/// </summary>
internal static class DicomDictionary
{
    /// <summary>A dictionary entry; SignFollowsPixels marks "US or SS" attributes, SS when Pixel Representation is 1.</summary>
    internal readonly record struct Entry(DicomVR VR, string Keyword, bool SignFollowsPixels = false);

    private static readonly FrozenDictionary<uint, Entry> Exact;
    private static readonly (uint Mask, uint Value, Entry Entry)[] Repeating;
    private static readonly FrozenDictionary<string, uint> ByKeyword;

    static DicomDictionary()
    {
        var exact = new Dictionary<uint, Entry>();
        var repeating = new List<(uint, uint, Entry)>();
        using var stream = typeof(DicomDictionary).Assembly.GetManifestResourceStream("dicom-dictionary.tsv")
            ?? throw new InvalidOperationException("The DICOM dictionary resource is missing from the build.");
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var parts = line.Split('\t');
            var entry = parts[1] == "xs"
                ? new Entry(DicomVR.US, parts[2], SignFollowsPixels: true)
                : new Entry((DicomVR)((parts[1][0] << 8) | parts[1][1]), parts[2]);
            var tag = parts[0];
            if (tag.Contains('X', StringComparison.Ordinal))
            {
                uint mask = 0, value = 0;
                for (var i = 0; i < 8; i++)
                {
                    mask <<= 4; value <<= 4;
                    if (tag[i] == 'X') continue;
                    mask |= 0xF;
                    value |= (uint)int.Parse(tag.AsSpan(i, 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                }
                repeating.Add((mask, value, entry));
            }
            else exact[uint.Parse(tag, NumberStyles.HexNumber, CultureInfo.InvariantCulture)] = entry;
        }
        Exact = exact.ToFrozenDictionary();
        Repeating = [.. repeating];
        ByKeyword = exact.GroupBy(p => p.Value.Keyword, StringComparer.Ordinal)
            .ToFrozenDictionary(g => g.Key, g => g.Min(p => p.Key), StringComparer.Ordinal);
    }

    public static Entry? Find(DicomTag tag)
    {
        if (Exact.TryGetValue(tag.Value, out var entry)) return entry;
        if (tag.IsPrivate) return null;
        foreach (var (mask, value, repeated) in Repeating)
        {
            // Repeating groups (50xx, 60xx) take even groups only.
            if ((tag.Value & mask) == value && (tag.Group & 1) == 0) return repeated;
        }
        return null;
    }

    /// <summary>The VR implicit VR data is read with: the dictionary's, UL for group lengths, LO for private creators, else UN.</summary>
    public static DicomVR ImplicitVR(DicomTag tag)
    {
        if (tag.IsGroupLength) return DicomVR.UL;
        if (tag.IsPrivateCreator) return DicomVR.LO;
        return Find(tag)?.VR ?? DicomVR.UN;
    }

    public static string Keyword(DicomTag tag) => Find(tag)?.Keyword ?? (tag.IsPrivateCreator ? "PrivateCreator" : tag.IsPrivate ? "Private" : "Unknown");

    public static bool TryTagOf(string keyword, out DicomTag tag)
    {
        var found = ByKeyword.TryGetValue(keyword, out var value);
        tag = new DicomTag(value);
        return found;
    }
}
