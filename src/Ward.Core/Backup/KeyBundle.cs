using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Ward.Core.Node;

namespace Ward.Core.Backup;

/// <summary>
/// What a restore needs besides the database: <c>ward.yaml</c> and every file of <c>keys/</c> (the master key wherever
/// it is kept, the backup key, the node signing key, the token and cookie keys, the erasure ledger). It travels only
/// sealed to the recovery key.
/// </summary>
internal static class KeyBundle
{
    public const string MasterKeyName = "keys/master.key";

    public static byte[] Collect(NodeConfig config)
    {
        var files = new SortedDictionary<string, byte[]>(StringComparer.Ordinal)
        {
            [NodeConfig.FileName] = File.ReadAllBytes(Path.Combine(config.DataDir, NodeConfig.FileName)),
        };
        var keys = config.Resolve("keys");
        foreach (var file in Directory.EnumerateFiles(keys, "*", SearchOption.AllDirectories))
        {
            files[Path.GetRelativePath(config.DataDir, file).Replace('\\', '/')] = File.ReadAllBytes(file);
        }
        // A master key kept outside keys/ (WARD_MASTER_KEY_FILE, or an absolute path) is restored into keys/.
        files[MasterKeyName] = File.ReadAllBytes(config.MasterKeyPath);
        return JsonSerializer.SerializeToUtf8Bytes(files, KeyBundleJson.Default.SortedDictionaryStringByteArray);
    }

    /// <summary>Writes the bundle into a new data folder (0700, secrets 0600); a master key named elsewhere is pointed at keys/master.key.</summary>
    public static NodeConfig Extract(byte[] bundle, string dataDir)
    {
        var files = JsonSerializer.Deserialize(bundle, KeyBundleJson.Default.SortedDictionaryStringByteArray)
            ?? throw new NodeException("The sealed keys of the snapshot are empty.");
        var root = Path.GetFullPath(dataDir);
        foreach (var (name, content) in files)
        {
            var path = Path.GetFullPath(Path.Combine(root, name));
            if (!path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            {
                throw new NodeException($"The sealed keys name a file outside the data folder ({name}); refusing it.");
            }
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(Path.GetDirectoryName(path)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = name == NodeConfig.FileName || name.EndsWith(".vkey", StringComparison.Ordinal) || name.EndsWith(".pub", StringComparison.Ordinal) || name.EndsWith(".crt", StringComparison.Ordinal)
                    ? UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead
                    : UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }
            using var stream = new FileStream(path, options);
            stream.Write(content);
            stream.Flush(flushToDisk: true);
        }
        var config = NodeConfig.Load(root);
        if (config.MasterKeyPath != config.Resolve(MasterKeyName))
        {
            config.MasterKeyFile = MasterKeyName;
            config.Save();
        }
        return config;
    }

    /// <summary>The erasure tags of a ledger (<c>keys/erasures.log</c>): lines <c>TIME erased data key KID tag TAG</c>.</summary>
    public static IEnumerable<(string Tag, DateTimeOffset When)> ErasureTags(IEnumerable<string> lines)
    {
        foreach (var line in lines)
        {
            var words = line.Split(' ');
            if (words is [var time, "erased", "data", "key", _, "tag", var tag]
                && DateTimeOffset.TryParse(time, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var when))
            {
                yield return (tag, when);
            }
        }
    }
}

[JsonSerializable(typeof(SortedDictionary<string, byte[]>))]
internal sealed partial class KeyBundleJson : JsonSerializerContext;
