using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Ward.Core.Audit;
using Ward.Core.Backup;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Server;

/// <summary>The outcome of the node's scheduled backups, for <c>/health</c>.</summary>
internal sealed record BackupHealth(string Target, int IntervalMinutes, string? LastSnapshot, DateTimeOffset? LastSuccess, DateTimeOffset? LastAttempt, string? LastError, DateTimeOffset? Next);

/// <summary>
/// Backs the node up to the configured target every <c>backup.interval-minutes</c> while it serves (the first a minute
/// after start), exactly as <c>ward backup create</c>; each outcome is logged, audited and shown at <c>/health</c>.
/// </summary>
internal sealed partial class ScheduledBackups(NodeConfig config, RecordStore store, AuditLog audit, TimeProvider clock, ILogger<ScheduledBackups> log) : BackgroundService
{
    public static readonly TimeSpan FirstDelay = TimeSpan.FromMinutes(1);

    private readonly Lock _gate = new();
    private BackupHealth _health = new(config.Backup.Target!, config.Backup.IntervalMinutes, null, null, null, null, clock.GetUtcNow() + FirstDelay);

    public BackupHealth Health
    {
        get
        {
            lock (_gate)
            {
                return _health;
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = TimeSpan.FromMinutes(Math.Max(1, config.Backup.IntervalMinutes));
        store.Metrics.ObserveBackupAge(() => Health.LastSuccess is { } at ? clock.GetUtcNow() - at : null);
        try
        {
            await Task.Delay(FirstDelay, clock, stoppingToken);
            while (!stoppingToken.IsCancellationRequested)
            {
                await RunOnceAsync(interval, stoppingToken);
                await Task.Delay(interval, clock, stoppingToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    internal async Task RunOnceAsync(TimeSpan interval, CancellationToken ct)
    {
        var started = clock.GetUtcNow();
        string? snapshot = null, error = null;
        try
        {
            var result = await BackupWriter.CreateAsync(config, store, config.Backup.Target!, clock, null, ct);
            snapshot = result.Manifest.Snapshot;
            LogBackedUp(log, snapshot, result.SourceBytes, result.Manifest.Stats.NewBytes, result.Manifest.Stats.Seconds);
            foreach (var warning in result.Warnings)
            {
                LogBackupWarning(log, warning);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Backup errors name files and snapshots, never patient data.
            error = e is NodeException or BackupDamageException or IOException or UnauthorizedAccessException ? e.Message : e.GetType().Name;
            LogBackupFailed(log, error, e);
        }
        store.Metrics.BackupRan(error is null);
        await audit.RecordAsync([AuditRecord.Admin("backup", 'E', snapshot is null ? "backup" : $"backup/{snapshot}", "ward:scheduler", clock.GetUtcNow().UtcTicks,
            status: error is null ? 200 : 500)]);
        lock (_gate)
        {
            _health = _health with
            {
                LastAttempt = started,
                LastSnapshot = snapshot ?? _health.LastSnapshot,
                LastSuccess = error is null ? clock.GetUtcNow() : _health.LastSuccess,
                LastError = error,
                Next = clock.GetUtcNow() + interval,
            };
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Backup snapshot {Snapshot} written: {SourceBytes} bytes of database, {NewBytes} new bytes on the target, {Seconds} s.")]
    private static partial void LogBackedUp(ILogger logger, string snapshot, long sourceBytes, long newBytes, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Backup: {Warning}")]
    private static partial void LogBackupWarning(ILogger logger, string warning);

    [LoggerMessage(Level = LogLevel.Error, Message = "The scheduled backup failed: {Error}. The next attempt follows the interval; /health shows the outcome.")]
    private static partial void LogBackupFailed(ILogger logger, string error, Exception exception);
}
