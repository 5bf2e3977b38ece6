using System.Data.Common;
using Ward.Core.Audit;
using Ward.Core.Storage;

namespace Ward.Server;

/// <summary>What <c>/health/ready</c> found: <c>ok</c> or what is wrong, for each thing the node needs to serve.</summary>
internal sealed record ReadinessReport(string Status, string Database, string Audit, string Keys);

/// <summary>
/// Whether the node can serve requests now (<c>/health/ready</c>, 503 otherwise): the database answers, the audit log
/// takes events (every request waits for its audit entry, so a node that cannot write it refuses everything), and the
/// keys are in memory. Liveness (<c>/health/live</c>) asks nothing of them: a node that is not ready is still alive.
/// </summary>
internal sealed class Readiness(RecordStore store, AuditLog audit)
{
    /// <summary>How long the audit probe of a failing log may take before it counts as failed again.</summary>
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(5);

    public async Task<ReadinessReport> CheckAsync(CancellationToken ct)
    {
        var database = Database();
        var auditProblem = await AuditAsync(ct);
        var keys = store.Keys.Loaded ? "ok" : "not loaded";
        var ready = database == "ok" && auditProblem is null && keys == "ok";
        return new ReadinessReport(ready ? "ready" : "not ready", database, auditProblem ?? "ok", keys);
    }

    /// <summary>One read of the schema version, without retrying: a database that does not answer now is not ready now.</summary>
    private string Database()
    {
        try
        {
            return store.TryGetSchemaVersion() is null ? "unreachable" : "ok";
        }
        catch (Exception e) when (e is DbException or StoreUnavailableException or IOException or InvalidOperationException or TimeoutException)
        {
            return "unreachable";
        }
    }

    /// <summary>
    /// The audit log's own account (<see cref="AuditLog.Problem"/>). A log whose last write failed is probed with one
    /// event (an admin record of this check): a node taken out of service by its readiness gets no request that would
    /// show the log writable again, so the check itself must try.
    /// </summary>
    private async Task<string?> AuditAsync(CancellationToken ct)
    {
        var problem = audit.Problem();
        if (problem is null || problem.StartsWith("stuck", StringComparison.Ordinal))
        {
            return problem;
        }
        try
        {
            await audit.RecordAsync([AuditRecord.Admin("readiness", 'E', "audit", "ward:readiness", audit.NowTicks)]).WaitAsync(ProbeTimeout, ct);
            return null;
        }
        catch (Exception e) when (e is AuditUnavailableException or StoreUnavailableException or TimeoutException)
        {
            return problem;
        }
    }
}
