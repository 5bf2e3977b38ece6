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
        catch (Exception e) when (e is FhirException or AuditUnavailableException or StoreUnavailableException or AuditIntegrityException)
        {
            var (status, outcome) = Outcomes.FromException(e);
            http.Response.StatusCode = (int)status;
            if (e is FhirException { RetryAfterSeconds: { } retry })
            {
                http.Response.Headers.RetryAfter = retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            result = Results.Bytes(FhirJson.Serialize(outcome), "application/fhir+json; charset=utf-8");
        }
        await result.ExecuteAsync(http);
    }
}
