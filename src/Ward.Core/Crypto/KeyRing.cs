using System.Buffers;
using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Ward.Core.Node;

namespace Ward.Core.Crypto;

/// <summary>
/// The node's keys in memory: the master key(s) read from the key file, the data keys unwrapped so far (by key id),
/// and the index key. Seals and opens record envelopes (AES-256-GCM) and wraps data keys under the master key.
/// The wrapped keys themselves live in the record store (table <c>data_key</c>); see <c>docs/SECURITY.md</c>.
/// </summary>
internal sealed partial class KeyRing
{
    public const int KeySize = 32;
    private const int NonceSize = 12;
    private const int TagSize = 16;
    private const byte EnvelopeVersion = 1;

    private readonly ConcurrentDictionary<string, byte[]> _masters = new(StringComparer.Ordinal);
    // Unwrapped keys and ciphers are remembered by key id *and* wrapped key: a key id can name another key later (SQLite
    // reuses the id of a key whose transaction rolled back), and the wrapped key, with its random nonce, never repeats.
    private readonly ConcurrentDictionary<long, (byte[] Wrapped, byte[] Key)> _dataKeys = new();
    // AesGcm instances are not thread-safe and cost about a microsecond to set up: each thread keeps its own per key.
    // Reads never reach an erased key's cipher: the store checks the key row on every read.
    private readonly ThreadLocal<Dictionary<long, (byte[] Wrapped, AesGcm Cipher)>> _ciphers = new(() => []);
    private const int MaxCiphersPerThread = 4096;
    private readonly Lock _reload = new();

    private KeyRing(string masterKeyPath) => MasterKeyPath = masterKeyPath;

    public string MasterKeyPath { get; }

    /// <summary>Where a rotation writes the next master key until the database has switched to it.</summary>
    public string PendingKeyPath => MasterKeyPath + ".new";

    /// <summary>Id of the key in the master key file as read at start (or after a completed rotation).</summary>
    public string FileKeyId { get; private set; } = "";

    /// <summary>Id of the pending key (an interrupted rotation), if its file exists.</summary>
    public string? PendingKeyId { get; private set; }

    public ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>Where the data key cache counts its hits and misses (the store's).</summary>
    public NodeMetrics? Metrics { get; set; }

    public Blinder Blind { get; private set; } = null!;

    /// <summary>Reads the master key file (and a pending rotation key beside it). A missing key is a refusal, never a fresh key.</summary>
    public static KeyRing Open(string masterKeyPath)
    {
        var ring = new KeyRing(Path.GetFullPath(masterKeyPath));
        ring.Reload();
        if (ring.FileKeyId.Length == 0)
        {
            throw new NodeException(
                $"The master key file {ring.MasterKeyPath} is missing. Without it the records cannot be decrypted: restore it from your offline copy "
                + "(or point WARD_MASTER_KEY_FILE or master-key-file in ward.yaml at it). Ward never creates a new master key over an existing node.");
        }
        return ring;
    }

    /// <summary>Re-reads the key files: after another process (<c>ward keys rotate-master</c>) switched the master key.</summary>
    public void Reload()
    {
        lock (_reload)
        {
            if (MasterKeyFile.TryRead(MasterKeyPath) is { } current)
            {
                FileKeyId = MasterKeyFile.Id(current);
                _masters[FileKeyId] = current;
            }
            PendingKeyId = null;
            if (MasterKeyFile.TryRead(PendingKeyPath) is { } pending)
            {
                PendingKeyId = MasterKeyFile.Id(pending);
                _masters[PendingKeyId] = pending;
            }
        }
    }

    private byte[] Master(string kid)
    {
        if (_masters.TryGetValue(kid, out var key))
        {
            return key;
        }
        // Another process may be renaming master.key.new over master.key right now: a second look sees the result.
        for (var attempt = 0; attempt < 2 && !_masters.ContainsKey(kid); attempt++)
        {
            Reload();
        }
        return _masters.TryGetValue(kid, out key) ? key
            : throw new NodeException($"The database's keys are wrapped under master key {kid}, which is not in {MasterKeyPath}.");
    }

    /// <summary>Whether the keys the node serves with are in memory: the master key of the key file, the index key and the audit key.</summary>
    public bool Loaded => _masters.ContainsKey(FileKeyId) && Blind is not null && Audit is not null;

    /// <summary>Forgets a master key that is no longer in use (after a rotation).</summary>
    public void Retire(string kid) => _masters.TryRemove(kid, out _);

    // ------------------------------------------------------------------ data keys

    public static byte[] NewDataKey() => RandomNumberGenerator.GetBytes(KeySize);

    public byte[] Wrap(string masterKid, long kid, string kind, string owner, ReadOnlySpan<byte> dataKey)
    {
        var wrapped = new byte[NonceSize + KeySize + TagSize];
        RandomNumberGenerator.Fill(wrapped.AsSpan(0, NonceSize));
        using var aes = new AesGcm(Master(masterKid), TagSize);
        aes.Encrypt(wrapped.AsSpan(0, NonceSize), dataKey, wrapped.AsSpan(NonceSize, KeySize), wrapped.AsSpan(NonceSize + KeySize), WrapAad(kid, kind, owner));
        return wrapped;
    }

    /// <summary>The data key of <paramref name="kid"/>, unwrapped once and then kept in memory.</summary>
    public byte[] DataKey(long kid, string masterKid, string kind, string owner, byte[] wrapped)
    {
        if (_dataKeys.TryGetValue(kid, out var known) && known.Wrapped.AsSpan().SequenceEqual(wrapped))
        {
            Metrics?.KeyCacheHit();
            return known.Key;
        }
        Metrics?.KeyCacheMiss();
        var key = Unwrap(masterKid, kid, kind, owner, wrapped);
        _dataKeys[kid] = (wrapped, key);
        return key;
    }

    public byte[] Unwrap(string masterKid, long kid, string kind, string owner, byte[] wrapped)
    {
        var key = new byte[KeySize];
        try
        {
            if (wrapped.Length != NonceSize + KeySize + TagSize)
            {
                throw new AuthenticationTagMismatchException();
            }
            using var aes = new AesGcm(Master(masterKid), TagSize);
            aes.Decrypt(wrapped.AsSpan(0, NonceSize), wrapped.AsSpan(NonceSize, KeySize), wrapped.AsSpan(NonceSize + KeySize), key, WrapAad(kid, kind, owner));
        }
        catch (AuthenticationTagMismatchException)
        {
            LogKeyIntegrity(Logger, kid);
            throw new KeyIntegrityException(kid);
        }
        return key;
    }

    /// <summary>The cipher of an already unwrapped data key, if this thread has one.</summary>
    public bool TryGetCipher(long kid, ReadOnlySpan<byte> wrapped, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out AesGcm? cipher)
    {
        if (_ciphers.Value!.TryGetValue(kid, out var known) && known.Wrapped.AsSpan().SequenceEqual(wrapped))
        {
            cipher = known.Cipher;
            return true;
        }
        cipher = null;
        return false;
    }

    /// <summary>This thread's cipher for a data key (from <see cref="DataKey"/>, or just created with its wrapped form).</summary>
    public AesGcm Cipher(long kid, byte[] key, byte[] wrapped)
    {
        var ciphers = _ciphers.Value!;
        if (ciphers.TryGetValue(kid, out var known))
        {
            if (known.Wrapped.AsSpan().SequenceEqual(wrapped))
            {
                return known.Cipher;
            }
            known.Cipher.Dispose();
        }
        else if (ciphers.Count >= MaxCiphersPerThread)
        {
            foreach (var c in ciphers.Values)
            {
                c.Cipher.Dispose();
            }
            ciphers.Clear();
        }
        var cipher = new AesGcm(key, TagSize);
        ciphers[kid] = (wrapped, cipher);
        return cipher;
    }

    /// <summary>Forgets an unwrapped key (after its erasure).</summary>
    public void Forget(long kid)
    {
        if (_dataKeys.TryRemove(kid, out var known))
        {
            CryptographicOperations.ZeroMemory(known.Key);
        }
    }

    private static byte[] WrapAad(long kid, string kind, string owner) => Encoding.UTF8.GetBytes($"ward/data-key/v1\0{kid}\0{kind}\0{owner}");

    /// <summary>Installs the index key (unwrapped from the store at start).</summary>
    public void UseIndexKey(byte[] key) => Blind = new Blinder(key);

    /// <summary>Installs the audit key (unwrapped from the store at start): it seals the audit log's entries.</summary>
    public void UseAuditKey(long kid, byte[] key) => Audit = new AuditSeal(kid, key);

    /// <summary>Seals and opens the audit log's entries (set at start with the other keys).</summary>
    public AuditSeal Audit { get; private set; } = null!;

    // ------------------------------------------------------------------ record envelopes

    /// <summary>Encrypts one stored version: <c>[1][nonce 12][ciphertext][tag 16]</c>, bound to type, id, version and key id.</summary>
    public static byte[] Seal(AesGcm cipher, long kid, string type, string id, int version, ReadOnlySpan<byte> plaintext)
    {
        var envelope = new byte[1 + NonceSize + plaintext.Length + TagSize];
        envelope[0] = EnvelopeVersion;
        var nonce = envelope.AsSpan(1, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        Span<byte> aad = stackalloc byte[AadMax];
        var aadLength = RecordAad(aad, type, id, version, kid);
        cipher.Encrypt(nonce, plaintext, envelope.AsSpan(1 + NonceSize, plaintext.Length), envelope.AsSpan(envelope.Length - TagSize), aad[..aadLength]);
        return envelope;
    }

    /// <summary>Decrypts one stored version; a version whose tag does not verify is never returned.</summary>
    public byte[] OpenRecord(AesGcm cipher, long kid, string type, string id, int version, ReadOnlySpan<byte> envelope)
    {
        if (envelope.Length < 1 + NonceSize + TagSize || envelope[0] != EnvelopeVersion)
        {
            throw Integrity(type, id, version);
        }
        var plaintext = new byte[envelope.Length - 1 - NonceSize - TagSize];
        Span<byte> aad = stackalloc byte[AadMax];
        var aadLength = RecordAad(aad, type, id, version, kid);
        try
        {
            cipher.Decrypt(envelope.Slice(1, NonceSize), envelope.Slice(1 + NonceSize, plaintext.Length), envelope[^TagSize..], plaintext, aad[..aadLength]);
        }
        catch (AuthenticationTagMismatchException)
        {
            throw Integrity(type, id, version);
        }
        return plaintext;
    }

    public RecordIntegrityException Integrity(string type, string id, int version)
    {
        LogRecordIntegrity(Logger, type, version);
        return new RecordIntegrityException(type, id, version);
    }

    // Resource types are at most 40 ASCII characters and ids 64; the rest is fixed.
    private const int AadMax = 256;

    private static int RecordAad(Span<byte> aad, string type, string id, int version, long kid)
    {
        var n = 0;
        "ward/record/v1\0"u8.CopyTo(aad);
        n += 15;
        n += Encoding.UTF8.GetBytes(type, aad[n..]);
        aad[n++] = 0;
        n += Encoding.UTF8.GetBytes(id, aad[n..]);
        aad[n++] = 0;
        version.TryFormat(aad[n..], out var w, default, System.Globalization.CultureInfo.InvariantCulture);
        n += w;
        aad[n++] = 0;
        kid.TryFormat(aad[n..], out w, default, System.Globalization.CultureInfo.InvariantCulture);
        return n + w;
    }

    // The resource's id stays out of the log (it names a patient's record); ward verify names the damaged versions.
    [LoggerMessage(Level = LogLevel.Critical, Message = "Integrity check failed for a {Type} (version {Version}): its ciphertext, its binding or its key was altered. It is not served; ward verify names it.")]
    private static partial void LogRecordIntegrity(ILogger logger, string type, int version);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Integrity check failed for data key {Kid}: the wrapped key was altered or belongs to another master key.")]
    private static partial void LogKeyIntegrity(ILogger logger, long kid);
}

/// <summary>
/// The blind index: identifying search values become HMAC-SHA-256 (truncated to 128 bits, base64url) under the index key,
/// separated by kind and parameter, so that equal values match while the database holds no value in clear.
/// </summary>
internal sealed class Blinder(byte[] key)
{
    public const char Prefix = 'p';
    public const char Exact = 'x';
    public const char Token = 't';

    /// <summary>A reference that names no resource of this node (a URL, or a conditional reference's search).</summary>
    public const char Url = 'u';

    /// <summary>The audit log's index columns that name a patient or a person.</summary>
    public const char Audit = 'a';

    public string Hash(char kind, string param, ReadOnlySpan<char> value)
    {
        var max = 2 + Encoding.UTF8.GetMaxByteCount(param.Length + value.Length);
        var rented = max > 512 ? ArrayPool<byte>.Shared.Rent(max) : null;
        Span<byte> buffer = rented ?? stackalloc byte[512];
        buffer[0] = (byte)kind;
        var n = 1 + Encoding.UTF8.GetBytes(param, buffer[1..]);
        buffer[n++] = 0;
        n += Encoding.UTF8.GetBytes(value, buffer[n..]);
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(key, buffer[..n], mac);
        if (rented is not null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
        return Base64Url.EncodeToString(mac[..16]);
    }
}

/// <summary>
/// The audit log's entries at rest: each entry's AuditEvent sealed with AES-256-GCM under the audit key (a data key
/// wrapped by the master key, like every other), <c>[1][nonce 12][ciphertext][tag 16]</c>, bound to the entry's index
/// and the key id so that an entry moved to another index, or sealed under another key, does not open. The Merkle
/// leaf stays the hash of the plaintext, kept beside it: the tree and its checkpoints verify without this key.
/// </summary>
internal sealed class AuditSeal(long kid, byte[] key)
{
    private const int NonceSize = 12;
    private const int TagSize = 16;
    private const byte Version = 1;

    // AesGcm is not thread-safe; creating one costs about a microsecond: each thread keeps its own.
    private readonly ThreadLocal<AesGcm> _cipher = new(() => new AesGcm(key, TagSize));

    /// <summary>The key id the entries are sealed under.</summary>
    public long Kid { get; } = kid;

    /// <summary>Seals the entry at <paramref name="index"/>.</summary>
    public byte[] Seal(long index, ReadOnlySpan<byte> plaintext)
    {
        var envelope = new byte[1 + NonceSize + plaintext.Length + TagSize];
        envelope[0] = Version;
        var nonce = envelope.AsSpan(1, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        _cipher.Value!.Encrypt(nonce, plaintext, envelope.AsSpan(1 + NonceSize, plaintext.Length), envelope.AsSpan(envelope.Length - TagSize), Aad(index));
        return envelope;
    }

    /// <summary>Opens the entry stored at <paramref name="index"/>; null when it does not verify (altered, moved, or not sealed by this node).</summary>
    public byte[]? Open(long index, ReadOnlySpan<byte> envelope)
    {
        if (envelope.Length < 1 + NonceSize + TagSize || envelope[0] != Version)
        {
            return null;
        }
        var plaintext = new byte[envelope.Length - 1 - NonceSize - TagSize];
        try
        {
            _cipher.Value!.Decrypt(envelope.Slice(1, NonceSize), envelope.Slice(1 + NonceSize, plaintext.Length), envelope[^TagSize..], plaintext, Aad(index));
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
        return plaintext;
    }

    private byte[] Aad(long index) => Encoding.UTF8.GetBytes(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"ward/audit/v1\0{index}\0{Kid}"));
}

/// <summary>A stored version whose authentication tag does not verify: altered, swapped or bound to another key.</summary>
internal sealed class RecordIntegrityException(string type, string id, int version)
    : Exception($"{type}/{id} version {version} failed its integrity check")
{
    public string Type { get; } = type;
    public string Id { get; } = id;
    public int Version { get; } = version;
}

/// <summary>A wrapped data key that does not verify under the master key.</summary>
internal sealed class KeyIntegrityException(long kid) : Exception($"Data key {kid} failed its integrity check");

/// <summary>A version encrypted under a data key that was destroyed (crypto-shredding).</summary>
internal sealed class RecordErasedException(string type, string id) : Exception($"{type}/{id} was erased")
{
    public string Type { get; } = type;
    public string Id { get; } = id;
}
