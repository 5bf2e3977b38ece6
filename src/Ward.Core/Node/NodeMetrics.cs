using System.Diagnostics.Metrics;

namespace Ward.Core.Node;

/// <summary>
/// The node's own measurements, on the meter <c>Ward</c> (exported by <c>ward serve</c> at <c>/metrics</c>, README):
/// the audit log's group commit (queue depth, events per batch, time to durable), the flushes of the SQLite log and the
/// blob files (commits per flush, flush time), the cache of unwrapped data keys, and the scheduled backups.
/// <para>
/// No tag of any instrument takes a value from a request or a record: each is one of a few fixed strings chosen here,
/// so that no metric can carry a patient identifier and the number of series stays fixed. Recording allocates nothing
/// (no tag, or one tag built once).
/// </para>
/// </summary>
internal sealed class NodeMetrics : IDisposable
{
    public const string MeterName = "Ward";

    /// <summary>Batch sizes in powers of two up to the audit log's largest batch.</summary>
    private static readonly IReadOnlyList<long> CountBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

    /// <summary>Durations from half a millisecond (a flush on fast storage) to ten seconds (a stalled disk).</summary>
    private static readonly IReadOnlyList<double> SecondBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static readonly KeyValuePair<string, object?> Succeeded = new("outcome", "success");
    private static readonly KeyValuePair<string, object?> Failed = new("outcome", "failure");

    private readonly Meter _meter = new(MeterName);
    private readonly UpDownCounter<long> _auditQueue;
    private readonly Histogram<long> _auditBatch;
    private readonly Histogram<double> _auditFlush;
    private readonly Counter<long> _auditFailures;
    private readonly Histogram<long> _flushBatch;
    private readonly Histogram<double> _flushDuration;
    private readonly Counter<long> _keyHits;
    private readonly Counter<long> _keyMisses;
    private readonly Counter<long> _backups;

    public NodeMetrics()
    {
        _auditQueue = _meter.CreateUpDownCounter<long>("ward.audit.queue.depth", "{event}", "Audit events waiting for the audit log's next group commit.");
        _auditBatch = _meter.CreateHistogram<long>("ward.audit.batch.size", "{event}", "Audit events written by one group commit of the audit log.", advice: new() { HistogramBucketBoundaries = CountBuckets });
        _auditFlush = _meter.CreateHistogram<double>("ward.audit.flush.duration", "s", "Time from a group commit's start to its events being durable.", advice: new() { HistogramBucketBoundaries = SecondBuckets });
        _auditFailures = _meter.CreateCounter<long>("ward.audit.failures", "{batch}", "Group commits of the audit log that failed (their requests were refused).");
        _flushBatch = _meter.CreateHistogram<long>("ward.storage.flush.batch.size", "{commit}", "Commits made durable by one flush of the SQLite log or of the blob files.", advice: new() { HistogramBucketBoundaries = CountBuckets });
        _flushDuration = _meter.CreateHistogram<double>("ward.storage.flush.duration", "s", "Time one flush of the SQLite log or of the blob files took.", advice: new() { HistogramBucketBoundaries = SecondBuckets });
        _keyHits = _meter.CreateCounter<long>("ward.crypto.key_cache.hits", "{lookup}", "Data keys found already unwrapped in memory.");
        _keyMisses = _meter.CreateCounter<long>("ward.crypto.key_cache.misses", "{lookup}", "Data keys unwrapped under the master key (not in memory yet).");
        _backups = _meter.CreateCounter<long>("ward.backup.runs", "{backup}", "Scheduled backups run, by outcome.");
    }

    /// <summary>The tag naming what a <see cref="Storage.LogFlusher"/> flushes, made once per flusher.</summary>
    public static KeyValuePair<string, object?> FileTag(string file) => new("file", file);

    public void AuditQueued(int events) => _auditQueue.Add(events);

    public void AuditTaken(int events)
    {
        _auditQueue.Add(-events);
        _auditBatch.Record(events);
    }

    public void AuditDurable(TimeSpan elapsed) => _auditFlush.Record(elapsed.TotalSeconds);

    public void AuditFailed() => _auditFailures.Add(1);

    public void Flushed(int commits, TimeSpan elapsed, KeyValuePair<string, object?> file)
    {
        _flushBatch.Record(commits, file);
        _flushDuration.Record(elapsed.TotalSeconds, file);
    }

    public void KeyCacheHit() => _keyHits.Add(1);

    public void KeyCacheMiss() => _keyMisses.Add(1);

    public void BackupRan(bool success) => _backups.Add(1, success ? Succeeded : Failed);

    /// <summary>The age of the last successful scheduled backup, observed at each collection (nothing before the first success).</summary>
    public void ObserveBackupAge(Func<TimeSpan?> age) =>
        _meter.CreateObservableGauge("ward.backup.age", () => age() is { } a ? [new Measurement<double>(a.TotalSeconds)] : Array.Empty<Measurement<double>>(),
            "s", "Seconds since the last successful scheduled backup.");

    public void Dispose() => _meter.Dispose();
}
