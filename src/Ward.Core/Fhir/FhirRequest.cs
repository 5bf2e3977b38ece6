using Hl7.Fhir.Model;

namespace Ward.Core.Fhir;

internal enum ReturnPreference { Representation, Minimal, OperationOutcome }

/// <summary>One FHIR interaction, from HTTP or from a batch/transaction entry: both go through the same code.</summary>
internal sealed class FhirRequest
{
    public required string Method { get; init; }
    /// <summary>Path below the FHIR base, without leading slash: "", "Patient", "Patient/1/_history/2" ...</summary>
    public required string Path { get; init; }
    public IReadOnlyList<KeyValuePair<string, string>> Query { get; init; } = [];
    public Resource? Resource { get; init; }
    public byte[]? Body { get; init; }
    public string? ContentType { get; init; }
    public string? IfMatch { get; init; }
    public string? IfNoneExist { get; init; }
    public string? IfNoneMatch { get; init; }
    public DateTimeOffset? IfModifiedSince { get; init; }
    public ReturnPreference Return { get; init; } = ReturnPreference.Representation;
    public bool Strict { get; init; }
    /// <summary>Who asks, and what their token grants: checked for every interaction, batch and transaction entries included.</summary>
    public required Access.AccessGrant Caller { get; init; }
    /// <summary>The purpose of use the request names (Ward-Purpose header), or null for the role's default.</summary>
    public string? Purpose { get; init; }
    /// <summary>The break-the-glass justification (Ward-Break-Glass header), or null.</summary>
    public string? BreakGlass { get; init; }
    /// <summary>The access policy as it applies to this request (built by the engine from the caller, purpose and break-the-glass).</summary>
    public Policy.CallerAccess? Access { get; set; }
    /// <summary>The client's network address, for the audit trail.</summary>
    public string? Address { get; init; }
    /// <summary>What this interaction touched, for its audit records (a transaction's entries share the transaction's).</summary>
    public AuditTrail? Trail { get; set; }
    /// <summary>The absolute FHIR base URL the client used, for fullUrl and paging links.</summary>
    public required string BaseUrl { get; init; }

    /// <summary>Builds a request from a relative URL such as <c>Patient?identifier=x|1</c>.</summary>
    public static (string Path, List<KeyValuePair<string, string>> Query) SplitUrl(string url)
    {
        var q = url.IndexOf('?');
        var path = (q < 0 ? url : url[..q]).Trim('/');
        var query = new List<KeyValuePair<string, string>>();
        if (q >= 0)
        {
            foreach (var pair in url[(q + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = pair.IndexOf('=');
                var key = Uri.UnescapeDataString((eq < 0 ? pair : pair[..eq]).Replace('+', ' '));
                var value = eq < 0 ? "" : Uri.UnescapeDataString(pair[(eq + 1)..].Replace('+', ' '));
                query.Add(new(key, value));
            }
        }
        return (path, query);
    }
}

internal sealed class FhirResponse
{
    public int Status { get; init; }
    /// <summary>FHIR JSON bytes of the body (resource, Bundle or OperationOutcome), or null for none.</summary>
    public byte[]? Body { get; init; }
    public string? Location { get; init; }
    public string? ETag { get; init; }
    public DateTimeOffset? LastModified { get; init; }
    /// <summary>The status as Bundle entry responses write it ("201 Created").</summary>
    public string StatusText => Status switch
    {
        200 => "200 OK",
        201 => "201 Created",
        204 => "204 No Content",
        304 => "304 Not Modified",
        _ => Status.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    public static FhirResponse Of(int status, byte[]? body = null) => new() { Status = status, Body = body };
}
