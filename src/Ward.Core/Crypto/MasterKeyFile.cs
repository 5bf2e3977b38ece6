using System.Security.Cryptography;
using System.Text;
using Ward.Core.Node;

namespace Ward.Core.Crypto;

/// <summary>
/// The node master key: 256 random bits in a file readable by its owner only, one line
/// <c>ward-master-key-v1 &lt;base64&gt;</c>. Its id (a keyed fingerprint) is what the database records, never the key.
/// </summary>
internal static class MasterKeyFile
{
    private const string Header = "ward-master-key-v1 ";

    /// <summary>Creates a new key file; refuses to replace an existing one.</summary>
    public static byte[] Create(string path)
    {
        var key = RandomNumberGenerator.GetBytes(32);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        try
        {
            NodeConfig.WritePrivate(path, Header + Convert.ToBase64String(key) + "\n", durable: true);
        }
        catch (IOException) when (File.Exists(path))
        {
            throw new NodeException($"A master key already exists at {path}; Ward never replaces a master key.");
        }
        return key;
    }

    /// <summary>Reads a key file, or returns null when it does not exist. A malformed or shared-readable file is refused.</summary>
    public static byte[]? TryRead(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            throw new NodeException($"The master key file {path} is readable or writable by other users; restrict it with: chmod 600 {path}");
        }
        var text = File.ReadAllText(path, Encoding.ASCII).Trim();
        if (!text.StartsWith(Header, StringComparison.Ordinal))
        {
            throw new NodeException($"{path} is not a Ward master key file (it must hold one line starting with '{Header.Trim()}').");
        }
        var key = new byte[32];
        if (!Convert.TryFromBase64String(text[Header.Length..], key, out var n) || n != 32)
        {
            throw new NodeException($"{path} is damaged: it must hold exactly 256 bits of key in base64.");
        }
        return key;
    }

    /// <summary>The key's id: the first 8 bytes of HMAC-SHA-256(key, "ward/master-key-id"), in hex. Reveals nothing about the key.</summary>
    public static string Id(ReadOnlySpan<byte> key)
    {
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(key, "ward/master-key-id"u8, mac);
        return Convert.ToHexStringLower(mac[..8]);
    }
}
