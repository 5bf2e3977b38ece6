using Ward.Core.Node;
using Ward.Core.Storage;
using Xunit;

namespace Ward.Tests;

/// <summary>The embedded store's own machinery, on a SQLite node.</summary>
public sealed class SqliteStoreTests
{
    [Fact]
    public Task Committed_pages_reach_the_database_file_by_a_background_checkpoint_not_at_close() => OnFreshNode(async (config, store) =>
    {
        var before = new FileInfo(config.DatabasePath).Length;
        // About 3 MB of records: less than SQLite's own threshold (1,000 pages), so only Ward's checkpointer copies them.
        for (var i = 0; i < 50; i++)
        {
            await PutBinary(store, $"b{i}", RandomBytes());
        }
        Assert.True(new FileInfo(config.DatabasePath + "-wal").Length > 2_000_000);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (new FileInfo(config.DatabasePath).Length < before + 2_000_000 && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        Assert.True(new FileInfo(config.DatabasePath).Length >= before + 2_000_000,
            $"The database file stayed at {new FileInfo(config.DatabasePath).Length} bytes: nothing was checkpointed while the store was open.");
    });

    [Fact]
    public Task The_write_ahead_log_starts_over_under_steady_writes_and_reads_instead_of_growing_without_end() => OnFreshNode(async (config, store) =>
    {
        using var stop = new CancellationTokenSource();
        // Readers that keep a snapshot open most of the time, as a node serving reads does: a passive checkpoint
        // alone never catches up with the writers, and the log could never start over.
        var readers = Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await store.ReadAsync(s => s.Scalar("SELECT count(*) FROM resource", []), CancellationToken.None);
            }
        })).ToList();
        // 120 MB written by two writers, 60 KB per commit: four times the 32 MiB at which the log is made to start over.
        var next = -1;
        var largests = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            var data = RandomBytes();
            long largest = 0;
            for (var i = Interlocked.Increment(ref next); i < 2_000; i = Interlocked.Increment(ref next))
            {
                await PutBinary(store, $"b{i}", data);
                var wal = new FileInfo(config.DatabasePath + "-wal");
                largest = Math.Max(largest, wal.Exists ? wal.Length : 0);
            }
            return largest;
        })));
        var peak = largests.Max();
        await stop.CancelAsync();
        await Task.WhenAll(readers);
        Assert.True(peak < 64L << 20, $"The write-ahead log reached {peak:N0} bytes for 120 MB of writes: it never started over.");
        Assert.Equal(2_000L, Convert.ToInt64(store.Read(s => s.Scalar("SELECT count(*) FROM resource", [])), System.Globalization.CultureInfo.InvariantCulture));
    });

    [Fact]
    public Task A_large_version_is_written_once_to_a_blob_file_and_its_row_names_it() => OnFreshNode(async (config, store) =>
    {
        var image = RandomBytes(300_000);
        var small = RandomBytes();
        await PutBinary(store, "image", image);
        await PutBinary(store, "note", small);
        var blob = Path.Combine(config.DataDir, "blobs", "00000001.blob");
        // The sealed image (its bytes, a nonce and a tag) in the file, and only a reference in the row.
        Assert.InRange(new FileInfo(blob).Length, image.Length, image.Length + 100);
        Assert.Equal((long)BlobFiles.ReferenceLength, Convert.ToInt64(store.Read(s => s.Scalar("SELECT length(v.data) FROM version v JOIN resource r ON r.rid = v.rid WHERE r.id = 'image'", [])),
            System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(image, store.Read(s => s.Read("Binary", "image"))!.Data);
        Assert.Equal(small, store.Read(s => s.Read("Binary", "note"))!.Data);
        Assert.Equal(-1, File.ReadAllBytes(blob).AsSpan().IndexOf(image.AsSpan(1_000, 64)));

        // Changed behind the node, the image is refused (its tag fails), never served altered.
        using (var file = File.OpenHandle(blob, FileMode.Open, FileAccess.ReadWrite))
        {
            RandomAccess.Write(file, new byte[] { 0x5a }, 150_000);
        }
        Assert.Throws<Ward.Core.Crypto.RecordIntegrityException>(() => store.Read(s => s.Read("Binary", "image")));
    });

    [Fact]
    public Task Two_processes_on_one_node_never_append_to_the_same_blob_file() => OnFreshNode(async (config, serve) =>
    {
        // A second store on the same files, as ward import beside ward serve: its own blob files, never the other's.
        using var import = RecordStore.Open(config);
        var first = RandomBytes(200_000);
        var second = RandomBytes(200_000);
        await PutBinary(serve, "first", first);
        await PutBinary(import, "second", second);
        await PutBinary(serve, "third", second);
        Assert.Equal(["00000001.blob", "00000002.blob"], Directory.EnumerateFiles(Path.Combine(config.DataDir, "blobs")).Select(f => Path.GetFileName(f)!).Order().ToArray());
        foreach (var store in new[] { serve, import })
        {
            Assert.Equal(first, store.Read(s => s.Read("Binary", "first"))!.Data);
            Assert.Equal(second, store.Read(s => s.Read("Binary", "second"))!.Data);
            Assert.Equal(second, store.Read(s => s.Read("Binary", "third"))!.Data);
        }
    });

    [Fact]
    public async Task Every_concurrent_commit_is_acknowledged_by_a_flush_and_none_is_left_waiting()
    {
        var log = Path.GetTempFileName();
        try
        {
            using var file = File.OpenHandle(log, FileMode.Open, FileAccess.ReadWrite);
            using var metrics = new Ward.Core.Node.NodeMetrics();
            using var flusher = new LogFlusher(() => Disk.FlushData(file), "test log", () => Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, metrics, "test-log");
            // Commits arriving while flushes are under way, in waves: a lost wake-up would leave some waiting for ever.
            for (var wave = 0; wave < 20; wave++)
            {
                await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Task.Run(flusher.Flushed))).WaitAsync(TimeSpan.FromSeconds(30));
            }
        }
        finally
        {
            File.Delete(log);
        }
    }

    [Fact]
    public async Task A_log_that_cannot_be_flushed_fails_its_commits_and_every_later_one_until_restart()
    {
        // The log's file is gone (as when the disk fails under it): the flush cannot be made.
        var missing = Path.Combine(Path.GetTempPath(), "ward-no-such-log-" + Guid.NewGuid().ToString("N"));
        using var metrics = new Ward.Core.Node.NodeMetrics();
        using var flusher = new LogFlusher(() => Disk.FlushData(File.OpenHandle(missing, FileMode.Open, FileAccess.ReadWrite)), "test log",
            () => Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, metrics, "test-log");
        var first = await Assert.ThrowsAsync<StoreUnavailableException>(flusher.Flushed);
        Assert.Contains("whether the last changes were saved is unknown", first.Message, StringComparison.Ordinal);
        var later = flusher.Flushed();
        Assert.True(later.IsFaulted, "A commit after a failed flush was not refused at once.");
        await Assert.ThrowsAsync<StoreUnavailableException>(() => later);
    }

    /// <summary>Runs <paramref name="test"/> on a new SQLite node's store, and removes the node afterwards.</summary>
    [Fact]
    public Task A_second_store_of_the_same_process_leaves_the_first_ones_locks_and_another_process_never_deletes_its_log() => OnFreshNode(async (config, store) =>
    {
        await PutBinary(store, "before", RandomBytes(10_000));
        Assert.True(File.Exists(config.DatabasePath + "-wal"));
        // A second store of this process (ward demo's accounts, a test's twin) checks the file before it opens it. Were the
        // check to read the header through a descriptor of its own, closing it would drop every POSIX lock this process
        // holds on the file, SQLite's shared lock included: the next process to close its last connection would take the
        // file as its own, checkpoint and delete the write-ahead log under this store.
        using (RecordStore.Open(config))
        {
        }
        for (var i = 0; i < 2; i++)
        {
            var (code, output) = await WardProcess.OutputAsync(["breakglass", "list", "--data", config.DataDir]);
            Assert.True(code == 0, output);
            Assert.True(File.Exists(config.DatabasePath + "-wal"), "another process deleted the write-ahead log of a store still open");
        }
        await PutBinary(store, "after", RandomBytes(10_000));
        Assert.Equal(2L, store.Read(s => Convert.ToInt64(s.Scalar("SELECT count(*) FROM resource", []), System.Globalization.CultureInfo.InvariantCulture)));
    });

    private static async Task OnFreshNode(Func<NodeConfig, RecordStore, Task> test)
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-sqlite-" + Guid.NewGuid().ToString("N")[..8]);
        var config = NodeConfig.Init(dir, "sqlite");
        try
        {
            using var store = RecordStore.Open(config, create: true);
            await test(config, store);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>A record just small enough to stay in its row (larger ones go to the blob files).</summary>
    private static byte[] RandomBytes(int size = BlobFiles.MinBytes - 1_000)
    {
        var data = new byte[size];
        Random.Shared.NextBytes(data);
        return data;
    }

    private static Task PutBinary(RecordStore store, string id, byte[] data) =>
        store.WriteAsync(s => s.Put("Binary", id, null, 1, DateTime.UtcNow.Ticks, "POST", data, new Ward.Core.Search.IndexSet()), CancellationToken.None);
}
