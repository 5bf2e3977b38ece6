using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;

namespace Ward.Core.Backup;

/// <summary>
/// Seals and opens one chunk: Deflate (fastest) when it saves space, then AES-256-GCM under the backup key with a fresh
/// random nonce and the chunk id as associated data (a chunk cannot be moved under another id). Compressing before
/// encrypting leaks sizes only, and only to whoever sees the target: no attacker-chosen data is mixed with secrets in a
/// chunk they could observe again.
/// </summary>
internal sealed class ChunkSeal(byte[] key) : IDisposable
{
    private const byte Stored = 0;
    private const byte Deflated = 1;

    private readonly AesGcm _aes = new(key, 16);
    private readonly byte[] _body = new byte[1 + Chunker.MaxSize + 1024];
    private readonly byte[] _aad = new byte[16];

    /// <summary>Seals <paramref name="plain"/> into a pooled buffer; the caller returns it to <see cref="ArrayPool{T}.Shared"/>.</summary>
    public (byte[] Buffer, int Length) Seal(ReadOnlySpan<byte> plain, UInt128 id)
    {
        var bodyLength = 1 + plain.Length;
        _body[0] = Stored;
        using (var output = new MemoryStream(_body, 1, _body.Length - 1))
        {
            using (var deflate = new DeflateStream(output, CompressionLevel.Fastest, leaveOpen: true))
            {
                deflate.Write(plain);
            }
            if (output.Position < plain.Length)
            {
                _body[0] = Deflated;
                bodyLength = 1 + (int)output.Position;
            }
        }
        if (_body[0] == Stored)
        {
            plain.CopyTo(_body.AsSpan(1));
        }
        var length = bodyLength + 12 + 16;
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        var sealedChunk = buffer.AsSpan(0, length);
        RandomNumberGenerator.Fill(sealedChunk[..12]);
        BinaryPrimitives.WriteUInt128BigEndian(_aad, id);
        _aes.Encrypt(sealedChunk[..12], _body.AsSpan(0, bodyLength), sealedChunk[12..^16], sealedChunk[^16..], _aad);
        return (buffer, length);
    }

    /// <summary>Opens a sealed chunk into <paramref name="plain"/> (exactly its length); false when it does not decrypt or decompress to that length.</summary>
    public bool TryOpen(ReadOnlySpan<byte> sealedChunk, UInt128 id, Span<byte> plain)
    {
        if (sealedChunk.Length < ChunkEntry.Overhead || sealedChunk.Length - 28 > _body.Length)
        {
            return false;
        }
        var body = _body.AsSpan(0, sealedChunk.Length - 28);
        BinaryPrimitives.WriteUInt128BigEndian(_aad, id);
        try
        {
            _aes.Decrypt(sealedChunk[..12], sealedChunk[12..^16], sealedChunk[^16..], body, _aad);
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
        switch (body[0])
        {
            case Stored when body.Length - 1 == plain.Length:
                body[1..].CopyTo(plain);
                return true;
            case Deflated:
                using (var deflate = new DeflateStream(new MemoryStream(_body, 1, body.Length - 1, writable: false), CompressionMode.Decompress))
                {
                    try
                    {
                        deflate.ReadExactly(plain);
                        // Nothing may follow the content: the manifest's length is the chunk's whole length.
                        Span<byte> extra = stackalloc byte[1];
                        return deflate.Read(extra) == 0;
                    }
                    catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
                    {
                        return false;
                    }
                }
            default:
                return false;
        }
    }

    public void Dispose() => _aes.Dispose();
}
