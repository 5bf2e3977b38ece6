using System.Globalization;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Storage;

namespace Ward.Server;

/// <summary>
/// The audit log for verifiers, under <c>/audit</c>: the latest signed checkpoint (C2SP signed note), inclusion and
/// consistency proofs (RFC 9162, hashes in base64), the stored entries (the exact leaf bytes), and the node's verifier
/// key. The security officer and the data protection officer see everything; a patient sees their own entries and the
/// checkpoints and consistency proofs (which name nobody).
/// </summary>
internal static class AuditEndpoints
{
    public static void Map(WebApplication app, FhirEndpoint fhir, AuditLog audit, RecordStore store)
    {
        app.MapGet("/audit/key", () => Results.Text(audit.Verifier.VKey + "\n", "text/plain; charset=utf-8"));
        app.MapGet("/audit/checkpoint", http => RunAsync(http, fhir, store, async (caller, ct) =>
            Results.Text(await audit.LatestCheckpointAsync(ct), "text/plain; charset=utf-8")));
        app.MapGet("/audit/proof/inclusion", http => RunAsync(http, fhir, store, async (caller, ct) =>
        {
            var index = Number(http, "index");
            var size = Number(http, "size");
            var response = await store.ReadAsync(s =>
            {
                CheckSize(s, size, "size");
                if (index < 0 || index >= size)
                {
                    throw FhirException.BadRequest($"index must be at least 0 and below size ({size}).");
                }
                var data = Entry(s, index);
                CheckOwn(caller, AuditRecord.PatientOf(data), index);
                return new InclusionProof(index, size, Convert.ToBase64String(Merkle.LeafHash(data)),
                    [.. Merkle.InclusionProof(index, size, AuditLog.Subtrees(s)).Select(Convert.ToBase64String)]);
            }, ct);
            return Results.Json(response, AuditJson.Default.InclusionProof);
        }));
        app.MapGet("/audit/proof/consistency", http => RunAsync(http, fhir, store, async (caller, ct) =>
        {
            var from = Number(http, "from");
            var to = Number(http, "to");
            var response = await store.ReadAsync(s =>
            {
                CheckSize(s, to, "to");
                if (from < 1 || from > to)
                {
                    throw FhirException.BadRequest($"from must be at least 1 and at most to ({to}).");
                }
                return new ConsistencyProof(from, to, [.. Merkle.ConsistencyProof(from, to, AuditLog.Subtrees(s)).Select(Convert.ToBase64String)]);
            }, ct);
            return Results.Json(response, AuditJson.Default.ConsistencyProof);
        }));
        app.MapGet("/audit/entries/{index}", http => RunAsync(http, fhir, store, async (caller, ct) =>
        {
            if (!long.TryParse(http.GetRouteValue("index") as string, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
            {
                throw FhirException.BadRequest("The entry index is a whole number.");
            }
            var data = await store.ReadAsync(s => Entry(s, index), ct);
            var patient = AuditRecord.PatientOf(data);
            CheckOwn(caller, patient, index);
            await audit.RecordAsync([AuditRecord.Of(AuditKind.Admin, caller, http.Connection.RemoteIpAddress?.ToString(), "audit-entry-read", 'R', 200, audit.NowTicks,
                [new AuditEntity($"AuditEvent/{index.ToString(CultureInfo.InvariantCulture)}")], patient: patient)]);
            return Results.Bytes(data, "application/fhir+json; charset=utf-8");
        }));
    }

    /// <summary>
    /// Runs an audit API call. What it shows (a checkpoint, entries, proofs) may have been committed by another writer
    /// a moment before that commit was flushed: the answer waits until it is durable, so that no witness ever holds a
    /// checkpoint or proof that a crash could take back.
    /// </summary>
    private static System.Threading.Tasks.Task RunAsync(HttpContext http, FhirEndpoint fhir, RecordStore store, Func<AccessGrant, CancellationToken, Task<IResult>> work) =>
        ApiCall.RunAsync(http, fhir, caller => FhirEngine.ReadsAudit(caller) || (caller.Role == "patient" && caller.Patient is not null),
            "The audit log is open to the security officer and the data protection officer, and to each patient for their own entries.", async (caller, ct) =>
            {
                var result = await work(caller, ct);
                await store.SettledAsync();
                return result;
            });

    private static long Number(HttpContext http, string name) =>
        long.TryParse(http.Request.Query[name].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw FhirException.BadRequest($"The query needs {name}, a whole number.");

    /// <summary>Proofs are served for tree sizes up to the latest signed checkpoint, so that the root they lead to is one the node signed.</summary>
    private static void CheckSize(StoreSession s, long size, string name)
    {
        var signed = s.AuditLatestCheckpoint()?.Size ?? 0;
        if (size < 1 || size > signed)
        {
            throw FhirException.BadRequest($"{name} must be between 1 and the size of the latest checkpoint ({signed}).");
        }
    }

    private static byte[] Entry(StoreSession s, long index) =>
        s.AuditEntry(index) ?? throw FhirException.NotFound($"The audit log has no entry {index}.");

    private static void CheckOwn(AccessGrant caller, string? patient, long index)
    {
        if (!FhirEngine.ReadsAudit(caller) && patient != caller.Patient)
        {
            throw FhirException.NotFound($"The audit log has no entry {index} among your entries.");
        }
    }
}

internal sealed record InclusionProof(long Index, long Size, string LeafHash, string[] Hashes);

internal sealed record ConsistencyProof(long From, long To, string[] Hashes);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(InclusionProof))]
[JsonSerializable(typeof(ConsistencyProof))]
internal sealed partial class AuditJson : JsonSerializerContext;
