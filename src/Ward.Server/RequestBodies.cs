using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Http;
using Ward.Core.Fhir;
using Ward.Core.Node;

namespace Ward.Server;

/// <summary>
/// Every request body a parser sees passes through here first: it is read whole (within <c>max-request-body-bytes</c>),
/// it must be UTF-8 (400 otherwise, never a 500 or a silently replaced character), and a JSON or XML body must stay
/// within the nesting depth and the count of elements of <c>limits</c> in ward.yaml, so that no parser builds more than a
/// bounded tree of objects from it.
/// </summary>
internal static class RequestBodies
{
    /// <summary>The whole body of a request.</summary>
    public static async Task<byte[]> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct);
        return buffer.ToArray();
    }

    /// <summary>Refuses (400) a body that is not valid UTF-8: a lone continuation byte, an overlong encoding, a truncated sequence, a surrogate.</summary>
    public static void RequireUtf8(ReadOnlySpan<byte> body)
    {
        if (!System.Text.Unicode.Utf8.IsValid(body))
        {
            throw FhirException.BadRequest("The request body is not valid UTF-8 (a stray continuation byte, an overlong or truncated sequence); "
                + "send the text encoded in UTF-8.", OperationOutcome.IssueType.Structure);
        }
    }

    /// <summary>Checks a body by its media type: UTF-8 for any text, then depth and element count for JSON and XML.</summary>
    public static void Check(ReadOnlySpan<byte> body, string? contentType, RequestLimitsConfig limits)
    {
        RequireUtf8(body);
        var media = (contentType ?? "application/fhir+json").Split(';')[0].Trim();
        if (media.EndsWith("json", StringComparison.OrdinalIgnoreCase))
        {
            CheckJson(body, limits);
        }
        else if (media.EndsWith("xml", StringComparison.OrdinalIgnoreCase))
        {
            CheckXml(body, limits);
        }
    }

    /// <summary>
    /// Walks the JSON tokens once (no tree is built): deeper than <c>max-body-depth</c> answers 400, more tokens than
    /// <c>max-body-elements</c> 413. Malformed JSON is left for the parser to describe.
    /// </summary>
    public static void CheckJson(ReadOnlySpan<byte> body, RequestLimitsConfig limits)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = limits.MaxBodyDepth + 8 });
        var tokens = 0;
        try
        {
            while (reader.Read())
            {
                if (reader.CurrentDepth > limits.MaxBodyDepth)
                {
                    throw TooDeep(limits);
                }
                if (++tokens > limits.MaxBodyElements)
                {
                    throw TooMany(limits);
                }
            }
        }
        catch (JsonException) when (reader.CurrentDepth < limits.MaxBodyDepth)
        {
            // Not well-formed: the parser says where and why.
        }
        catch (JsonException)
        {
            throw TooDeep(limits);
        }
    }

    /// <summary>The same walk over XML nodes (DTDs prohibited, as in the parser).</summary>
    public static void CheckXml(ReadOnlySpan<byte> body, RequestLimitsConfig limits)
    {
        var settings = new System.Xml.XmlReaderSettings { DtdProcessing = System.Xml.DtdProcessing.Prohibit, XmlResolver = null, IgnoreWhitespace = true };
        using var reader = System.Xml.XmlReader.Create(new MemoryStream(body.ToArray(), writable: false), settings);
        var nodes = 0;
        try
        {
            while (reader.Read())
            {
                if (reader.Depth > limits.MaxBodyDepth)
                {
                    throw TooDeep(limits);
                }
                nodes += 1 + reader.AttributeCount;
                if (nodes > limits.MaxBodyElements)
                {
                    throw TooMany(limits);
                }
            }
        }
        catch (System.Xml.XmlException)
        {
            // Not well-formed: the parser says where and why.
        }
    }

    /// <summary>Refuses (413) a Bundle with more entries than <c>max-bundle-entries</c>.</summary>
    public static void CheckBundle(Resource? resource, RequestLimitsConfig limits)
    {
        if (resource is Bundle bundle && bundle.Entry.Count > limits.MaxBundleEntries)
        {
            throw FhirException.TooLarge($"The Bundle holds {bundle.Entry.Count:N0} entries; this node takes at most {limits.MaxBundleEntries:N0} in one request "
                + "(limits: max-bundle-entries in ward.yaml). Split it into several Bundles.");
        }
    }

    private static FhirException TooDeep(RequestLimitsConfig limits) =>
        FhirException.BadRequest($"The body nests deeper than {limits.MaxBodyDepth} levels (limits: max-body-depth in ward.yaml).", OperationOutcome.IssueType.TooCostly);

    private static FhirException TooMany(RequestLimitsConfig limits) =>
        FhirException.TooLarge($"The body holds more than {limits.MaxBodyElements:N0} JSON tokens or XML nodes (limits: max-body-elements in ward.yaml).");
}
