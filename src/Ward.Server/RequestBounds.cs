using Hl7.Fhir.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Ward.Core.Fhir;
using Ward.Core.Node;

namespace Ward.Server;

/// <summary>
/// The bounds every request meets before any endpoint sees it: at most <c>max-concurrent-requests</c> in progress on
/// the node (503 with <c>Retry-After</c> beyond, instead of running out of memory), no compressed body (415: nothing is
/// ever decompressed, so no small body expands into a large one), and on the routes that are reached before the caller
/// is authenticated (sign-in pages, token and other OAuth endpoints) a body of at most <c>max-unauthenticated-body-bytes</c>.
/// The APIs behind bearer tokens check the token before they read a body (<see cref="FhirEndpoint.AuthenticateAsync"/>).
/// </summary>
internal sealed class RequestBounds(RequestLimitsConfig limits)
{
    private int _inProgress;

    /// <summary>Seconds an overloaded node asks callers to wait (<c>Retry-After</c>).</summary>
    public const int RetryAfterSeconds = 2;

    /// <summary>The route prefixes whose callers present a bearer token that is checked before the body is read.</summary>
    private static readonly string[] Authenticated = ["/fhir", "/dicomweb", "/research", "/audit"];

    /// <summary>The requests the node is working on now (the health check aside).</summary>
    public int InProgress => Volatile.Read(ref _inProgress);

    public void Use(WebApplication app)
    {
        app.Use(async (http, next) =>
        {
            // The health checks and the metrics answer even when the node is saturated: they are how an operator learns why.
            if (http.Request.Path.StartsWithSegments("/health") || http.Request.Path.StartsWithSegments(MetricsEndpoint.Path))
            {
                await next(http);
                return;
            }
            if (Interlocked.Increment(ref _inProgress) > limits.MaxConcurrentRequests)
            {
                Interlocked.Decrement(ref _inProgress);
                http.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                await RefuseAsync(http, StatusCodes.Status503ServiceUnavailable, OperationOutcome.IssueType.Transient,
                    $"The node is working on as many requests as it takes at once (limits: max-concurrent-requests in ward.yaml); try again in {RetryAfterSeconds} s.");
                return;
            }
            try
            {
                if (http.Request.Headers.ContentEncoding is { Count: > 0 } encoding && encoding.Any(e => !string.Equals(e?.Trim(), "identity", StringComparison.OrdinalIgnoreCase)))
                {
                    await RefuseAsync(http, StatusCodes.Status415UnsupportedMediaType, OperationOutcome.IssueType.NotSupported,
                        "This node takes request bodies uncompressed (no Content-Encoding): it never decompresses what a caller sends.");
                    return;
                }
                if (!Authenticated.Any(p => http.Request.Path.StartsWithSegments(p)) && http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
                {
                    size.MaxRequestBodySize = Math.Min(size.MaxRequestBodySize ?? long.MaxValue, limits.MaxUnauthenticatedBodyBytes);
                }
                await next(http);
            }
            catch (Exception thrown) when (!http.Response.HasStarted && BadRequestIn(thrown) is { } e)
            {
                // A body beyond its bound, met by a reader that does not answer for itself (the OAuth endpoints' and the
                // sign-in pages' form readers, antiforgery's among them, which wrap it).
                http.Response.Clear();
                await RefuseAsync(http, e.StatusCode, e.StatusCode == StatusCodes.Status413PayloadTooLarge ? OperationOutcome.IssueType.TooCostly : OperationOutcome.IssueType.Invalid,
                    e.StatusCode == StatusCodes.Status413PayloadTooLarge
                        ? "The request body is larger than this node accepts here (limits: max-unauthenticated-body-bytes, max-request-body-bytes in ward.yaml)."
                        : "The HTTP request is malformed.");
            }
            finally
            {
                Interlocked.Decrement(ref _inProgress);
            }
        });
    }

    private static BadHttpRequestException? BadRequestIn(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is BadHttpRequestException bad)
            {
                return bad;
            }
        }
        return null;
    }

    private static async System.Threading.Tasks.Task RefuseAsync(HttpContext http, int status, OperationOutcome.IssueType code, string message)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/fhir+json; charset=utf-8";
        await http.Response.Body.WriteAsync(FhirJson.Serialize(Outcomes.Error(code, message)), http.RequestAborted);
    }
}
