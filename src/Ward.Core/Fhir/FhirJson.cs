using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Hl7.Fhir.Rest;
using Hl7.Fhir.Serialization;

namespace Ward.Core.Fhir;

/// <summary>FHIR JSON and XML parsing and serialization through the Firely SDK, with errors a person understands.</summary>
internal static class FhirJson
{
    private static readonly FhirJsonDeserializer StrictDeserializer = new(new DeserializerSettings());
    private static readonly FhirJsonSerializer Serializer = new();

    public static Resource Parse(ReadOnlySpan<byte> utf8)
    {
        if (utf8.IsEmpty)
        {
            throw FhirException.BadRequest("The request body is empty; a FHIR resource in JSON was expected.", OperationOutcome.IssueType.Structure);
        }
        if (HoldsNul(utf8))
        {
            // FHIR strings should hold no control characters but tab, CR and LF; NUL in particular truncates values in
            // C-based systems downstream and is refused by PostgreSQL's text type, so both engines refuse it alike.
            throw FhirException.BadRequest("The resource holds the character U+0000 (\\u0000), which FHIR strings must not contain.", OperationOutcome.IssueType.Value);
        }
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { MaxDepth = 128 });
        try
        {
            if (StrictDeserializer.TryDeserializeResource(ref reader, out var resource, out var issues) && resource is not null)
            {
                return resource;
            }
            var first = issues.FirstOrDefault();
            if (resource is null || first is null)
            {
                throw FhirException.BadRequest("The body is not a FHIR resource: " + (first?.Message ?? "missing 'resourceType'."), OperationOutcome.IssueType.Structure);
            }
            throw FhirException.BadRequest("The resource is not valid FHIR R4: " + string.Join(" ", issues.Take(5).Select(i => i.Message)), OperationOutcome.IssueType.Structure);
        }
        catch (JsonException e)
        {
            throw FhirException.BadRequest($"The body is not well-formed JSON (line {(e.LineNumber ?? 0) + 1}, position {(e.BytePositionInLine ?? 0) + 1}): {StripPosition(e.Message)}", OperationOutcome.IssueType.Structure);
        }
        catch (DeserializationFailedException e)
        {
            throw FhirException.BadRequest("The resource is not valid FHIR R4: " + string.Join(" ", e.Exceptions.Take(5).Select(i => i.Message)), OperationOutcome.IssueType.Structure);
        }
    }

    /// <summary>Whether the JSON text escapes a NUL character (<c>\u0000</c> after an odd number of backslashes).</summary>
    private static bool HoldsNul(ReadOnlySpan<byte> utf8)
    {
        var from = 0;
        int at;
        while ((at = utf8[from..].IndexOf("\\u0000"u8)) >= 0)
        {
            var slash = from + at;
            var run = 1;
            while (slash - run >= 0 && utf8[slash - run] == (byte)'\\')
            {
                run++;
            }
            if (run % 2 == 1)
            {
                return true;
            }
            from = slash + 1;
        }
        return false;
    }

    private static string StripPosition(string message)
    {
        var i = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return i > 0 ? message[..i] : message;
    }

    public static Resource ParseXml(string xml)
    {
        try
        {
            using var reader = System.Xml.XmlReader.Create(new StringReader(xml), new System.Xml.XmlReaderSettings { DtdProcessing = System.Xml.DtdProcessing.Prohibit, XmlResolver = null });
            if (FhirXmlDeserializer.STRICT.TryDeserializeResource(reader, out var resource, out var issues) && resource is not null)
            {
                return resource;
            }
            throw FhirException.BadRequest("The body is not valid FHIR R4 XML: " + string.Join(" ", issues.Take(5).Select(i => i.Message)), OperationOutcome.IssueType.Structure);
        }
        catch (System.Xml.XmlException e)
        {
            throw FhirException.BadRequest($"The body is not well-formed XML (line {e.LineNumber}, position {e.LinePosition}): {e.Message}", OperationOutcome.IssueType.Structure);
        }
    }

    public static byte[] Serialize(Base resource) => Serializer.SerializeToBytes(resource);

    public static byte[] Serialize(Base resource, SummaryType summary, string[]? elements) =>
        Serializer.SerializeToBytes(resource, summary, elements);

    public static string ToXml(Base resource) => new FhirXmlSerializer().SerializeToString(resource);
}
