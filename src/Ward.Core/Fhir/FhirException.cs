using System.Net;
using Hl7.Fhir.Model;
using Ward.Core.Crypto;

namespace Ward.Core.Fhir;

/// <summary>
/// An expected failure that the client must see as an OperationOutcome with the given HTTP status.
/// Thrown anywhere below the HTTP layer; mapped to a response in exactly one place (<see cref="Outcomes"/>).
/// </summary>
internal sealed class FhirException(HttpStatusCode status, OperationOutcome.IssueType code, string message, string? expression = null)
    : Exception(message)
{
    public HttpStatusCode Status { get; } = status;
    public OperationOutcome.IssueType Code { get; } = code;
    public string? Expression { get; } = expression;

    /// <summary>Seconds after which the caller may try again (the <c>Retry-After</c> header of a 429 or 503).</summary>
    public int? RetryAfterSeconds { get; init; }

    /// <summary>
    /// The conditional reference (<c>Type?criteria</c>) of a transaction that matched no resource, when that is why it
    /// failed: the resource it names may simply not be loaded yet (an importer retries the transaction after the others).
    /// </summary>
    public string? UnresolvedReference { get; init; }

    public static FhirException BadRequest(string message, OperationOutcome.IssueType code = OperationOutcome.IssueType.Invalid) =>
        new(HttpStatusCode.BadRequest, code, message);

    public static FhirException NotFound(string message) =>
        new(HttpStatusCode.NotFound, OperationOutcome.IssueType.NotFound, message);

    public static FhirException Gone(string message) =>
        new(HttpStatusCode.Gone, OperationOutcome.IssueType.Deleted, message);

    public static FhirException Conflict(string message) =>
        new(HttpStatusCode.Conflict, OperationOutcome.IssueType.Conflict, message);

    public static FhirException PreconditionFailed(string message) =>
        new(HttpStatusCode.PreconditionFailed, OperationOutcome.IssueType.Conflict, message);

    public static FhirException Forbidden(string message) =>
        new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, message);

    /// <summary>A request beyond one of the node's fixed bounds (<c>limits</c> in ward.yaml): 413, nothing done.</summary>
    public static FhirException TooLarge(string message) =>
        new(HttpStatusCode.RequestEntityTooLarge, OperationOutcome.IssueType.TooCostly, message);

    /// <summary>A caller with too many expensive requests in progress: 429, try again after <paramref name="retryAfter"/> seconds.</summary>
    public static FhirException TooMany(string message, int retryAfter) =>
        new(HttpStatusCode.TooManyRequests, OperationOutcome.IssueType.Throttled, message) { RetryAfterSeconds = retryAfter };

    public static FhirException NotSupported(string message) =>
        new(HttpStatusCode.BadRequest, OperationOutcome.IssueType.NotSupported, message);
}

/// <summary>The one place where failures become OperationOutcomes.</summary>
internal static class Outcomes
{
    public static OperationOutcome Error(OperationOutcome.IssueType code, string message, string? expression = null) =>
        Issue(OperationOutcome.IssueSeverity.Error, code, message, expression);

    public static OperationOutcome Information(string message) =>
        Issue(OperationOutcome.IssueSeverity.Information, OperationOutcome.IssueType.Informational, message, null);

    public static OperationOutcome Issue(OperationOutcome.IssueSeverity severity, OperationOutcome.IssueType code, string message, string? expression)
    {
        var issue = new OperationOutcome.IssueComponent
        {
            Severity = severity,
            Code = code,
            Diagnostics = message,
            Details = new CodeableConcept { Text = message },
        };
        if (expression is not null)
        {
            issue.Expression = [expression];
        }
        return new OperationOutcome { Issue = [issue] };
    }

    /// <summary>Maps any exception to (status, outcome). Unexpected exceptions never leak their message: it may hold data.</summary>
    /// <summary>
    /// Whether a failure is an answer the node gives on purpose, not a fault: what the engine refuses or cannot find (a
    /// <see cref="FhirException"/>: 400, 404, 412 ...), an erased record (410), a damaged record (the key ring has logged it,
    /// by type and version), a cancelled request. The HTTP boundaries log only the others, as unexpected.
    /// </summary>
    public static bool IsExpected(Exception exception) =>
        exception is FhirException or RecordErasedException or RecordIntegrityException or OperationCanceledException;

    public static (HttpStatusCode Status, OperationOutcome Outcome) FromException(Exception exception) => exception switch
    {
        FhirException f => (f.Status, Error(f.Code, f.Message, f.Expression)),
        RecordErasedException e => (HttpStatusCode.Gone, Error(OperationOutcome.IssueType.Deleted,
            $"{e.Type}/{e.Id} was erased: its patient's data key was destroyed (crypto-shredding), so no version of it can be read again.")),
        RecordIntegrityException e => (HttpStatusCode.InternalServerError, Error(OperationOutcome.IssueType.Exception,
            $"{e.Type}/{e.Id} version {e.Version} failed its integrity check: the stored record was altered or swapped outside this node. "
            + "It is not served. The event was logged for the security officer.")),
        Storage.StoreUnavailableException e => (HttpStatusCode.ServiceUnavailable, Error(OperationOutcome.IssueType.Transient, e.Message)),
        Audit.AuditUnavailableException e => (HttpStatusCode.ServiceUnavailable, Error(OperationOutcome.IssueType.Transient, e.Message)),
        OperationCanceledException => ((HttpStatusCode)499, Error(OperationOutcome.IssueType.Timeout, "The request was cancelled.")),
        _ => (HttpStatusCode.InternalServerError, Error(OperationOutcome.IssueType.Exception,
            "The server failed to process the request. The error was logged; nothing was changed.")),
    };
}
