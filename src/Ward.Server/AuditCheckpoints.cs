using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Ward.Core.Audit;

namespace Ward.Server;

/// <summary>Signs a checkpoint of the audit log every second while entries arrive, and a last one when the node stops.</summary>
internal sealed partial class AuditCheckpoints(AuditLog audit, TimeProvider clock, ILogger<AuditCheckpoints> log) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, clock);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await SignAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await SignAsync(cancellationToken);
    }

    private async Task SignAsync(CancellationToken ct)
    {
        try
        {
            await audit.CheckpointAsync(ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogCheckpointFailed(log, e.GetType().Name, e);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "The audit checkpoint could not be signed ({ExceptionType}); retrying in a second.")]
    private static partial void LogCheckpointFailed(ILogger logger, string exceptionType, Exception exception);
}
