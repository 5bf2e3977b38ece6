using System.Globalization;
using System.Text;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Node;
using Ward.Server.Identity;

namespace Ward.Server;

/// <summary>The HTTP face of the FHIR API: turns HTTP into <see cref="FhirRequest"/>s and responses back into HTTP.</summary>
internal sealed partial class FhirEndpoint(FhirEngine engine, AccessTokens tokens, AuditLog audit, ILogger<FhirEndpoint> log, bool requireTokens,
    RequestLimitsConfig limits, HeavyRequests heavy)
{
    private const string FhirJsonType = "application/fhir+json; charset=utf-8";
    private const string FhirXmlType = "application/fhir+xml; charset=utf-8";

    /// <summary>The caller of <c>/metadata</c>, the one FHIR route open without a token: it reaches no data.</summary>
    private static readonly AccessGrant Anonymous = new("anonymous", null, null, SmartScopes.Parse(""), null, null);

    /// <summary>The engine behind the API, for the other HTTP faces of the same records (DICOMweb).</summary>
    internal FhirEngine Engine => engine;

    /// <summary>The node's bounds on requests (<c>limits</c> in ward.yaml), for the other HTTP faces' body readers.</summary>
    internal RequestLimitsConfig Limits => limits;

    /// <summary>The count of each caller's expensive requests in progress, shared by every HTTP face.</summary>
    internal HeavyRequests Heavy => heavy;

    /// <summary>
    /// A request on <paramref name="path"/> as seen by the policy and the audit trail, for the HTTP APIs beside FHIR that
    /// act on records (DICOMweb): the caller, purpose, break-the-glass justification and address, and the query as asked.
    /// </summary>
    internal static FhirRequest Describe(HttpContext http, AccessGrant caller, string path)
    {
        var req = http.Request;
        return new FhirRequest
        {
            Method = req.Method.ToUpperInvariant(),
            Path = path,
            Query = [.. req.Query.SelectMany(q => q.Value.Select(v => new KeyValuePair<string, string>(q.Key, v ?? "")))],
            BaseUrl = $"{req.Scheme}://{req.Host}{req.PathBase}/fhir",
            Caller = caller,
            Purpose = Header(req, "Ward-Purpose")?.Trim(),
            BreakGlass = Header(req, "Ward-Break-Glass") is { } glass ? Uri.UnescapeDataString(glass) : null,
            Address = http.Connection.RemoteIpAddress?.ToString(),
        };
    }

    public async System.Threading.Tasks.Task HandleAsync(HttpContext http)
    {
        var xml = WantsXml(http.Request);
        TagMetrics(http);
        try
        {
            var caller = await AuthenticateAsync(http);
            if (caller is null)
            {
                return;
            }
            var path = (http.GetRouteValue("path") as string ?? "").Trim('/');
            // Expensive requests are counted before their body is read: a caller beyond its share reads nothing more.
            using var lease = HeavyRequests.IsHeavy(http.Request.Method.ToUpperInvariant(), path, Query(http.Request)) ? heavy.Enter(caller) : null;
            var request = await ReadAsync(http, caller, path);
            FailureAudit.Request(http, request);
            using var formLease = lease is null && HeavyRequests.IsHeavy(request.Method, request.Path, request.Query) ? heavy.Enter(caller) : null;
            var response = await engine.HandleAsync(request, http.RequestAborted);
            await WriteAsync(http, response, request, xml);
        }
        catch (Exception e)
        {
            if (!ApiCall.IsExpected(e))
            {
                LogUnexpected(log, e.GetType().Name, http.Request.Method, e);
            }
            var (status, outcome) = ApiCall.Outcome(e);
            if (http.Response.HasStarted)
            {
                return;
            }
            http.Response.Clear();
            http.Response.StatusCode = (int)status;
            if (e is FhirException { RetryAfterSeconds: { } retry })
            {
                http.Response.Headers.RetryAfter = retry.ToString(CultureInfo.InvariantCulture);
            }
            await WriteBodyAsync(http, FhirJson.Serialize(outcome), xml);
        }
    }

    /// <summary>
    /// Names the interaction and the resource type on the request's HTTP metrics, whose <c>http.route</c> is the template
    /// <c>/fhir/{**path}</c> for every FHIR request: fixed names only (an interaction, a known resource type or <c>none</c>),
    /// never an id or any other text of the URL.
    /// </summary>
    private static void TagMetrics(HttpContext http)
    {
        if (http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMetricsTagsFeature>() is not { } metrics)
        {
            return;
        }
        var path = (http.GetRouteValue("path") as string ?? "").Trim('/');
        var slash = path.IndexOf('/', StringComparison.Ordinal);
        var type = slash < 0 ? path : path[..slash];
        metrics.Tags.Add(new("fhir.interaction", AuditTrail.Interaction(http.Request.Method.ToUpperInvariant(), path).Subtype));
        metrics.Tags.Add(new("fhir.resource_type", Ward.Core.Search.SearchParameters.IsKnownType(type) ? type : "none"));
    }

    /// <summary>
    /// The caller's grant from the bearer token; without a valid one, answers 401 with <c>WWW-Authenticate</c> (RFC 6750)
    /// and an OperationOutcome, and returns null. Only <c>GET /metadata</c> needs no token.
    /// </summary>
    internal async Task<AccessGrant?> AuthenticateAsync(HttpContext http)
    {
        if (!requireTokens)
        {
            return AccessGrant.Operator;
        }
        var header = http.Request.Headers.Authorization.ToString();
        if (header.Length == 0 && http.Request.Method is "GET" or "HEAD" && (http.GetRouteValue("path") as string ?? "").Trim('/') == "metadata")
        {
            return Anonymous;
        }
        string? error = null;
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) && header.Length > 7)
        {
            var (grant, refused) = await tokens.ValidateAsync(header.AsSpan(7).Trim(), http.RequestAborted);
            if (grant is not null)
            {
                FailureAudit.Caller(http, grant);
                return grant;
            }
            error = refused;
        }
        else if (header.Length > 0)
        {
            error = "The Authorization header must be 'Bearer <access token>'.";
        }
        await audit.RecordAsync([new AuditRecord
        {
            Kind = AuditKind.Login,
            Subtype = "token-refused",
            Action = 'E',
            Status = StatusCodes.Status401Unauthorized,
            RecordedTicks = audit.NowTicks,
            Address = http.Connection.RemoteIpAddress?.ToString(),
        }]);
        FailureAudit.Audited(http);
        http.Response.StatusCode = StatusCodes.Status401Unauthorized;
        http.Response.Headers.WWWAuthenticate = error is null
            ? "Bearer realm=\"ward\""
            : $"Bearer realm=\"ward\", error=\"invalid_token\", error_description=\"{error}\"";
        await WriteBodyAsync(http, FhirJson.Serialize(Outcomes.Error(OperationOutcome.IssueType.Login, error
            ?? "This FHIR API needs an access token (Authorization: Bearer ...). Get one from the authorization server (see /.well-known/smart-configuration).")), WantsXml(http.Request));
        return null;
    }

    private static IEnumerable<KeyValuePair<string, string>> Query(HttpRequest req) =>
        req.Query.SelectMany(q => q.Value.Select(v => new KeyValuePair<string, string>(q.Key, v ?? "")));

    /// <summary>Form fields decoded as strict UTF-8: an invalid sequence is an error, never a replacement character.</summary>
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private async Task<FhirRequest> ReadAsync(HttpContext http, AccessGrant caller, string path)
    {
        var req = http.Request;
        // Check the URL before reading a body, so that a client learns about a bad id or type without sending it.
        var segments = path.Split('/');
        FhirEngine.CheckId(segments);
        FhirEngine.CheckAuditWrite(req.Method.ToUpperInvariant(), segments);
        var query = new List<KeyValuePair<string, string>>();
        foreach (var (key, values) in req.Query)
        {
            foreach (var v in values)
            {
                query.Add(new(key, v ?? ""));
            }
        }
        var prefer = Prefer(req.Headers["Prefer"]);
        var contentType = req.ContentType;
        byte[]? body = null;
        Resource? resource = null;
        var method = req.Method.ToUpperInvariant();
        if (method == "POST" && path.EndsWith("_search", StringComparison.Ordinal) && req.HasFormContentType)
        {
            var raw = await RequestBodies.ReadAsync(req, http.RequestAborted);
            RequestBodies.RequireUtf8(raw);
            Dictionary<string, StringValues> form;
            try
            {
                using var reader = new Microsoft.AspNetCore.WebUtilities.FormReader(new MemoryStream(raw, writable: false), StrictUtf8);
                form = await reader.ReadFormAsync(http.RequestAborted);
            }
            catch (Exception e) when (e is DecoderFallbackException or InvalidDataException)
            {
                throw FhirException.BadRequest($"The search form is malformed: {(e is DecoderFallbackException ? "a value is not valid UTF-8 once percent-decoded" : e.Message)}.");
            }
            foreach (var (key, values) in form)
            {
                foreach (var v in values)
                {
                    query.Add(new(key, v ?? ""));
                }
            }
        }
        else if (method is "POST" or "PUT" or "PATCH")
        {
            body = await RequestBodies.ReadAsync(req, http.RequestAborted);
            if (body.Length > 0)
            {
                RequestBodies.Check(body, contentType, limits);
            }
            if (method != "PATCH")
            {
                resource = ParseBody(body, contentType);
                RequestBodies.CheckBundle(resource, limits);
            }
        }
        return new FhirRequest
        {
            Method = method,
            Path = path,
            Query = query,
            Resource = resource,
            Body = body,
            ContentType = contentType,
            IfMatch = Header(req, "If-Match"),
            IfNoneExist = Header(req, "If-None-Exist"),
            IfNoneMatch = Header(req, "If-None-Match"),
            IfModifiedSince = DateTimeOffset.TryParse(Header(req, "If-Modified-Since"), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var ims) ? ims : null,
            Return = prefer.Return,
            Strict = prefer.Strict,
            BaseUrl = $"{req.Scheme}://{req.Host}{req.PathBase}/fhir",
            Caller = caller,
            Purpose = Header(req, "Ward-Purpose")?.Trim(),
            // Free text: clients percent-encode what is not ASCII.
            BreakGlass = Header(req, "Ward-Break-Glass") is { } glass ? Uri.UnescapeDataString(glass) : null,
            Address = http.Connection.RemoteIpAddress?.ToString(),
        };
    }

    private static string? Header(HttpRequest req, string name) =>
        req.Headers.TryGetValue(name, out var v) && !StringValues.IsNullOrEmpty(v) ? v.ToString() : null;

    private static Resource ParseBody(byte[] body, string? contentType)
    {
        var media = (contentType ?? "application/fhir+json").Split(';')[0].Trim().ToLowerInvariant();
        return media switch
        {
            "application/fhir+json" or "application/json" or "text/json" => FhirJson.Parse(body),
            "application/fhir+xml" or "application/xml" or "text/xml" => FhirJson.ParseXml(Encoding.UTF8.GetString(body)),
            _ => throw new FhirException(System.Net.HttpStatusCode.UnsupportedMediaType, OperationOutcome.IssueType.NotSupported,
                $"Content-Type '{media}' is not supported: send application/fhir+json or application/fhir+xml."),
        };
    }

    private static (ReturnPreference Return, bool Strict) Prefer(StringValues values)
    {
        var ret = ReturnPreference.Representation;
        var strict = false;
        foreach (var value in values)
        {
            foreach (var token in (value ?? "").Split([',', ';'], StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                switch (token.ToLowerInvariant())
                {
                    case "return=minimal": ret = ReturnPreference.Minimal; break;
                    case "return=representation": ret = ReturnPreference.Representation; break;
                    case "return=operationoutcome": ret = ReturnPreference.OperationOutcome; break;
                    case "handling=strict": strict = true; break;
                    case "handling=lenient": strict = false; break;
                }
            }
        }
        return (ret, strict);
    }

    private static bool WantsXml(HttpRequest req)
    {
        var format = req.Query["_format"].ToString();
        if (format.Length > 0)
        {
            return format.Contains("xml", StringComparison.OrdinalIgnoreCase);
        }
        var accept = req.Headers.Accept.ToString();
        return accept.Contains("xml", StringComparison.OrdinalIgnoreCase) && !accept.Contains("json", StringComparison.OrdinalIgnoreCase);
    }

    private static async System.Threading.Tasks.Task WriteAsync(HttpContext http, FhirResponse response, FhirRequest request, bool xml)
    {
        var res = http.Response;
        res.StatusCode = response.Status;
        if (response.ETag is { } etag)
        {
            res.Headers.ETag = etag;
        }
        if (response.LastModified is { } lm)
        {
            res.Headers.LastModified = lm.ToString("R", CultureInfo.InvariantCulture);
        }
        if (response.Location is { } location && response.Status is 200 or 201)
        {
            res.Headers[response.Status == 201 ? "Location" : "Content-Location"] = $"{request.BaseUrl}/{location}";
        }
        var isWrite = request.Method is "POST" or "PUT" or "PATCH" && response.Status is 200 or 201 && request.Path.Length > 0 && !request.Path.EndsWith("_search", StringComparison.Ordinal);
        if (response.Body is null || response.Status == 304)
        {
            return;
        }
        if (isWrite && request.Return == ReturnPreference.Minimal)
        {
            return;
        }
        if (isWrite && request.Return == ReturnPreference.OperationOutcome)
        {
            await WriteBodyAsync(http, FhirJson.Serialize(Outcomes.Information($"{request.Method} succeeded: {response.Location}")), xml);
            return;
        }
        await WriteBodyAsync(http, response.Body, xml);
    }

    private static async System.Threading.Tasks.Task WriteBodyAsync(HttpContext http, byte[] json, bool xml)
    {
        if (xml)
        {
            var text = FhirJson.ToXml(FhirJson.Parse(json));
            http.Response.ContentType = FhirXmlType;
            await http.Response.WriteAsync(text, http.RequestAborted);
            return;
        }
        http.Response.ContentType = FhirJsonType;
        http.Response.ContentLength = json.Length;
        await http.Response.Body.WriteAsync(json, http.RequestAborted);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Unexpected {ExceptionType} while handling a FHIR {Method} request")]
    private static partial void LogUnexpected(ILogger logger, string exceptionType, string method, Exception exception);
}
