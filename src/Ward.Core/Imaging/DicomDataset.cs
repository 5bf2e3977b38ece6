using System.Buffers.Binary;
using System.Collections;
using System.Globalization;
using System.Text;

namespace Ward.Core.Imaging;

/// <summary>
/// One data element. Values are kept as little-endian bytes (big-endian input is swapped when read), sliced from the
/// buffer read where possible; a sequence has items instead, encapsulated pixel data its fragments (the first being the
/// basic offset table), kept exactly as received.
/// </summary>
internal sealed class DicomElement
{
    public DicomElement(DicomTag tag, DicomVR vr, ReadOnlyMemory<byte> value)
    {
        Tag = tag; VR = vr; Value = value;
    }

    public DicomElement(DicomTag tag, List<DicomDataset> items)
    {
        Tag = tag; VR = DicomVR.SQ; Items = items;
    }

    public DicomElement(DicomTag tag, DicomVR vr, List<ReadOnlyMemory<byte>> fragments)
    {
        Tag = tag; VR = vr; Fragments = fragments;
    }

    public DicomTag Tag { get; }
    public DicomVR VR { get; }
    public ReadOnlyMemory<byte> Value { get; }
    public List<DicomDataset>? Items { get; }
    public List<ReadOnlyMemory<byte>>? Fragments { get; }

    public bool IsEncapsulated => Fragments is not null;

    public override string ToString() => $"{Tag} {VR.Name()}";
}

/// <summary>A data set: elements in ascending tag order, with the character set its text is decoded with.</summary>
internal sealed class DicomDataset : IEnumerable<DicomElement>
{
    private readonly List<DicomElement> elements = [];

    /// <summary>The set in force: this data set's own Specific Character Set, else the enclosing one's.</summary>
    public DicomCharset Charset { get; set; } = DicomCharset.Default;

    public int Count => elements.Count;

    public DicomElement? this[DicomTag tag]
    {
        get
        {
            var i = IndexOf(tag);
            return i >= 0 ? elements[i] : null;
        }
    }

    public bool Contains(DicomTag tag) => IndexOf(tag) >= 0;

    /// <summary>Adds or replaces the element with the same tag, keeping the order.</summary>
    public void Set(DicomElement element)
    {
        if (elements.Count == 0 || elements[^1].Tag.Value < element.Tag.Value)
        {
            elements.Add(element);
            return;
        }
        var i = IndexOf(element.Tag);
        if (i >= 0) elements[i] = element;
        else elements.Insert(~i, element);
    }

    public bool Remove(DicomTag tag)
    {
        var i = IndexOf(tag);
        if (i < 0) return false;
        elements.RemoveAt(i);
        return true;
    }

    public int RemoveAll(Predicate<DicomElement> match) => elements.RemoveAll(match);

    private int IndexOf(DicomTag tag)
    {
        int lo = 0, hi = elements.Count - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = elements[mid].Tag.Value.CompareTo(tag.Value);
            if (c == 0) return mid;
            if (c < 0) lo = mid + 1; else hi = mid - 1;
        }
        return ~lo;
    }

    public IEnumerator<DicomElement> GetEnumerator() => elements.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Every element of this data set and of the items of its sequences, depth first.</summary>
    public IEnumerable<DicomElement> Walk()
    {
        foreach (var element in elements)
        {
            yield return element;
            if (element.Items is null) continue;
            foreach (var item in element.Items)
                foreach (var inner in item.Walk()) yield return inner;
        }
    }

    // ---- values ----

    /// <summary>The whole text value, decoded, without its padding; null when absent or not text.</summary>
    public string? GetString(DicomTag tag)
    {
        var element = this[tag];
        if (element is null || element.Items is not null || element.IsEncapsulated) return null;
        if (!element.VR.IsText() && element.VR != DicomVR.UN) return null;
        return Trim(Charset.Decode(element.Value.Span, element.VR == DicomVR.UN ? DicomDictionary.ImplicitVR(tag) : element.VR), element.VR);
    }

    /// <summary>The values of a multi-valued text element (split at backslashes), each without padding.</summary>
    public string[] GetStrings(DicomTag tag)
    {
        var text = GetString(tag);
        if (string.IsNullOrEmpty(text)) return [];
        var vr = this[tag]!.VR;
        if (vr.IsSingleValuedText()) return [text];
        var values = text.Split('\\');
        for (var i = 0; i < values.Length; i++) values[i] = Trim(values[i], vr);
        return values;
    }

    public int? GetInt(DicomTag tag)
    {
        var element = this[tag];
        if (element is null) return null;
        var span = element.Value.Span;
        switch (element.VR)
        {
            case DicomVR.US when span.Length >= 2: return BinaryPrimitives.ReadUInt16LittleEndian(span);
            case DicomVR.SS when span.Length >= 2: return BinaryPrimitives.ReadInt16LittleEndian(span);
            case DicomVR.UL when span.Length >= 4: return (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(span), int.MaxValue);
            case DicomVR.SL when span.Length >= 4: return BinaryPrimitives.ReadInt32LittleEndian(span);
            case DicomVR.IS or DicomVR.DS:
                var first = GetStrings(tag).FirstOrDefault();
                return int.TryParse(first, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
                    : double.TryParse(first, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d is >= int.MinValue and <= int.MaxValue ? (int)d
                    : null;
            default: return null;
        }
    }

    public void SetString(DicomTag tag, DicomVR vr, string value)
    {
        // Values Ward writes (replacements, UIDs, codes) are ASCII, which every character set shares.
        if (!Ascii.IsValid(value)) throw new ArgumentException("Only ASCII text is written into DICOM values.", nameof(value));
        Set(new DicomElement(tag, vr, Encoding.ASCII.GetBytes(value)));
    }

    public void SetEmpty(DicomTag tag, DicomVR vr) => Set(new DicomElement(tag, vr, ReadOnlyMemory<byte>.Empty));

    public void SetUInt16(DicomTag tag, ushort value)
    {
        var bytes = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(bytes, value);
        Set(new DicomElement(tag, DicomVR.US, bytes));
    }

    private static string Trim(string value, DicomVR vr) => vr switch
    {
        // Leading spaces are significant in LT, ST, UT and UR; trailing padding (spaces, NULs) never is.
        _ when vr.IsSingleValuedText() => value.TrimEnd(' ', '\0'),
        // Empty trailing component groups of a person name are insignificant (PS3.5 6.2.1.1).
        DicomVR.PN => value.Trim(' ', '\0').TrimEnd('='),
        _ => value.Trim(' ', '\0'),
    };
}
