using System.Globalization;

namespace Ward.Core.Imaging;

/// <summary>A DICOM attribute tag: group in the high 16 bits, element in the low 16 bits (so tags sort as numbers).</summary>
internal readonly record struct DicomTag(uint Value) : IComparable<DicomTag>
{
    public DicomTag(ushort group, ushort element) : this(((uint)group << 16) | element) { }

    public ushort Group => (ushort)(Value >> 16);
    public ushort Element => (ushort)Value;

    /// <summary>Odd groups other than 1, 3, 5, 7 and FFFF are private (PS3.5 section 7.8).</summary>
    public bool IsPrivate => (Group & 1) == 1 && Group > 7 && Group != 0xFFFF;

    /// <summary>(gggg,0010)–(gggg,00FF) in a private group: the element that names the block's owner.</summary>
    public bool IsPrivateCreator => IsPrivate && Element is >= 0x10 and <= 0xFF;

    public bool IsGroupLength => Element == 0;

    public int CompareTo(DicomTag other) => Value.CompareTo(other.Value);

    /// <summary>Eight hex digits, the form DICOM JSON keys and PS3.15 tables use.</summary>
    public string Hex => Value.ToString("X8", CultureInfo.InvariantCulture);

    public override string ToString() => $"({Group:X4},{Element:X4})";

    /// <summary>Parses "GGGGEEEE", "(GGGG,EEEE)" or "GGGG,EEEE".</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out DicomTag tag)
    {
        tag = default;
        text = text.Trim();
        if (text.Length > 2 && text[0] == '(' && text[^1] == ')') text = text[1..^1];
        Span<char> digits = stackalloc char[8];
        var n = 0;
        foreach (var c in text)
        {
            if (c == ',') continue;
            if (n == 8 || !char.IsAsciiHexDigit(c)) return false;
            digits[n++] = c;
        }
        if (n != 8) return false;
        tag = new DicomTag(uint.Parse(digits, NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        return true;
    }

    public static readonly DicomTag FileMetaInformationGroupLength = new(0x0002_0000);
    public static readonly DicomTag FileMetaInformationVersion = new(0x0002_0001);
    public static readonly DicomTag MediaStorageSopClassUid = new(0x0002_0002);
    public static readonly DicomTag MediaStorageSopInstanceUid = new(0x0002_0003);
    public static readonly DicomTag TransferSyntaxUid = new(0x0002_0010);
    public static readonly DicomTag ImplementationClassUid = new(0x0002_0012);
    public static readonly DicomTag ImplementationVersionName = new(0x0002_0013);
    public static readonly DicomTag SpecificCharacterSet = new(0x0008_0005);
    public static readonly DicomTag ImageType = new(0x0008_0008);
    public static readonly DicomTag SopClassUid = new(0x0008_0016);
    public static readonly DicomTag SopInstanceUid = new(0x0008_0018);
    public static readonly DicomTag StudyDate = new(0x0008_0020);
    public static readonly DicomTag StudyTime = new(0x0008_0030);
    public static readonly DicomTag AccessionNumber = new(0x0008_0050);
    public static readonly DicomTag Modality = new(0x0008_0060);
    public static readonly DicomTag ModalitiesInStudy = new(0x0008_0061);
    public static readonly DicomTag ReferringPhysicianName = new(0x0008_0090);
    public static readonly DicomTag StudyDescription = new(0x0008_1030);
    public static readonly DicomTag SeriesDescription = new(0x0008_103E);
    public static readonly DicomTag PatientName = new(0x0010_0010);
    public static readonly DicomTag PatientId = new(0x0010_0020);
    public static readonly DicomTag IssuerOfPatientId = new(0x0010_0021);
    public static readonly DicomTag PatientBirthDate = new(0x0010_0030);
    public static readonly DicomTag PatientSex = new(0x0010_0040);
    public static readonly DicomTag PatientIdentityRemoved = new(0x0012_0062);
    public static readonly DicomTag DeidentificationMethod = new(0x0012_0063);
    public static readonly DicomTag DeidentificationMethodCodeSequence = new(0x0012_0064);
    public static readonly DicomTag LongitudinalTemporalInformationModified = new(0x0028_0303);
    public static readonly DicomTag StudyInstanceUid = new(0x0020_000D);
    public static readonly DicomTag SeriesInstanceUid = new(0x0020_000E);
    public static readonly DicomTag StudyId = new(0x0020_0010);
    public static readonly DicomTag SeriesNumber = new(0x0020_0011);
    public static readonly DicomTag InstanceNumber = new(0x0020_0013);
    public static readonly DicomTag NumberOfFrames = new(0x0028_0008);
    public static readonly DicomTag Rows = new(0x0028_0010);
    public static readonly DicomTag Columns = new(0x0028_0011);
    public static readonly DicomTag BitsAllocated = new(0x0028_0100);
    public static readonly DicomTag PixelRepresentation = new(0x0028_0103);
    public static readonly DicomTag SamplesPerPixel = new(0x0028_0002);
    public static readonly DicomTag BurnedInAnnotation = new(0x0028_0301);
    public static readonly DicomTag PixelData = new(0x7FE0_0010);
    public static readonly DicomTag Item = new(0xFFFE_E000);
    public static readonly DicomTag ItemDelimitation = new(0xFFFE_E00D);
    public static readonly DicomTag SequenceDelimitation = new(0xFFFE_E0DD);
}
