using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;

namespace Ward.Core.Imaging;

/// <summary>
/// The DICOM JSON model (PS3.18 annex F.2): one object per data set, keyed by tag, each with its "vr" and "Value" (or
/// "InlineBinary" for binary values, "BulkDataURI" for pixel data, which is retrieved through WADO-RS instead).
/// </summary>
internal static class DicomJson
{
    public static void Write(Utf8JsonWriter json, DicomDataset dataset, Func<DicomTag, bool>? include = null, string? bulkDataUri = null)
    {
        json.WriteStartObject();
        foreach (var element in dataset)
        {
            if (element.Tag.IsGroupLength || (include is not null && !include(element.Tag))) continue;
            json.WritePropertyName(element.Tag.Hex);
            json.WriteStartObject();
            json.WriteString("vr", element.VR.Name());
            WriteValue(json, dataset, element, bulkDataUri);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    private static void WriteValue(Utf8JsonWriter json, DicomDataset dataset, DicomElement element, string? bulkDataUri)
    {
        if (element.Items is { } items)
        {
            if (items.Count == 0) return;
            json.WriteStartArray("Value");
            foreach (var item in items) Write(json, item);
            json.WriteEndArray();
            return;
        }
        if (element.Tag == DicomTag.PixelData || element.IsEncapsulated)
        {
            if (bulkDataUri is not null) json.WriteString("BulkDataURI", bulkDataUri);
            return;
        }
        var span = element.Value.Span;
        if (span.IsEmpty) return;
        switch (element.VR)
        {
            case DicomVR.PN:
                json.WriteStartArray("Value");
                foreach (var name in dataset.GetStrings(element.Tag))
                {
                    json.WriteStartObject();
                    var groups = name.Split('=');
                    string[] keys = ["Alphabetic", "Ideographic", "Phonetic"];
                    for (var g = 0; g < Math.Min(groups.Length, 3); g++)
                        if (groups[g].Length > 0) json.WriteString(keys[g], groups[g]);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                break;
            case DicomVR.IS or DicomVR.DS:
                json.WriteStartArray("Value");
                foreach (var value in dataset.GetStrings(element.Tag))
                {
                    if (decimal.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number)) json.WriteNumberValue(number);
                    else json.WriteNullValue();
                }
                json.WriteEndArray();
                break;
            case DicomVR.AT:
                json.WriteStartArray("Value");
                for (var i = 0; i + 4 <= span.Length; i += 4)
                    json.WriteStringValue(new DicomTag(BinaryPrimitives.ReadUInt16LittleEndian(span[i..]), BinaryPrimitives.ReadUInt16LittleEndian(span[(i + 2)..])).Hex);
                json.WriteEndArray();
                break;
            case DicomVR.US or DicomVR.SS or DicomVR.UL or DicomVR.SL or DicomVR.FL or DicomVR.FD or DicomVR.SV or DicomVR.UV:
                json.WriteStartArray("Value");
                var size = element.VR.WordSize();
                for (var i = 0; i + size <= span.Length; i += size)
                {
                    var word = span[i..];
                    switch (element.VR)
                    {
                        case DicomVR.US: json.WriteNumberValue(BinaryPrimitives.ReadUInt16LittleEndian(word)); break;
                        case DicomVR.SS: json.WriteNumberValue(BinaryPrimitives.ReadInt16LittleEndian(word)); break;
                        case DicomVR.UL: json.WriteNumberValue(BinaryPrimitives.ReadUInt32LittleEndian(word)); break;
                        case DicomVR.SL: json.WriteNumberValue(BinaryPrimitives.ReadInt32LittleEndian(word)); break;
                        case DicomVR.FL: WriteFloat(json, BinaryPrimitives.ReadSingleLittleEndian(word)); break;
                        case DicomVR.FD: WriteFloat(json, BinaryPrimitives.ReadDoubleLittleEndian(word)); break;
                        case DicomVR.SV: json.WriteNumberValue(BinaryPrimitives.ReadInt64LittleEndian(word)); break;
                        default: json.WriteNumberValue(BinaryPrimitives.ReadUInt64LittleEndian(word)); break;
                    }
                }
                json.WriteEndArray();
                break;
            case var vr when vr.IsText():
                json.WriteStartArray("Value");
                foreach (var value in dataset.GetStrings(element.Tag)) json.WriteStringValue(value);
                json.WriteEndArray();
                break;
            default:
                json.WriteBase64String("InlineBinary", span);
                break;
        }
    }

    private static void WriteFloat(Utf8JsonWriter json, double value)
    {
        if (double.IsFinite(value)) json.WriteNumberValue(value);
        else json.WriteNullValue();
    }
}
