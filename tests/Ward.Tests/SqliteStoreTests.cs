using Ward.Core.Node;
using Ward.Core.Storage;
using Xunit;

namespace Ward.Tests;

/// <summary>The embedded store's own machinery, on a SQLite node.</summary>
public sealed class SqliteStoreTests
{
    [Fact]
    public async Task Committed_pages_reach_the_database_file_by_a_background_checkpoint_not_at_close()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-checkpoint-" + Guid.NewGuid().ToString("N")[..8]);
        var config = NodeConfig.Init(dir, "checkpoint");
        try
        {
            using var store = RecordStore.Open(config);
            var before = new FileInfo(config.DatabasePath).Length;
            // About 3 MB of records: less than SQLite's own threshold (1,000 pages), so only Ward's checkpointer copies them.
            for (var i = 0; i < 30; i++)
            {
                var data = new byte[100_000];
                Random.Shared.NextBytes(data);
                await store.WriteAsync(s => s.Put("Binary", $"b{i}", null, 1, DateTime.UtcNow.Ticks, "POST", data, new Ward.Core.Search.IndexSet()), CancellationToken.None);
            }
            Assert.True(new FileInfo(config.DatabasePath + "-wal").Length > 2_000_000);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (new FileInfo(config.DatabasePath).Length < before + 2_000_000 && DateTime.UtcNow < deadline)
                await Task.Delay(50);
            Assert.True(new FileInfo(config.DatabasePath).Length >= before + 2_000_000,
                $"The database file stayed at {new FileInfo(config.DatabasePath).Length} bytes: nothing was checkpointed while the store was open.");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
