using System.Security.Cryptography;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Node;

namespace Ward.Server.Identity;

/// <summary>
/// The authorization server's keys, in the node's <c>keys/</c> folder (0600): an RSA key that signs access and identity
/// tokens (published at <c>/.well-known/jwks</c>), and a symmetric key that encrypts the tokens only the node reads
/// (authorization codes, refresh tokens). Made by <c>ward init</c>, or at the first start of a node made before them.
/// </summary>
internal sealed class OidcKeys
{
    private const string SigningFile = "keys/oidc-signing.pem";
    private const string EncryptionFile = "keys/oidc-encryption.key";

    private OidcKeys(RsaSecurityKey signing, SymmetricSecurityKey encryption)
    {
        Signing = signing;
        Encryption = encryption;
    }

    public RsaSecurityKey Signing { get; }
    public SymmetricSecurityKey Encryption { get; }

    public static OidcKeys Load(NodeConfig config)
    {
        var signingPath = config.Resolve(SigningFile);
        var encryptionPath = config.Resolve(EncryptionFile);
        if (!File.Exists(signingPath))
        {
            using var fresh = RSA.Create(3072);
            Write(signingPath, fresh.ExportPkcs8PrivateKeyPem());
        }
        if (!File.Exists(encryptionPath))
        {
            Write(encryptionPath, Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) + "\n");
        }
        var rsa = RSA.Create();
        try
        {
            rsa.ImportFromPem(File.ReadAllText(signingPath));
        }
        catch (Exception e) when (e is ArgumentException or CryptographicException)
        {
            throw new NodeException($"{signingPath} is not a PEM private key: {e.Message}");
        }
        byte[] secret;
        try
        {
            secret = Convert.FromBase64String(File.ReadAllText(encryptionPath).Trim());
        }
        catch (FormatException)
        {
            throw new NodeException($"{encryptionPath} is not a base64 key.");
        }
        if (secret.Length != 32)
        {
            throw new NodeException($"{encryptionPath} must hold a 256-bit key.");
        }
        var signing = new RsaSecurityKey(rsa);
        signing.KeyId = Base64UrlEncoder.Encode(signing.ComputeJwkThumbprint());
        return new OidcKeys(signing, new SymmetricSecurityKey(secret));
    }

    private static void Write(string path, string content)
    {
        try
        {
            NodeConfig.WritePrivate(path, content, durable: true);
        }
        catch (IOException) when (File.Exists(path))
        {
            // Another process of the node made it first: use theirs.
        }
    }
}
