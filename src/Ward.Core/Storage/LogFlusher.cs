using Microsoft.Extensions.Logging;

namespace Ward.Core.Storage;

/// <summary>
/// Group commit of SQLite's write-ahead log, on its own thread. Connections run with <c>synchronous = NORMAL</c>: a
/// commit writes its frames to the log without flushing it. The committing writer then lets the next writer in and
/// waits here, asynchronously, until a flush of the log that began after its commit has ended; every commit that landed
/// while one flush was under way shares the next. So the next transaction's work overlaps this one's flush, no thread
/// of the pool is held by a flush, and a commit is still acknowledged only once durable. A reader that shows what other
/// writers committed without a commit of its own (the audit API's checkpoints, entries and proofs) waits the same way.
/// <para>
/// After a crash SQLite replays the log as a prefix (its frames are checksummed in a chain), so a flush that covers one
/// commit covers every earlier one; and a reader that saw a commit not yet durable answers only after its own audit
/// entry's commit, hence after a flush covering both. A failed flush leaves the outcome of every unflushed commit
/// unknown, and the kernel may have dropped the pages it could not write: every later commit is refused until the node
/// restarts (as PostgreSQL does).
/// </para>
/// </summary>
internal sealed partial class LogFlusher : IDisposable
{
    private const string FailedMessage = "The database's log could not be written to disk, so whether the last changes were saved is unknown; "
        + "the node refuses changes until it is restarted. Read the resource to check, then retry.";

    private readonly string _path;
    private readonly Func<ILogger> _logger;
    private readonly Lock _lock = new();
    /// <summary>Each wait, with the number of the first flush that ends it (one that began after the wait did).</summary>
    private readonly List<(long Flush, TaskCompletionSource Done)> _waiting = [];
    private readonly AutoResetEvent _signal = new(false);
    private readonly Thread _thread;
    /// <summary>Flushes begun so far.</summary>
    private long _started;
    private bool _failed;
    private bool _stopping;

    /// <param name="path">The write-ahead log's file (opened when the first commit is flushed: SQLite creates it).</param>
    public LogFlusher(string path, Func<ILogger> logger)
    {
        _path = path;
        _logger = logger;
        _thread = new Thread(Run) { IsBackground = true, Name = "SQLite log flusher" };
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
        FileStream? log = null;
        try
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
                try
                {
                    (log ??= new FileStream(_path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, 1)).Flush(flushToDisk: true);
                }
                catch (IOException e)
                {
                    LogFlushFailed(_logger(), e);
                    failure = new StoreUnavailableException(FailedMessage);
                }
                if (Complete(flush, failure))
                {
                    return;
                }
            }
        }
        finally
        {
            log?.Dispose();
        }
    }

    /// <summary>Completes the waits a flush ended (or fails every waiting one); returns whether the flusher is done.</summary>
    private bool Complete(long flush, Exception? failure)
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

    [LoggerMessage(Level = LogLevel.Critical, Message = "Flushing the SQLite write-ahead log to disk failed; the node refuses changes until it is restarted.")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception);
}
