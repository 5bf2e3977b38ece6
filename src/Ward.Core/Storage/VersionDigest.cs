using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Ward.Core.Storage;

/// <summary>
/// The SHA-256 that the audit log commits for every stored version: over its identity and metadata
/// (<c>type/id/_history/version</c>, last-updated ticks, method, deleted flag, one per line) followed by the stored
/// envelope (the ciphertext, so that verifying the store needs no key and survives crypto-shredding).
/// <c>ward verify</c> recomputes it from the rows to find versions modified, removed, inserted or swapped behind the node.
/// </summary>
internal static class VersionDigest
{
    public static byte[] Of(string type, string id, int version, long lastUpdatedTicks, string method, bool deleted, byte[]? envelope)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"{type}/{id}/_history/{version}\n{lastUpdatedTicks}\n{method}\n{(deleted ? 1 : 0)}\n")));
        if (envelope is not null)
        {
            hash.AppendData(envelope);
        }
        return hash.GetHashAndReset();
    }
}
