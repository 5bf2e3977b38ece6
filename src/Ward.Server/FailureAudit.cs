using System.Net;
using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Search;
using Ward.Core.Storage;
using Ward.Server.Identity;

namespace Ward.Server;

/// <summary>
/// The outer error boundary of the node's APIs (FHIR, DICOMweb, <c>/audit</c>, <c>/research</c>): every request that ends
/// with a status of 400 or more lands in the audit log, with its outcome, its caller and what it asked for (ids and
/// blinded query values, never patient data), whatever produced it: the engine (which records its own refusals and
/// failures, and is not recorded twice), the HTTP layer before it (a malformed URL or body, 413, 415), routing (an
/// unknown route's 404, a wrong method's 405), or an exception nothing else caught (answered here, as an
/// OperationOutcome from the one mapping of errors). The OAuth and sign-in endpoints keep their own records.
/// If the record cannot be written, the request has failed anyway; the gap is logged (without data).
/// </summary>
internal sealed partial class FailureAudit(RequestDelegate next, AuditLog audit, RecordStore store, AccessTokens tokens, FhirEndpoint fhir, ILogger<FailureAudit> log)
{
    private const string CallerKey = "ward.caller";
    private const string RequestKey = "ward.request";
    private const string AuditedKey = "ward.audited";

    /// <summary>The authenticated caller of the request, for its failure record.</summary>
    public static void Caller(HttpContext http, AccessGrant caller) => http.Items[CallerKey] = caller;

    /// <summary>The request as the engine sees it: its failure is recorded by the engine when its trail has been recorded.</summary>
    public static void Request(HttpContext http, FhirRequest request) => http.Items[RequestKey] = request;

    /// <summary>The outcome of the request is already in the audit log (a refused token, a research question's refusal).</summary>
    public static void Audited(HttpContext http) => http.Items[AuditedKey] = true;

    /// <summary>The API a path belongs to; null for the pages and endpoints this boundary does not cover.</summary>
    private static string? Api(PathString path) =>
        path.StartsWithSegments("/fhir") ? "fhir"
        : path.StartsWithSegments("/dicomweb") ? "dicomweb"
        : path.StartsWithSegments("/audit") ? "audit"
        : path.StartsWithSegments("/research") ? "research"
        : null;

    public async System.Threading.Tasks.Task InvokeAsync(HttpContext http)
    {
        if (Api(http.Request.Path) is not { } api)
        {
            await next(http);
            return;
        }
        // Recorded as the answer starts, so that the entry is in the log before the caller has the answer.
        http.Response.OnStarting(() => http.Response.StatusCode >= 400 ? RecordAsync(http, api, http.Response.StatusCode) : System.Threading.Tasks.Task.CompletedTask);
        try
        {
            await next(http);
        }
        catch (Exception e)
        {
            if (!ApiCall.IsExpected(e))
            {
                LogUnexpected(log, e.GetType().Name, api, e);
            }
            if (http.Response.HasStarted)
            {
                await RecordAsync(http, api, StatusCodes.Status500InternalServerError);
                throw;
            }
            var (status, outcome) = ApiCall.Outcome(e);
            http.Response.Clear();
            http.Response.StatusCode = (int)status;
            http.Response.Headers.CacheControl = "no-store";
            if (!http.RequestAborted.IsCancellationRequested)
            {
                await Results.Bytes(FhirJson.Serialize(outcome), "application/fhir+json; charset=utf-8").ExecuteAsync(http);
            }
        }
        if (!http.Response.HasStarted && http.Response.StatusCode >= 400)
        {
            // An answer without a body starts after this returns: record it now rather than after it has gone.
            await RecordAsync(http, api, http.Response.StatusCode);
        }
    }

    private static bool AlreadyAudited(HttpContext http) =>
        http.Items.ContainsKey(AuditedKey) || http.Items[RequestKey] is FhirRequest { Trail.Recorded: true };

    /// <summary>Records a failed request once, unless the engine or the endpoint has already recorded it.</summary>
    private async System.Threading.Tasks.Task RecordAsync(HttpContext http, string api, int status)
    {
        if (AlreadyAudited(http))
        {
            return;
        }
        Audited(http);
        try
        {
            await audit.RecordAsync([await DescribeAsync(http, api, status)]);
        }
        catch (Exception e) when (e is AuditUnavailableException or StoreUnavailableException or OperationCanceledException)
        {
            LogNotAudited(log, status, api);
        }
    }

    /// <summary>What the failed request was: its caller (from the token, when the request got no further), the interaction, the resource it named, its query blinded.</summary>
    private async Task<AuditRecord> DescribeAsync(HttpContext http, string api, int status)
    {
        var caller = http.Items[CallerKey] as AccessGrant ?? await IdentifyAsync(http);
        var segments = (http.Request.Path.Value ?? "").Trim('/').Split('/');
        if (api == "fhir" && caller is not null)
        {
            // As the engine records an interaction: its subtype, the resource named, the query with identifying values blinded.
            var path = string.Join('/', segments.Skip(1));
            var trail = new AuditTrail(FhirEndpoint.Describe(http, caller, path), store.Keys.Blind);
            if (segments is [_, var type, var id, ..] && SearchParameters.IsKnownType(type) && ReferenceParser.IsValidId(id))
            {
                trail.Target = (type, id);
            }
            return trail.Records(status, audit.NowTicks)[0];
        }
        var method = http.Request.Method.ToUpperInvariant();
        var (subtype, action, entity) = api switch
        {
            "dicomweb" => Dicom(method, segments),
            "audit" => (segments is [_, "key" or "checkpoint" or "proof" or "entries", ..] ? "audit-" + segments[1] : "audit-api", 'R',
                segments is [_, "entries", var index] && long.TryParse(index, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _) ? $"AuditEvent/{index}" : null),
            "research" => (segments is [_, "query" or "budget"] ? "research-" + segments[1] : "research-api", method == "POST" ? 'E' : 'R', null),
            _ => ("request", 'E', null),
        };
        return new AuditRecord
        {
            Kind = api is "fhir" or "dicomweb" ? AuditKind.Rest : AuditKind.Admin,
            Subtype = subtype,
            Action = action,
            Status = status,
            RecordedTicks = audit.NowTicks,
            Subject = caller?.Subject,
            Role = caller?.Role,
            FhirUser = caller?.FhirUser,
            ClientId = caller?.ClientId,
            Purpose = caller?.Purpose,
            Address = http.Connection.RemoteIpAddress?.ToString(),
            Query = BlindQuery(http.Request.Query),
            Entities = entity is null ? [] : [new AuditEntity(entity)],
        };
    }

    /// <summary>A DICOMweb request as an interaction on ImagingStudy: its subtype and action, and the study it named (by its resource id, a blind of the UID).</summary>
    private (string Subtype, char Action, string? Entity) Dicom(string method, string[] segments)
    {
        var study = segments is [_, "studies", var uid, ..] && uid.Length is > 0 and <= 64 && uid.All(c => char.IsAsciiDigit(c) || c == '.')
            ? $"ImagingStudy/{fhir.Engine.StudyResourceId(uid)}"
            : null;
        return (method, segments.Length) switch
        {
            ("POST", _) => ("create", 'C', study),
            ("GET", 2) or ("GET", 4) when segments[^1] is "studies" or "series" or "instances" => ("search-type", 'R', study),
            ("GET", 6) when segments[^1] == "instances" => ("search-type", 'R', study),
            ("GET", _) => ("read", 'R', study),
            _ => ("operation", 'E', study),
        };
    }

    /// <summary>The query with every value blinded (HMAC under the index key): beside FHIR, no parameter is known not to identify someone.</summary>
    private string? BlindQuery(IQueryCollection query) => query.Count == 0 ? null : string.Join('&', query.SelectMany(q => q.Value.Select(v =>
        $"{Uri.EscapeDataString(q.Key)}=blind:{store.Keys.Blind.Hash('a', q.Key, v ?? "")}")));

    /// <summary>The caller a bearer token names, for a request that failed before anything authenticated it (an unknown route).</summary>
    private async Task<AccessGrant?> IdentifyAsync(HttpContext http)
    {
        var header = http.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) || header.Length <= 7)
        {
            return null;
        }
        try
        {
            return (await tokens.ValidateAsync(header.AsSpan(7).Trim(), CancellationToken.None)).Grant;
        }
        catch (Exception e) when (e is StoreUnavailableException or OperationCanceledException)
        {
            return null;
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Unexpected {ExceptionType} while handling a request of the {Api} API")]
    private static partial void LogUnexpected(ILogger logger, string exceptionType, string api, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A failed request of the {Api} API (status {Status}) could not be recorded in the audit log")]
    private static partial void LogNotAudited(ILogger logger, int status, string api);
}
