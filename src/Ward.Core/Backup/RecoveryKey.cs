using System.Security.Cryptography;
using NSec.Cryptography;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Core.Backup;

/// <summary>
/// The recovery key: an X25519 key pair. <c>ward init</c> writes the private half once to <c>DIR/recovery.key</c> for
/// the operator to move offline; the node keeps only the public half (<c>keys/recovery.pub</c>) and seals to it what a
/// restore needs (its keys and configuration). Sealing is ECIES: an ephemeral X25519 agreement, HKDF-SHA-256 over the
/// shared secret with both public keys as salt, AES-256-GCM under the derived single-use key.
/// </summary>
internal static class RecoveryKey
{
    public const string PrivateFile = "recovery.key";
    public const string PublicFile = "keys/recovery.pub";
    private const string PrivateHeader = "ward-recovery-key-v1";
    private const string PublicHeader = "ward-recovery-pub-v1";
    private const string What = "recovery key";
    private static readonly byte[] Magic = "ward-sealed-v1\n"u8.ToArray();
    private static readonly KeyAgreementAlgorithm X25519 = KeyAgreementAlgorithm.X25519;

    private const string NodeKeyComment = "# node-key: ";

    /// <summary>
    /// Creates a recovery key pair: the private half in the data folder (to be moved offline), with the node's public
    /// signing key pinned in a comment (a restore trusts it over the target's copy); the public half in keys/.
    /// </summary>
    public static string Create(NodeConfig config, string nodeVKey)
    {
        using var key = Key.Create(X25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        var publicKey = key.PublicKey.Export(KeyBlobFormat.RawPublicKey);
        var path = config.Resolve(PrivateFile);
        SecretFile.Create(path, PrivateHeader, key.Export(KeyBlobFormat.RawPrivateKey), What,
            $"# Ward recovery key of node '{config.Name}' (id {IdOf(publicKey)}). It opens every backup of the node: keep it offline, never on the node.\n"
            + NodeKeyComment + nodeVKey + "\n");
        File.WriteAllText(config.Resolve(PublicFile), $"{PublicHeader} {Convert.ToBase64String(publicKey)}\n");
        return path;
    }


    /// <summary>The node's recovery public key, or null for a node created before backups existed.</summary>
    public static byte[]? TryLoadPublic(NodeConfig config)
    {
        var path = config.Resolve(PublicFile);
        if (!File.Exists(path))
        {
            return null;
        }
        var line = File.ReadAllText(path).Trim();
        var key = new byte[32];
        if (!line.StartsWith(PublicHeader + " ", StringComparison.Ordinal) || !Convert.TryFromBase64String(line[(PublicHeader.Length + 1)..], key, out var n) || n != 32)
        {
            throw new NodeException($"{path} is not a Ward recovery public key.");
        }
        return key;
    }

    /// <summary>Reads the private recovery key the operator brings, and the node key pinned in its file (if any).</summary>
    public static (byte[] Key, string? NodeKey) Read(string path)
    {
        var full = Path.GetFullPath(path);
        var key = SecretFile.TryRead(full, PrivateHeader, What) ?? throw new NodeException($"No recovery key at {full}.");
        var pinned = File.ReadLines(full).FirstOrDefault(l => l.StartsWith(NodeKeyComment, StringComparison.Ordinal))?[NodeKeyComment.Length..].Trim();
        return (key, pinned);
    }

    public static byte[] PublicOf(ReadOnlySpan<byte> privateKey)
    {
        using var key = Key.Import(X25519, privateKey, KeyBlobFormat.RawPrivateKey);
        return key.PublicKey.Export(KeyBlobFormat.RawPublicKey);
    }

    /// <summary>The key's id: the first 8 bytes of SHA-256 of the public key, in hex.</summary>
    public static string IdOf(ReadOnlySpan<byte> publicKey) => Convert.ToHexStringLower(SHA256.HashData(publicKey)[..8]);

    /// <summary>Seals a message to a recovery public key: magic, recipient public key, ephemeral public key, AES-GCM ciphertext and tag.</summary>
    public static byte[] Seal(ReadOnlySpan<byte> recipient, ReadOnlySpan<byte> plaintext)
    {
        using var ephemeral = Key.Create(X25519);
        var ephemeralPublic = ephemeral.PublicKey.Export(KeyBlobFormat.RawPublicKey);
        var key = Derive(ephemeral, PublicKey.Import(X25519, recipient, KeyBlobFormat.RawPublicKey), ephemeralPublic, recipient)
            ?? throw new CryptographicException("The recovery public key is not a usable X25519 key.");
        var output = new byte[Magic.Length + 64 + plaintext.Length + 16];
        Magic.CopyTo(output, 0);
        recipient.CopyTo(output.AsSpan(Magic.Length));
        ephemeralPublic.CopyTo(output.AsSpan(Magic.Length + 32));
        using var aes = new AesGcm(key, 16);
        aes.Encrypt(new byte[12], plaintext, output.AsSpan(Magic.Length + 64, plaintext.Length), output.AsSpan(output.Length - 16), Magic);
        CryptographicOperations.ZeroMemory(key);
        return output;
    }

    /// <summary>Opens a sealed message with the private recovery key; a message sealed to another key is refused with its key id.</summary>
    public static byte[] Open(ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> sealedMessage, string what)
    {
        if (sealedMessage.Length < Magic.Length + 64 + 16 || !sealedMessage.StartsWith(Magic))
        {
            throw new NodeException($"{what} is not a Ward sealed file.");
        }
        var recipient = sealedMessage.Slice(Magic.Length, 32);
        using var key = Key.Import(X25519, privateKey, KeyBlobFormat.RawPrivateKey);
        var mine = key.PublicKey.Export(KeyBlobFormat.RawPublicKey);
        if (!recipient.SequenceEqual(mine))
        {
            throw new NodeException($"This recovery key (id {IdOf(mine)}) does not open {what}: it is sealed to recovery key {IdOf(recipient)}.");
        }
        var ephemeralPublic = sealedMessage.Slice(Magic.Length + 32, 32);
        var aesKey = Derive(key, PublicKey.Import(X25519, ephemeralPublic, KeyBlobFormat.RawPublicKey), ephemeralPublic, mine)
            ?? throw new NodeException($"{what} is damaged (its ephemeral key is invalid).");
        var body = sealedMessage[(Magic.Length + 64)..^16];
        var plaintext = new byte[body.Length];
        try
        {
            using var aes = new AesGcm(aesKey, 16);
            aes.Decrypt(new byte[12], body, sealedMessage[^16..], plaintext, Magic);
        }
        catch (AuthenticationTagMismatchException)
        {
            throw new NodeException($"{what} is damaged or was altered: it does not decrypt under the recovery key.");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(aesKey);
        }
        return plaintext;
    }

    private static byte[]? Derive(Key own, PublicKey other, ReadOnlySpan<byte> ephemeralPublic, ReadOnlySpan<byte> recipient)
    {
        using var shared = X25519.Agree(own, other);
        if (shared is null)
        {
            return null;
        }
        return KeyDerivationAlgorithm.HkdfSha256.DeriveBytes(shared, [.. ephemeralPublic, .. recipient], "ward/backup/seal/v1"u8, 32);
    }
}
