using Microsoft.Extensions.Logging;
using Ward.Core.Node;

namespace Ward.Core.Storage;

/// <summary>
/// Group commit of a file that commits are appended to, on its own thread: SQLite's write-ahead log (connections run
/// with <c>synchronous = NORMAL</c>, so a commit writes its frames without flushing them) or the blob files of large
/// versions (<see cref="BlobFiles"/>). A writer that has just written waits here, asynchronously, until a flush that
/// began after its write has ended; every write that landed while one flush was under way shares the next. So the next
/// transaction's work overlaps this one's flush, no thread of the pool is held by a flush, and a commit is still
/// acknowledged only once durable. A reader that shows what other writers committed without a commit of its own (the
/// audit API's checkpoints, entries and proofs) waits the same way.
/// <para>
/// After a crash SQLite replays the log as a prefix (its frames are checksummed in a chain), so a flush that covers one
/// commit covers every earlier one; and a reader that saw a commit not yet durable answers only after its own audit
/// entry's commit, hence after a flush covering both. A failed flush leaves the outcome of every unflushed write
/// unknown, and the kernel may have dropped the pages it could not write: every later wait fails until the node
/// restarts (as PostgreSQL does).
/// </para>
/// </summary>
internal sealed partial class LogFlusher : IDisposable
{
    private const string FailedMessage = "The node's data could not be written to disk, so whether the last changes were saved is unknown; "
        + "the node refuses changes until it is restarted. Read the resource to check, then retry.";

    private readonly Action _flush;
    private readonly string _what;
    private readonly Func<ILogger> _logger;
    private readonly NodeMetrics _metrics;
    private readonly KeyValuePair<string, object?> _file;
    private readonly Lock _lock = new();
    /// <summary>Each wait, with the number of the first flush that ends it (one that began after the wait did).</summary>
    private readonly List<(long Flush, TaskCompletionSource Done)> _waiting = [];
    private readonly AutoResetEvent _signal = new(false);
    private readonly Thread _thread;
    /// <summary>Flushes begun so far.</summary>
    private long _started;
    private bool _failed;
    private bool _stopping;

    /// <param name="flush">Makes every write made so far durable (throws <see cref="IOException"/> when it cannot).</param>
    /// <param name="what">What is flushed, for the thread's name and the log.</param>
    /// <param name="metrics">Where each flush's commits and duration are recorded, tagged <paramref name="file"/>.</param>
    public LogFlusher(Action flush, string what, Func<ILogger> logger, NodeMetrics metrics, string file)
    {
        _flush = flush;
        _what = what;
        _logger = logger;
        _metrics = metrics;
        _file = NodeMetrics.FileTag(file);
        _thread = new Thread(Run) { IsBackground = true, Name = what + " flusher" };
        _thread.Start();
    }

    /// <summary>
    /// Completes once a flush that began after this call has ended: called by a commit that has just written its frames
    /// (under the write lock, before the next writer), or by a reader about to show what others committed.
    /// </summary>
    public Task Flushed()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_failed)
            {
                return Task.FromException(new StoreUnavailableException(FailedMessage));
            }
            _waiting.Add((_started + 1, done));
        }
        _signal.Set();
        return done.Task;
    }

    private void Run()
    {
        while (true)
        {
            _signal.WaitOne();
            long flush;
            lock (_lock)
            {
                if (_waiting.Count == 0)
                {
                    if (_stopping)
                    {
                        return;
                    }
                    continue;
                }
                // Everything written before this point is covered by the flush about to start.
                flush = ++_started;
            }
            Exception? failure = null;
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                _flush();
            }
            catch (IOException e)
            {
                LogFlushFailed(_logger(), _what, e);
                failure = new StoreUnavailableException(FailedMessage);
            }
            if (Complete(flush, failure, started))
            {
                return;
            }
        }
    }

    /// <summary>Completes the waits a flush ended (or fails every waiting one); returns whether the flusher is done.</summary>
    private bool Complete(long flush, Exception? failure, long started)
    {
        bool finished;
        List<TaskCompletionSource> done = [];
        lock (_lock)
        {
            _failed |= failure is not null;
            _waiting.RemoveAll(w =>
            {
                var ended = failure is not null || w.Flush <= flush;
                if (ended)
                {
                    done.Add(w.Done);
                }
                return ended;
            });
            if (_waiting.Count > 0)
            {
                _signal.Set();
            }
            finished = failure is not null || (_stopping && _waiting.Count == 0);
        }
        if (failure is null && done.Count > 0)
        {
            _metrics.Flushed(done.Count, System.Diagnostics.Stopwatch.GetElapsedTime(started), _file);
        }
        foreach (var d in done)
        {
            if (failure is null)
            {
                d.SetResult();
            }
            else
            {
                d.SetException(failure);
            }
        }
        return finished;
    }

    /// <summary>Flushes what is still waiting, then stops.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _stopping = true;
        }
        _signal.Set();
        _thread.Join();
        _signal.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "Flushing the {What} to disk failed; the node refuses changes until it is restarted.")]
    private static partial void LogFlushFailed(ILogger logger, string what, Exception exception);
}
