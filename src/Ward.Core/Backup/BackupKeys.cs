using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Core.Backup;

/// <summary>
/// The node's backup key (<c>keys/backup.key</c>, 0600) and the keys derived from it: chunk ids (HMAC, so that the
/// target learns nothing from them), chunk encryption (AES-256-GCM) and erasure tags. It is separate from the master key
/// so that a master key rotation keeps deduplication; it reaches the backup target only sealed to the recovery key.
/// </summary>
internal sealed class BackupKeys
{
    public const string KeyFile = "keys/backup.key";
    private const string Header = "ward-backup-key-v1";
    private const string What = "backup key";

    private readonly byte[] _chunkId;
    private readonly byte[] _erasure;

    public BackupKeys(ReadOnlySpan<byte> secret)
    {
        _chunkId = HKDF.Expand(HashAlgorithmName.SHA256, secret.ToArray(), 32, "ward/backup/chunk-id"u8.ToArray());
        ChunkKey = HKDF.Expand(HashAlgorithmName.SHA256, secret.ToArray(), 32, "ward/backup/chunk-seal"u8.ToArray());
        _erasure = HKDF.Expand(HashAlgorithmName.SHA256, secret.ToArray(), 32, "ward/backup/erasure-tag"u8.ToArray());
    }

    /// <summary>The AES-256-GCM key of the chunks.</summary>
    public byte[] ChunkKey { get; }

    /// <summary>Loads the node's backup key, creating it on first use.</summary>
    public static BackupKeys LoadOrCreate(NodeConfig config)
    {
        var path = config.Resolve(KeyFile);
        if (SecretFile.TryRead(path, Header, What) is not { } secret)
        {
            secret = RandomNumberGenerator.GetBytes(32);
            SecretFile.Create(path, Header, secret, What);
        }
        return new BackupKeys(secret);
    }

    public static BackupKeys Read(string path) =>
        new(SecretFile.TryRead(path, Header, What) ?? throw new NodeException($"The backup key {path} is missing."));

    /// <summary>A chunk's id: the first 128 bits of HMAC-SHA-256 under the chunk-id key (equal content, equal id; nothing else learnt).</summary>
    public UInt128 ChunkId(ReadOnlySpan<byte> data)
    {
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(_chunkId, data, mac);
        return BinaryPrimitives.ReadUInt128BigEndian(mac);
    }

    /// <summary>
    /// The tag an erasure leaves in the ledger and on the backup target: a keyed hash of the patient id, so that a restore
    /// can destroy that patient's key again without the ledger naming anyone.
    /// </summary>
    public string ErasureTag(string patientId)
    {
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(_erasure, Encoding.UTF8.GetBytes("Patient/" + patientId), mac);
        return Convert.ToHexStringLower(mac[..16]);
    }
}
