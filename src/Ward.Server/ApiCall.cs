using Microsoft.AspNetCore.Http;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Storage;

namespace Ward.Server;

/// <summary>
/// One call of the node's HTTP APIs beside FHIR (<c>/audit</c>, <c>/research</c>): never cached, the caller authenticated
/// as for FHIR (401 otherwise), refused with 403 unless the API admits them, and failures answered as OperationOutcomes
/// by the one mapping of errors (<see cref="Outcomes"/>).
/// </summary>
internal static class ApiCall
{
    /// <param name="heavy">An expensive call (STOW-RS, WADO-RS, research questions): counted against the caller's share of them before any body is read (429 beyond).</param>
    public static async Task RunAsync(HttpContext http, FhirEndpoint fhir, Func<AccessGrant, bool> admits, string refusal, Func<AccessGrant, CancellationToken, Task<IResult>> work,
        bool heavy = false)
    {
        http.Response.Headers.CacheControl = "no-store";
        IResult result;
        try
        {
            var caller = await fhir.AuthenticateAsync(http);
            if (caller is null)
            {
                return;
            }
            if (!admits(caller))
            {
                throw FhirException.Forbidden(refusal);
            }
            using var lease = heavy ? fhir.Heavy.Enter(caller) : null;
            result = await work(caller, http.RequestAborted);
        }
        catch (Exception e) when (e is FhirException or AuditUnavailableException or StoreUnavailableException or AuditIntegrityException or BadHttpRequestException or Ward.Core.Crypto.RecordIntegrityException)
        {
            var (status, outcome) = Outcome(e);
            http.Response.StatusCode = (int)status;
            if (e is FhirException { RetryAfterSeconds: { } retry })
            {
                http.Response.Headers.RetryAfter = retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            result = Results.Bytes(FhirJson.Serialize(outcome), "application/fhir+json; charset=utf-8");
        }
        await result.ExecuteAsync(http);
    }

    /// <summary>Whether a failure of the HTTP APIs is an answer given on purpose (<see cref="Outcomes.IsExpected"/>, or a
    /// request the HTTP layer refused as too large or malformed), not one to log as unexpected.</summary>
    public static bool IsExpected(Exception e) => e is BadHttpRequestException || Outcomes.IsExpected(e);

    /// <summary>
    /// The status and OperationOutcome of a failure of the HTTP APIs: <see cref="Outcomes"/> for what is thrown below the
    /// HTTP layer, and the HTTP layer's own (a body over the size limit, a malformed request).
    /// </summary>
    public static (System.Net.HttpStatusCode Status, Hl7.Fhir.Model.OperationOutcome Outcome) Outcome(Exception e) => e is BadHttpRequestException bad
        ? ((System.Net.HttpStatusCode)bad.StatusCode, bad.StatusCode == StatusCodes.Status413PayloadTooLarge
            ? Outcomes.Error(Hl7.Fhir.Model.OperationOutcome.IssueType.TooCostly, "The request body is larger than this node accepts (max-request-body-bytes in ward.yaml).")
            : Outcomes.Error(Hl7.Fhir.Model.OperationOutcome.IssueType.Invalid, "The HTTP request is malformed."))
        : Outcomes.FromException(e);
}
