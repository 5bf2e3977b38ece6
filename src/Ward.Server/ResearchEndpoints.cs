using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Privacy;
using Ward.Core.Storage;
using Ward.Server.Identity;

namespace Ward.Server;

/// <summary>
/// Aggregate questions for researchers, under <c>/research</c>: <c>POST /research/query</c> answers a count or histogram
/// with the discrete Laplace mechanism and charges ε to the caller's budget (refused once spent); <c>GET /research/budget</c>
/// tells what remains. Only the researcher role asks, and each question is in the audit log before its answer leaves.
/// </summary>
internal static class ResearchEndpoints
{
    public static void Map(WebApplication app, FhirEndpoint fhir, AuditLog audit, RecordStore store, TimeProvider time)
    {
        app.MapPost("/research/query", http => RunAsync(http, fhir, audit, heavy: true, async (caller, ct) =>
        {
            var query = await ReadQueryAsync(http, fhir.Limits, ct);
            var answer = await PrivateCounts.AskAsync(store, store.Keys.Blind, caller.Subject, query, time.GetUtcNow().UtcDateTime, ct);
            await RecordAsync(audit, http, caller, 200, query.Describe());
            return Json(answer.Write);
        }));
        app.MapGet("/research/budget", http => RunAsync(http, fhir, audit, heavy: false, async (caller, ct) =>
        {
            var (budget, spent) = await store.ReadAsync(s => s.EpsilonOf(caller.Subject), ct);
            return Json(json =>
            {
                json.WriteStartObject();
                json.WriteNumber("budget", budget);
                json.WriteNumber("spent", spent);
                json.WriteNumber("remaining", Math.Max(0, budget - spent));
                json.WriteEndObject();
            });
        }));
    }

    private static IResult Json(Action<Utf8JsonWriter> write)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            write(json);
        }
        return Results.Bytes(buffer.WrittenMemory.ToArray(), "application/json; charset=utf-8");
    }

    private static async Task<CountQuery> ReadQueryAsync(HttpContext http, Ward.Core.Node.RequestLimitsConfig limits, CancellationToken ct)
    {
        var body = await RequestBodies.ReadAsync(http.Request, ct);
        RequestBodies.RequireUtf8(body);
        RequestBodies.CheckJson(body, limits);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = limits.MaxBodyDepth });
        }
        catch (JsonException e)
        {
            throw FhirException.BadRequest($"The question is a JSON object (count, by, codes, epsilon): {e.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw FhirException.BadRequest("The question is a JSON object (count, by, codes, epsilon).");
            }
            List<string> Strings(string name) => root.TryGetProperty(name, out var a)
                ? a.ValueKind == JsonValueKind.Array && a.EnumerateArray().All(v => v.ValueKind == JsonValueKind.String)
                    ? [.. a.EnumerateArray().Select(v => v.GetString()!)]
                    : throw FhirException.BadRequest($"'{name}' is an array of strings.")
                : [];
            var count = root.TryGetProperty("count", out var c) ? c.ValueKind == JsonValueKind.String ? c.GetString() : throw FhirException.BadRequest("'count' is a string.") : null;
            var epsilon = root.TryGetProperty("epsilon", out var e) && e.ValueKind == JsonValueKind.Number ? e.GetDouble() : throw FhirException.BadRequest("'epsilon' (a number) is required.");
            return new CountQuery(count, Strings("by"), Strings("codes"), epsilon);
        }
    }

    private static Task RecordAsync(AuditLog audit, HttpContext http, AccessGrant caller, int status, string what) =>
        audit.RecordAsync([AuditRecord.Of(AuditKind.Admin, caller, http.Connection.RemoteIpAddress?.ToString(), "research-query", 'E', status, audit.NowTicks,
            [new AuditEntity($"research-budget/{caller.Subject}")], purpose: "HRESCH", query: what)]);

    /// <summary>A call of the researcher role; a malformed question (400) or one over budget (403) is audited, and charges nothing.</summary>
    private static Task RunAsync(HttpContext http, FhirEndpoint fhir, AuditLog audit, bool heavy, Func<AccessGrant, CancellationToken, Task<IResult>> work) =>
        ApiCall.RunAsync(http, fhir, caller => caller.Role == Roles.Researcher, "Aggregate research questions are for the researcher role.", async (caller, ct) =>
        {
            try
            {
                return await work(caller, ct);
            }
            catch (Exception e) when (e is PrivacyException or BudgetException)
            {
                await RecordAsync(audit, http, caller, e is BudgetException ? 403 : 400, e.Message);
                FailureAudit.Audited(http);
                throw e is BudgetException ? FhirException.Forbidden(e.Message) : FhirException.BadRequest(e.Message);
            }
        }, heavy);
}
