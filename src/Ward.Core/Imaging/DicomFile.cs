using System.Buffers.Binary;
using System.IO.Compression;

namespace Ward.Core.Imaging;

/// <summary>Broken DICOM input: what is wrong and where (byte offset in the file, or in the inflated data set).</summary>
internal sealed class DicomException(string message) : Exception(message);

/// <summary>The transfer syntaxes the codec reads, and what each means for the data set's encoding.</summary>
internal static class TransferSyntaxes
{
    public const string ImplicitLittle = "1.2.840.10008.1.2";
    public const string ExplicitLittle = "1.2.840.10008.1.2.1";
    public const string DeflatedExplicitLittle = "1.2.840.10008.1.2.1.99";
    public const string ExplicitBig = "1.2.840.10008.1.2.2";

    /// <summary>
    /// Native syntaxes change how elements are encoded; every other one (JPEG, JPEG-LS, JPEG 2000, RLE, MPEG, HTJ2K …)
    /// is explicit VR little endian with encapsulated pixel data, which the codec keeps as it is.
    /// </summary>
    public static bool IsEncapsulated(string uid) =>
        uid is not (ImplicitLittle or ExplicitLittle or DeflatedExplicitLittle or ExplicitBig);
}

/// <summary>
/// A DICOM Part 10 file (PS3.10): the file meta information (group 0002) and the data set. Reads implicit and explicit
/// VR little endian, explicit VR big endian, deflated explicit VR little endian and the encapsulated syntaxes, with or
/// without the 128-byte preamble and file meta information. Broken input is refused with a <see cref="DicomException"/>
/// that says what and where; reading costs time linear in the input and memory bounded by it (inflated data by
/// <see cref="MaxInflatedBytes"/>).
/// </summary>
internal sealed class DicomFile
{
    public const int MaxDepth = 64;
    public const int MaxInflatedBytes = 512 << 20;

    public DicomFile(DicomDataset meta, DicomDataset dataset, string transferSyntax)
    {
        Meta = meta; Dataset = dataset; TransferSyntax = transferSyntax;
    }

    public DicomDataset Meta { get; }
    public DicomDataset Dataset { get; }

    /// <summary>The transfer syntax the data set was read in (for files without meta information, the one detected).</summary>
    public string TransferSyntax { get; }

    public static DicomFile Read(ReadOnlyMemory<byte> bytes) => new Reader(bytes).ReadFile();

    private sealed class Reader(ReadOnlyMemory<byte> buffer)
    {
        private ReadOnlyMemory<byte> buffer = buffer;
        private int pos;
        private bool explicitVR = true;
        private bool bigEndian;

        private ReadOnlySpan<byte> Span => buffer.Span;

        public DicomFile ReadFile()
        {
            var span = Span;
            if (span.Length >= 132 && span.Slice(128, 4).SequenceEqual("DICM"u8)) pos = 132;

            var meta = new DicomDataset();
            while (Span.Length - pos >= 8 && BinaryPrimitives.ReadUInt16LittleEndian(Span[pos..]) == 0x0002)
            {
                // File meta information is explicit VR little endian; some writers got that wrong, so each element says.
                explicitVR = DicomVRs.Parse(Span[pos + 4], Span[pos + 5]) != DicomVR.None;
                var element = ReadElement(Span.Length, meta, depth: 0);
                if (!element.Tag.IsGroupLength) meta.Set(element);
            }
            if (pos == 0 && meta.Count == 0 && span.Length < 8) throw new DicomException("Not DICOM: fewer than 8 bytes.");

            var syntax = meta.GetString(DicomTag.TransferSyntaxUid);
            if (string.IsNullOrEmpty(syntax)) syntax = Detect();
            else
            {
                bigEndian = syntax == TransferSyntaxes.ExplicitBig;
                explicitVR = syntax != TransferSyntaxes.ImplicitLittle;
                if (syntax == TransferSyntaxes.DeflatedExplicitLittle) Inflate();
                CorrectVRForm();
            }

            var dataset = ReadDataset(Span.Length, undefinedItem: false, DicomCharset.Default, depth: 0);
            if (dataset.Count == 0 && meta.Count == 0) throw new DicomException("Not DICOM: no data elements.");
            return new DicomFile(meta, dataset, syntax);
        }

        /// <summary>Without meta information: explicit when bytes 4–5 name a VR; the byte order from the first group.</summary>
        private string Detect()
        {
            var span = Span[pos..];
            if (span.Length < 8) throw new DicomException($"Not DICOM: no data set after offset {pos}.");
            explicitVR = DicomVRs.Parse(span[4], span[5]) != DicomVR.None;
            var little = BinaryPrimitives.ReadUInt16LittleEndian(span);
            var big = BinaryPrimitives.ReadUInt16BigEndian(span);
            if (little is > 0 and < 0x0100) bigEndian = false;
            else if (explicitVR && big is > 0 and < 0x0100) bigEndian = true;
            else throw new DicomException($"Not DICOM: no preamble, no file meta information, and the first bytes at offset {pos} are no data element header.");
            return !explicitVR ? TransferSyntaxes.ImplicitLittle : bigEndian ? TransferSyntaxes.ExplicitBig : TransferSyntaxes.ExplicitLittle;
        }

        /// <summary>Some writers declare explicit VR and write implicit (or the reverse): the first element tells.</summary>
        private void CorrectVRForm()
        {
            var span = Span[pos..];
            if (span.Length < 8) return;
            var looksExplicit = DicomVRs.Parse(span[4], span[5]) != DicomVR.None;
            if (looksExplicit != explicitVR && !bigEndian) explicitVR = looksExplicit;
        }

        private void Inflate()
        {
            using var input = new DeflateStream(new MemoryStream(buffer[pos..].ToArray()), CompressionMode.Decompress);
            using var output = new MemoryStream();
            var chunk = new byte[81920];
            try
            {
                int n;
                while ((n = input.Read(chunk)) > 0)
                {
                    if (output.Length + n > MaxInflatedBytes)
                        throw new DicomException($"Deflated data set inflates beyond {MaxInflatedBytes >> 20} MiB; refused.");
                    output.Write(chunk, 0, n);
                }
            }
            catch (InvalidDataException e)
            {
                throw new DicomException($"Deflated data set at offset {pos} is not valid deflate data: {e.Message}");
            }
            buffer = output.ToArray();
            pos = 0;
        }

        private DicomTag ReadTag(int at)
        {
            var span = Span;
            return bigEndian
                ? new DicomTag(BinaryPrimitives.ReadUInt16BigEndian(span[at..]), BinaryPrimitives.ReadUInt16BigEndian(span[(at + 2)..]))
                : new DicomTag(BinaryPrimitives.ReadUInt16LittleEndian(span[at..]), BinaryPrimitives.ReadUInt16LittleEndian(span[(at + 2)..]));
        }

        private uint ReadUInt32(int at) => bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(Span[at..]) : BinaryPrimitives.ReadUInt32LittleEndian(Span[at..]);

        private ushort ReadUInt16(int at) => bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(Span[at..]) : BinaryPrimitives.ReadUInt16LittleEndian(Span[at..]);

        private DicomDataset ReadDataset(int end, bool undefinedItem, DicomCharset charset, int depth)
        {
            var dataset = new DicomDataset { Charset = charset };
            while (pos < end)
            {
                if (end - pos < 8)
                {
                    if (depth == 0 && !undefinedItem && !Span[pos..end].ContainsAnyExcept((byte)0)) { pos = end; break; }
                    throw new DicomException($"Truncated: {end - pos} bytes at offset {pos} are too few for a data element.");
                }
                var tag = ReadTag(pos);
                if (tag == DicomTag.ItemDelimitation)
                {
                    if (!undefinedItem) throw new DicomException($"Item delimiter at offset {pos} outside an item of undefined length.");
                    pos += 8;
                    return dataset;
                }
                if (tag.Group == 0xFFFE) throw new DicomException($"Unexpected {tag} at offset {pos} inside a data set.");
                if (depth == 0 && tag.Value == 0 && !Span[pos..end].ContainsAnyExcept((byte)0))
                {
                    pos = end; // trailing zero padding after the last element
                    break;
                }
                var element = ReadElement(end, dataset, depth);
                dataset.Set(element); // group lengths included: retired outside group 0002, kept as read, never written
                if (element.Tag == DicomTag.SpecificCharacterSet)
                    dataset.Charset = DicomCharset.Of(dataset.GetStrings(DicomTag.SpecificCharacterSet));
            }
            if (undefinedItem) throw new DicomException($"Truncated: item of undefined length without its delimiter before offset {end}.");
            return dataset;
        }

        private DicomElement ReadElement(int end, DicomDataset dataset, int depth)
        {
            var start = pos;
            var tag = ReadTag(pos);
            DicomVR vr;
            uint length;
            if (explicitVR)
            {
                vr = DicomVRs.Parse(Span[pos + 4], Span[pos + 5]);
                if (vr == DicomVR.None)
                    throw new DicomException($"Bad VR 0x{Span[pos + 4]:X2}{Span[pos + 5]:X2} for {tag} at offset {pos}.");
                if (vr.HasLongLength())
                {
                    if (end - pos < 12) throw new DicomException($"Truncated: header of {tag} at offset {pos}.");
                    length = ReadUInt32(pos + 8);
                    pos += 12;
                }
                else
                {
                    length = ReadUInt16(pos + 6);
                    pos += 8;
                }
            }
            else
            {
                vr = ImplicitVR(tag, dataset);
                length = ReadUInt32(pos + 4);
                pos += 8;
            }

            if (length == 0xFFFF_FFFF)
            {
                if (vr is DicomVR.SQ or DicomVR.UN)
                {
                    // Undefined-length UN is a sequence encoded implicit VR little endian (PS3.5 section 6.2.2).
                    var (wasExplicit, wasBig) = (explicitVR, bigEndian);
                    if (vr == DicomVR.UN) (explicitVR, bigEndian) = (false, false);
                    var items = ReadSequence(tag, end, undefined: true, dataset.Charset, depth);
                    (explicitVR, bigEndian) = (wasExplicit, wasBig);
                    return new DicomElement(tag, items);
                }
                if (vr is DicomVR.OB or DicomVR.OW) return new DicomElement(tag, vr, ReadFragments(tag, end));
                throw new DicomException($"Undefined length for {tag} {vr.Name()} at offset {start}: only sequences and pixel data may have one.");
            }
            if (length > (uint)(end - pos))
                throw new DicomException($"Truncated: {tag} at offset {start} declares {length} bytes, {end - pos} remain.");

            var valueEnd = pos + (int)length;
            if (vr == DicomVR.SQ)
            {
                var items = ReadSequence(tag, valueEnd, undefined: false, dataset.Charset, depth);
                return new DicomElement(tag, items);
            }
            if (vr == DicomVR.UN && !bigEndian && !tag.IsPrivate && DicomDictionary.Find(tag) is { } known)
            {
                // A standard attribute sent as UN (by a system that did not know it): read it as what it is. A
                // sequence's content is then implicit VR little endian (PS3.5 section 6.2.2); if it does not parse as
                // one, the bytes stay UN.
                if (known.VR == DicomVR.SQ)
                {
                    if (TryReadImplicitSequence(tag, valueEnd, dataset.Charset, depth) is { } items) return new DicomElement(tag, items);
                }
                // (A value too long for the known VR's 16-bit length stays UN: explicit VR could not carry it otherwise.)
                else if (known.VR.HasLongLength() || length <= 0xFFFF) vr = known.SignFollowsPixels && dataset.GetInt(DicomTag.PixelRepresentation) == 1 ? DicomVR.SS : known.VR;
            }
            var value = buffer.Slice(pos, (int)length);
            pos = valueEnd;
            var word = vr.WordSize();
            if (bigEndian && word > 1) value = Swap(value.Span, word);
            return new DicomElement(tag, vr, value);
        }

        private List<DicomDataset>? TryReadImplicitSequence(DicomTag tag, int end, DicomCharset charset, int depth)
        {
            var (start, wasExplicit) = (pos, explicitVR);
            explicitVR = false;
            try
            {
                return ReadSequence(tag, end, undefined: false, charset, depth);
            }
            catch (DicomException)
            {
                pos = start;
                return null;
            }
            finally
            {
                explicitVR = wasExplicit;
            }
        }

        private static DicomVR ImplicitVR(DicomTag tag, DicomDataset dataset)
        {
            if (tag.IsGroupLength) return DicomVR.UL;
            if (tag.IsPrivateCreator) return DicomVR.LO;
            if (DicomDictionary.Find(tag) is not { } entry) return DicomVR.UN;
            return entry.SignFollowsPixels && dataset.GetInt(DicomTag.PixelRepresentation) == 1 ? DicomVR.SS : entry.VR;
        }

        private List<DicomDataset> ReadSequence(DicomTag tag, int end, bool undefined, DicomCharset charset, int depth)
        {
            if (depth + 1 > MaxDepth) throw new DicomException($"Sequences nested deeper than {MaxDepth} at {tag}, offset {pos}.");
            var items = new List<DicomDataset>();
            while (true)
            {
                if (!undefined && pos == end) return items;
                if (end - pos < 8) throw new DicomException($"Truncated: sequence {tag} ends without its delimiter at offset {pos}.");
                var itemTag = ReadTag(pos);
                var length = ReadUInt32(pos + 4);
                var at = pos;
                pos += 8;
                if (itemTag == DicomTag.SequenceDelimitation)
                {
                    if (undefined) return items;
                    throw new DicomException($"Sequence delimiter at offset {at} in sequence {tag} of defined length.");
                }
                if (itemTag != DicomTag.Item) throw new DicomException($"Expected an item in sequence {tag} at offset {at}, found {itemTag}.");
                if (length == 0xFFFF_FFFF)
                {
                    items.Add(ReadDataset(end, undefinedItem: true, charset, depth + 1));
                    continue;
                }
                if (length > (uint)(end - pos))
                    throw new DicomException($"Truncated: item of {tag} at offset {at} declares {length} bytes, {end - pos} remain.");
                var itemEnd = pos + (int)length;
                items.Add(ReadDataset(itemEnd, undefinedItem: false, charset, depth + 1));
                pos = itemEnd;
            }
        }

        private List<ReadOnlyMemory<byte>> ReadFragments(DicomTag tag, int end)
        {
            var fragments = new List<ReadOnlyMemory<byte>>();
            while (true)
            {
                if (end - pos < 8) throw new DicomException($"Truncated: encapsulated {tag} ends without its delimiter at offset {pos}.");
                var itemTag = ReadTag(pos);
                var length = ReadUInt32(pos + 4);
                var at = pos;
                pos += 8;
                if (itemTag == DicomTag.SequenceDelimitation) return fragments;
                if (itemTag != DicomTag.Item) throw new DicomException($"Expected a fragment item in {tag} at offset {at}, found {itemTag}.");
                if (length > (uint)(end - pos))
                    throw new DicomException($"Truncated: fragment of {tag} at offset {at} declares {length} bytes, {end - pos} remain.");
                fragments.Add(buffer.Slice(pos, (int)length));
                pos += (int)length;
            }
        }

        private static byte[] Swap(ReadOnlySpan<byte> value, int word)
        {
            var copy = value.ToArray();
            for (var i = 0; i + word <= copy.Length; i += word) copy.AsSpan(i, word).Reverse();
            return copy;
        }
    }
}
