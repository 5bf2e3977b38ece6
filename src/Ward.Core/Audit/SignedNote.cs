using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;

namespace Ward.Core.Audit;

/// <summary>
/// C2SP signed notes with Ed25519 keys (signed-note.md): a text ending in a newline, a blank line, then one line per
/// signature, <c>— name base64(keyID || signature)</c>, where keyID = SHA-256(name || 0x0A || 0x01 || public key)[0:4].
/// Keys are written as the vkey <c>name+hex(keyID)+base64(0x01 || public key)</c>; the private form is
/// <c>PRIVATE+KEY+name+hex(keyID)+base64(0x01 || seed)</c>, as Go's sumdb/note writes it.
/// </summary>
internal static class SignedNote
{
    private const byte Ed25519Type = 0x01;
    private const string Dash = "\u2014 ";
    private static readonly SignatureAlgorithm Algorithm = SignatureAlgorithm.Ed25519;

    /// <summary>A verifier: a name and an Ed25519 public key.</summary>
    internal sealed record Verifier(string Name, uint KeyId, byte[] PublicKey)
    {
        public string VKey => $"{Name}+{KeyId:x8}+{Convert.ToBase64String([Ed25519Type, .. PublicKey])}";
    }

    /// <summary>A signer: a name and an Ed25519 key made from its 32-byte seed.</summary>
    internal sealed class Signer : IDisposable
    {
        private readonly Key _key;

        public Signer(string name, ReadOnlySpan<byte> seed)
        {
            CheckName(name);
            _key = Key.Import(Algorithm, seed, KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
            var publicKey = _key.PublicKey.Export(KeyBlobFormat.RawPublicKey);
            Verifier = new Verifier(name, KeyIdOf(name, publicKey), publicKey);
        }

        public Verifier Verifier { get; }

        public string SKey => $"PRIVATE+KEY+{Verifier.Name}+{Verifier.KeyId:x8}+{Convert.ToBase64String([Ed25519Type, .. _key.Export(KeyBlobFormat.RawPrivateKey)])}";

        public static Signer Create(string name) => new(name, RandomNumberGenerator.GetBytes(32));

        /// <summary>Parses <c>PRIVATE+KEY+name+keyid+base64</c>.</summary>
        public static Signer Parse(string skey)
        {
            var parts = skey.Trim().Split('+', 5);
            if (parts.Length != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY")
            {
                throw new FormatException("Not a signed-note private key (PRIVATE+KEY+name+keyid+key).");
            }
            var blob = Convert.FromBase64String(parts[4]);
            if (blob.Length != 33 || blob[0] != Ed25519Type)
            {
                throw new FormatException("Only Ed25519 signed-note keys are supported.");
            }
            var signer = new Signer(parts[2], blob.AsSpan(1));
            if (parts[3] != signer.Verifier.KeyId.ToString("x8", CultureInfo.InvariantCulture))
            {
                signer.Dispose();
                throw new FormatException("The key id of the private key does not match its key.");
            }
            return signer;
        }

        /// <summary>The signature line of <paramref name="text"/> under this key.</summary>
        public string SignatureLine(string text)
        {
            var signature = Algorithm.Sign(_key, Encoding.UTF8.GetBytes(text));
            var blob = new byte[4 + signature.Length];
            BinaryPrimitives.WriteUInt32BigEndian(blob, Verifier.KeyId);
            signature.CopyTo(blob, 4);
            return $"{Dash}{Verifier.Name} {Convert.ToBase64String(blob)}\n";
        }

        public void Dispose() => _key.Dispose();
    }

    public static uint KeyIdOf(string name, ReadOnlySpan<byte> publicKey)
    {
        var input = new byte[Encoding.UTF8.GetByteCount(name) + 2 + publicKey.Length];
        var n = Encoding.UTF8.GetBytes(name, input);
        input[n] = 0x0A;
        input[n + 1] = Ed25519Type;
        publicKey.CopyTo(input.AsSpan(n + 2));
        return BinaryPrimitives.ReadUInt32BigEndian(SHA256.HashData(input));
    }

    private static void CheckName(string name)
    {
        if (name.Length == 0 || name.Any(c => char.IsWhiteSpace(c) || c == '+'))
        {
            throw new FormatException($"'{name}' is not a signed-note key name (non-empty, no spaces, no '+').");
        }
    }

    /// <summary>Parses a vkey <c>name+keyid+base64(0x01 || key)</c>, checking its key id.</summary>
    public static Verifier ParseVerifier(string vkey)
    {
        var parts = vkey.Trim().Split('+', 3);
        if (parts.Length != 3)
        {
            throw new FormatException("Not a signed-note verifier key (name+keyid+key).");
        }
        CheckName(parts[0]);
        var blob = Convert.FromBase64String(parts[2]);
        if (blob.Length != 33 || blob[0] != Ed25519Type)
        {
            throw new FormatException("Only Ed25519 signed-note keys are supported.");
        }
        var verifier = new Verifier(parts[0], KeyIdOf(parts[0], blob.AsSpan(1)), blob[1..]);
        if (parts[1] != verifier.KeyId.ToString("x8", CultureInfo.InvariantCulture))
        {
            throw new FormatException("The key id of the verifier key does not match its key.");
        }
        return verifier;
    }

    /// <summary>Signs a text (which must end in a newline) with one or more keys.</summary>
    public static string Sign(string text, params Signer[] signers)
    {
        CheckText(text);
        var note = new StringBuilder(text).Append('\n');
        foreach (var signer in signers)
        {
            note.Append(signer.SignatureLine(text));
        }
        return note.ToString();
    }

    private static void CheckText(string text)
    {
        if (text.Length == 0 || text[^1] != '\n' || text.Contains("\n\n", StringComparison.Ordinal))
        {
            throw new FormatException("A signed-note text is non-empty, ends in a newline and has no blank line.");
        }
    }

    /// <summary>
    /// Splits a note and checks its signatures by the known verifiers: the text, and the names whose signature
    /// verified. Lines by unknown keys are ignored (as the format requires); a line by a known key that does not
    /// verify makes the whole note invalid.
    /// </summary>
    public static bool TryOpen(string note, IReadOnlyCollection<Verifier> known, [NotNullWhen(true)] out string? text, out List<string> verifiedBy, out string? error)
    {
        text = null;
        verifiedBy = [];
        var split = note.LastIndexOf("\n\n", StringComparison.Ordinal);
        if (split < 0 || note.Length == 0 || note[^1] != '\n')
        {
            error = "not a signed note (no blank line before the signatures, or no final newline)";
            return false;
        }
        var body = note[..(split + 1)];
        var message = Encoding.UTF8.GetBytes(body);
        foreach (var line in note[(split + 2)..^1].Split('\n'))
        {
            if (!line.StartsWith(Dash, StringComparison.Ordinal) || line[Dash.Length..].Split(' ') is not [var name, var encoded])
            {
                error = "a signature line is malformed";
                return false;
            }
            byte[] blob;
            try
            {
                blob = Convert.FromBase64String(encoded);
            }
            catch (FormatException)
            {
                error = "a signature is not base64";
                return false;
            }
            if (blob.Length < 4)
            {
                error = "a signature is too short";
                return false;
            }
            var keyId = BinaryPrimitives.ReadUInt32BigEndian(blob);
            var verifier = known.FirstOrDefault(v => v.Name == name && v.KeyId == keyId);
            if (verifier is null)
            {
                continue;
            }
            var publicKey = PublicKey.Import(Algorithm, verifier.PublicKey, KeyBlobFormat.RawPublicKey);
            if (blob.Length != 4 + Algorithm.SignatureSize || !Algorithm.Verify(publicKey, message, blob.AsSpan(4)))
            {
                error = $"invalid signature for key {name}+{keyId:x8}";
                return false;
            }
            verifiedBy.Add(name);
        }
        if (verifiedBy.Count == 0)
        {
            error = "no signature by a known key";
            return false;
        }
        text = body;
        error = null;
        return true;
    }
}

/// <summary>
/// A transparency log checkpoint (C2SP tlog-checkpoint): origin line, decimal tree size, base64 root hash, then
/// optional extension lines; carried in a signed note.
/// </summary>
internal sealed record Checkpoint(string Origin, long Size, byte[] Root)
{
    public string Text => $"{Origin}\n{Size.ToString(CultureInfo.InvariantCulture)}\n{Convert.ToBase64String(Root)}\n";

    public static bool TryParse(string text, [NotNullWhen(true)] out Checkpoint? checkpoint)
    {
        checkpoint = null;
        var lines = text.Split('\n');
        if (lines.Length < 4 || lines[^1].Length != 0 || lines[0].Length == 0
            || !long.TryParse(lines[1], NumberStyles.None, CultureInfo.InvariantCulture, out var size)
            || lines[1] != size.ToString(CultureInfo.InvariantCulture))
        {
            return false;
        }
        try
        {
            var root = Convert.FromBase64String(lines[2]);
            if (root.Length != Merkle.HashSize)
            {
                return false;
            }
            checkpoint = new Checkpoint(lines[0], size, root);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
