using Ward.Core.Node;

namespace Ward.Core.Audit;

/// <summary>
/// The node's Ed25519 signing key (<c>keys/node.key</c>, C2SP private key form, 0600) and its public verifier key
/// (<c>keys/node.vkey</c>), named after the log origin <c>ward/&lt;node name&gt;</c>. It signs audit checkpoints.
/// </summary>
internal static class NodeKey
{
    public const string KeyFile = "keys/node.key";
    public const string VerifierFile = "keys/node.vkey";

    public static string OriginOf(NodeConfig config) => $"ward/{config.Name}";

    /// <summary>
    /// Loads the key; creates it for a node that has not signed anything yet. Once checkpoints exist, a missing key is an
    /// error: a new key would make the node's past checkpoints unverifiable against the key witnesses know.
    /// </summary>
    public static SignedNote.Signer LoadOrCreate(NodeConfig config, Storage.RecordStore store)
    {
        var path = config.Resolve(KeyFile);
        if (File.Exists(path))
        {
            var signer = Read(path);
            if (signer.Verifier.Name != OriginOf(config))
            {
                var name = signer.Verifier.Name;
                signer.Dispose();
                throw new NodeException($"{path} is the key of '{name}', not of this node ('{OriginOf(config)}'): restore the node's own key.");
            }
            return signer;
        }
        if (store.Read(s => s.AuditLatestCheckpoint()) is not null)
        {
            throw new NodeException($"The node signing key {path} is missing, but this node has signed audit checkpoints with it. "
                + "Restore keys/node.key from the node's backup; a new key would make its audit history unverifiable.");
        }
        return Create(config);
    }

    /// <summary>Reads the private key file; a file that holds no such key is named, with what to do.</summary>
    public static SignedNote.Signer Read(string path)
    {
        try
        {
            return SignedNote.Signer.Parse(File.ReadAllText(path).Trim());
        }
        catch (FormatException e)
        {
            throw new NodeException($"{path} is not the node's signing key ({e.Message.TrimEnd('.')}): restore keys/node.key from the node's backup.");
        }
    }

    /// <summary>Creates the key of a new node (refusing to replace one).</summary>
    public static SignedNote.Signer Create(NodeConfig config)
    {
        var created = SignedNote.Signer.Create(OriginOf(config));
        var path = config.Resolve(KeyFile);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        NodeConfig.WritePrivate(path, created.SKey + "\n", durable: true);
        File.WriteAllText(config.Resolve(VerifierFile), created.Verifier.VKey + "\n");
        return created;
    }
}
