using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Ward.Core.Imaging;

/// <summary>
/// Writes Part 10 files in explicit VR little endian (or, for encapsulated pixel data, the syntax it was encoded in,
/// whose data set encoding is the same): preamble, file meta information with its group length, then the data set
/// with sequences and items of undefined length. Group lengths outside group 0002 are not written (retired).
/// </summary>
internal static class DicomWriter
{
    /// <summary>Ward's implementation class UID: a UUID-derived UID (2.25, ISO/IEC 9834-8), which needs no registered root.</summary>
    public const string ImplementationClassUid = "2.25.94051368123785938462510093358218461013";
    public const string ImplementationVersion = "WARD_1";

    public static byte[] ToBytes(DicomFile file)
    {
        var output = new ArrayBufferWriter<byte>(EstimateSize(file.Dataset) + 512);
        Write(file, output);
        return output.WrittenSpan.ToArray();
    }

    public static void Write(DicomFile file, IBufferWriter<byte> output)
    {
        var syntax = TransferSyntaxes.IsEncapsulated(file.TransferSyntax) ? file.TransferSyntax : TransferSyntaxes.ExplicitLittle;
        var meta = new DicomDataset();
        foreach (var element in file.Meta) meta.Set(element);
        meta.Set(new DicomElement(DicomTag.FileMetaInformationVersion, DicomVR.OB, new byte[] { 0, 1 }));
        SetUid(meta, DicomTag.MediaStorageSopClassUid, file.Dataset.GetString(DicomTag.SopClassUid) ?? meta.GetString(DicomTag.MediaStorageSopClassUid));
        SetUid(meta, DicomTag.MediaStorageSopInstanceUid, file.Dataset.GetString(DicomTag.SopInstanceUid) ?? meta.GetString(DicomTag.MediaStorageSopInstanceUid));
        SetUid(meta, DicomTag.TransferSyntaxUid, syntax);
        SetUid(meta, DicomTag.ImplementationClassUid, ImplementationClassUid);
        meta.SetString(DicomTag.ImplementationVersionName, DicomVR.SH, ImplementationVersion);

        output.Write(new byte[128]);
        output.Write("DICM"u8);
        var metaBody = new ArrayBufferWriter<byte>(256);
        WriteDataset(meta, metaBody);
        WriteHeader(output, DicomTag.FileMetaInformationGroupLength, DicomVR.UL, 4);
        WriteUInt32(output, (uint)metaBody.WrittenCount);
        output.Write(metaBody.WrittenSpan);
        WriteDataset(file.Dataset, output);
    }

    private static void SetUid(DicomDataset meta, DicomTag tag, string? uid)
    {
        if (uid is null) return;
        var bytes = Encoding.ASCII.GetBytes(uid);
        meta.Set(new DicomElement(tag, DicomVR.UI, bytes));
    }

    public static void WriteDataset(DicomDataset dataset, IBufferWriter<byte> output)
    {
        foreach (var element in dataset)
        {
            if (element.Tag.IsGroupLength) continue;
            if (element.Items is { } items)
            {
                WriteHeader(output, element.Tag, DicomVR.SQ, 0xFFFF_FFFF);
                foreach (var item in items)
                {
                    WriteItemHeader(output, DicomTag.Item, 0xFFFF_FFFF);
                    WriteDataset(item, output);
                    WriteItemHeader(output, DicomTag.ItemDelimitation, 0);
                }
                WriteItemHeader(output, DicomTag.SequenceDelimitation, 0);
            }
            else if (element.Fragments is { } fragments)
            {
                WriteHeader(output, element.Tag, DicomVR.OB, 0xFFFF_FFFF);
                foreach (var fragment in fragments)
                {
                    WriteItemHeader(output, DicomTag.Item, (uint)fragment.Length);
                    output.Write(fragment.Span);
                }
                WriteItemHeader(output, DicomTag.SequenceDelimitation, 0);
            }
            else
            {
                var value = element.Value.Span;
                var vr = element.VR;
                // A value too long for a 16-bit length (possible when read as implicit VR) is written as UN.
                if (!vr.HasLongLength() && value.Length + (value.Length & 1) > 0xFFFF) vr = DicomVR.UN;
                var odd = (value.Length & 1) == 1;
                WriteHeader(output, element.Tag, vr, (uint)(value.Length + (odd ? 1 : 0)));
                output.Write(value);
                if (odd) output.Write([vr.Padding()]);
            }
        }
    }

    private static void WriteHeader(IBufferWriter<byte> output, DicomTag tag, DicomVR vr, uint length)
    {
        var header = output.GetSpan(12);
        BinaryPrimitives.WriteUInt16LittleEndian(header, tag.Group);
        BinaryPrimitives.WriteUInt16LittleEndian(header[2..], tag.Element);
        BinaryPrimitives.WriteUInt16BigEndian(header[4..], (ushort)vr);
        if (vr.HasLongLength())
        {
            BinaryPrimitives.WriteUInt16LittleEndian(header[6..], 0);
            BinaryPrimitives.WriteUInt32LittleEndian(header[8..], length);
            output.Advance(12);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(header[6..], (ushort)length);
            output.Advance(8);
        }
    }

    private static void WriteItemHeader(IBufferWriter<byte> output, DicomTag tag, uint length)
    {
        var header = output.GetSpan(8);
        BinaryPrimitives.WriteUInt16LittleEndian(header, tag.Group);
        BinaryPrimitives.WriteUInt16LittleEndian(header[2..], tag.Element);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], length);
        output.Advance(8);
    }

    private static void WriteUInt32(IBufferWriter<byte> output, uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(output.GetSpan(4), value);
        output.Advance(4);
    }

    private static int EstimateSize(DicomDataset dataset)
    {
        long size = 0;
        foreach (var element in dataset)
        {
            size += 16 + element.Value.Length;
            if (element.Items is { } items) foreach (var item in items) size += 16 + EstimateSize(item);
            if (element.Fragments is { } fragments) foreach (var fragment in fragments) size += 8 + fragment.Length;
        }
        return (int)Math.Min(size, int.MaxValue / 2);
    }
}
