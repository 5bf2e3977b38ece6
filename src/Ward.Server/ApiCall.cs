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
    public static async Task RunAsync(HttpContext http, FhirEndpoint fhir, Func<AccessGrant, bool> admits, string refusal, Func<AccessGrant, CancellationToken, Task<IResult>> work)
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
            result = await work(caller, http.RequestAborted);
        }
        catch (Exception e) when (e is FhirException or AuditUnavailableException or StoreUnavailableException or AuditIntegrityException or Ward.Core.Crypto.RecordIntegrityException)
        {
            var (status, outcome) = Outcomes.FromException(e);
            http.Response.StatusCode = (int)status;
            result = Results.Bytes(FhirJson.Serialize(outcome), "application/fhir+json; charset=utf-8");
        }
        await result.ExecuteAsync(http);
    }
}
