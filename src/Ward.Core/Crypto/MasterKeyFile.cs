using System.Security.Cryptography;
using System.Text;
using Ward.Core.Node;

namespace Ward.Core.Crypto;

/// <summary>
/// A 256-bit secret in a file readable by its owner only, one line <c>&lt;header&gt; &lt;base64&gt;</c> (comment lines
/// starting with <c>#</c> allowed before it). The master key, the backup key and the recovery key use this form.
/// </summary>
internal static class SecretFile
{
    /// <summary>Writes a new secret; refuses to replace an existing file.</summary>
    public static void Create(string path, string header, ReadOnlySpan<byte> secret, string what, string comment = "")
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        try
        {
            NodeConfig.WritePrivate(path, comment + header + " " + Convert.ToBase64String(secret) + "\n", durable: true);
        }
        catch (IOException) when (File.Exists(path))
        {
            throw new NodeException($"A {what} already exists at {path}; Ward never replaces it.");
        }
    }

    /// <summary>Reads a secret, or returns null when the file does not exist. A malformed or shared-readable file is refused.</summary>
    public static byte[]? TryRead(string path, string header, string what)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            throw new NodeException($"The {what} file {path} is readable or writable by other users; restrict it with: chmod 600 {path}");
        }
        var line = File.ReadAllLines(path, Encoding.ASCII).Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0 && !l.StartsWith('#')) ?? "";
        if (!line.StartsWith(header + " ", StringComparison.Ordinal))
        {
            throw new NodeException($"{path} is not a Ward {what} file (it must hold one line starting with '{header}').");
        }
        var key = new byte[32];
        if (!Convert.TryFromBase64String(line[(header.Length + 1)..], key, out var n) || n != 32)
        {
            throw new NodeException($"{path} is damaged: it must hold exactly 256 bits of key in base64.");
        }
        return key;
    }
}

/// <summary>
/// The node master key: 256 random bits in a file readable by its owner only, one line
/// <c>ward-master-key-v1 &lt;base64&gt;</c>. Its id (a keyed fingerprint) is what the database records, never the key.
/// </summary>
internal static class MasterKeyFile
{
    private const string Header = "ward-master-key-v1";
    private const string What = "master key";

    /// <summary>Creates a new key file; refuses to replace an existing one.</summary>
    public static byte[] Create(string path)
    {
        var key = RandomNumberGenerator.GetBytes(32);
        SecretFile.Create(path, Header, key, What);
        return key;
    }

    /// <summary>Reads a key file, or returns null when it does not exist. A malformed or shared-readable file is refused.</summary>
    public static byte[]? TryRead(string path) => SecretFile.TryRead(path, Header, What);

    /// <summary>The key's id: the first 8 bytes of HMAC-SHA-256(key, "ward/master-key-id"), in hex. Reveals nothing about the key.</summary>
    public static string Id(ReadOnlySpan<byte> key)
    {
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(key, "ward/master-key-id"u8, mac);
        return Convert.ToHexStringLower(mac[..8]);
    }
}
