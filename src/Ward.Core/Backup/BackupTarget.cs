using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Ward.Core.Audit;
using Ward.Core.Node;

namespace Ward.Core.Backup;

/// <summary>
/// A backup target folder. The node only ever creates files in it, each under its final name and never again:
/// <c>node.vkey</c> (the node's public signing key, at the first backup), <c>packs/xx/SHA256.pack</c> (sealed chunks,
/// named by their content hash), <c>snapshots/ID.keys</c> (the node's keys and configuration, sealed to the recovery
/// key), <c>snapshots/ID.manifest</c> (the signed manifest, written last: a snapshot exists once its manifest does) and
/// <c>erasures/TAG.note</c> (signed erasure records). Overwriting or deleting is for <c>ward backup prune</c> alone.
/// </summary>
internal sealed class BackupTarget
{
    public const string VerifierFile = "node.vkey";

    private BackupTarget(string root) => Root = root;

    public string Root { get; }

    /// <summary>An existing target (for list, verify, restore, prune).</summary>
    public static BackupTarget Open(string dir)
    {
        var root = Path.GetFullPath(dir);
        if (!File.Exists(Path.Combine(root, VerifierFile)))
        {
            throw new NodeException($"'{root}' is not a Ward backup target (no {VerifierFile}).");
        }
        return new BackupTarget(root);
    }

    /// <summary>The target for a node's backups, set up at the first one; a target of another node is refused.</summary>
    public static BackupTarget OpenFor(string dir, SignedNote.Verifier node)
    {
        var root = Path.GetFullPath(dir);
        if (File.Exists(root))
        {
            throw new NodeException($"'{root}' is a file: the backup target is a folder.");
        }
        Directory.CreateDirectory(root);
        var target = new BackupTarget(root);
        var vkey = Path.Combine(root, VerifierFile);
        if (!File.Exists(vkey))
        {
            target.WriteNew(vkey, Encoding.UTF8.GetBytes(node.VKey + "\n"));
        }
        else if (File.ReadAllText(vkey).Trim() != node.VKey)
        {
            throw new NodeException($"'{root}' holds the backups of another node ({File.ReadAllText(vkey).Trim()}); give each node a target of its own.");
        }
        return target;
    }

    /// <summary>The key that signs this target's manifests: the one given (pinned by the operator), else the target's own.</summary>
    public SignedNote.Verifier Verifier(string? pinned = null)
    {
        var file = Path.Combine(Root, VerifierFile);
        var stored = ParseVerifier(File.ReadAllText(file).Trim(), file, message => new BackupDamageException(message));
        if (pinned is not null && ParseVerifier(pinned, "The node key you trust", message => new NodeException(message)) is var trusted && trusted.VKey != stored.VKey)
        {
            throw new BackupDamageException($"The target's node key {stored.VKey} is not the node key you trust ({trusted.VKey}): the target was replaced or belongs to another node.");
        }
        return stored;
    }

    private static SignedNote.Verifier ParseVerifier(string vkey, string what, Func<string, Exception> error)
    {
        try
        {
            return SignedNote.ParseVerifier(vkey);
        }
        catch (FormatException e)
        {
            throw error($"{what} is not a node public key such as keys/node.vkey holds ({e.Message.TrimEnd('.')}).");
        }
    }

    public string PackPath(string hash) => Path.Combine(Root, "packs", hash[..2], hash + ".pack");

    public string ManifestPath(string snapshot) => Path.Combine(Root, "snapshots", snapshot + ".manifest");

    public string KeysPath(string snapshot) => Path.Combine(Root, "snapshots", snapshot + ".keys");

    /// <summary>The snapshot ids, oldest first (ids start with their UTC time).</summary>
    public List<string> Snapshots()
    {
        var dir = Path.Combine(Root, "snapshots");
        return !Directory.Exists(dir) ? [] : Directory.EnumerateFiles(dir, "*.manifest").Select(f => Path.GetFileNameWithoutExtension(f)!).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Resolves <c>latest</c> or an id (a unique prefix is enough).</summary>
    public string Resolve(string snapshot)
    {
        var all = Snapshots();
        if (all.Count == 0)
        {
            throw new NodeException($"The target '{Root}' holds no snapshot yet.");
        }
        if (snapshot == "latest")
        {
            return all[^1];
        }
        var matches = all.Where(s => s.StartsWith(snapshot, StringComparison.Ordinal)).ToList();
        return matches.Count == 1 ? matches[0]
            : throw new NodeException(matches.Count == 0 ? $"No snapshot '{snapshot}' on the target (see: ward backup list --target {Root})." : $"'{snapshot}' names several snapshots; give more of the id.");
    }

    /// <summary>Reads a manifest and checks its signature; a manifest that does not verify is damage, named.</summary>
    public (Manifest Manifest, byte[] Bytes) ReadManifest(string snapshot, SignedNote.Verifier verifier)
    {
        var path = ManifestPath(snapshot);
        if (!File.Exists(path))
        {
            throw new BackupDamageException($"snapshot {snapshot}: its manifest is missing.");
        }
        var bytes = File.ReadAllBytes(path);
        string? text;
        try
        {
            if (!SignedNote.TryOpen(Encoding.UTF8.GetString(bytes), [verifier], out text, out _, out var error))
            {
                throw new BackupDamageException($"snapshot {snapshot}: the manifest's signature does not verify ({error}): it was altered or forged.");
            }
        }
        catch (FormatException e)
        {
            throw new BackupDamageException($"snapshot {snapshot}: the manifest is not a signed note ({e.Message}).");
        }
        Manifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize(text, ManifestJson.Default.Manifest) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new BackupDamageException($"snapshot {snapshot}: the signed manifest cannot be read ({e.Message}).");
        }
        if (manifest.Format != Manifest.FormatName || manifest.Snapshot != snapshot)
        {
            throw new BackupDamageException($"snapshot {snapshot}: the manifest is of another format or snapshot ({manifest.Format}, {manifest.Snapshot}).");
        }
        return (manifest, bytes);
    }

    /// <summary>Creates a file of the target under its final name (never replacing one), read-only, flushed to disk.</summary>
    public void WriteNew(string path, ReadOnlySpan<byte> content) => WriteNewThenFlush(path, content).GetAwaiter().GetResult();

    /// <summary>
    /// Creates a file under its final name (never replacing one), read-only, and returns the flush to disk running in the
    /// background: the caller goes on with the next one and waits for all before what must follow them (the manifest).
    /// </summary>
    public Task WriteNewThenFlush(string path, ReadOnlySpan<byte> content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, PreallocationSize = content.Length };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.GroupRead;
        }
        var stream = new FileStream(path, options);
        try
        {
            stream.Write(content);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
        return Task.Run(() =>
        {
            using (stream)
            {
                stream.Flush(flushToDisk: true);
            }
        });
    }

    public string Relative(string path) => Path.GetRelativePath(Root, path);

    /// <summary>Records an erasure on the target (once per tag), signed by the node; a restore re-applies every one.</summary>
    public bool RecordErasure(SignedNote.Signer signer, string tag, DateTimeOffset when)
    {
        var path = Path.Combine(Root, "erasures", tag + ".note");
        if (File.Exists(path))
        {
            return false;
        }
        var note = SignedNote.Sign($"ward-erasure-1\n{tag}\n{when.ToString("O", CultureInfo.InvariantCulture)}\n", signer);
        try
        {
            WriteNew(path, Encoding.UTF8.GetBytes(note));
        }
        catch (IOException) when (File.Exists(path))
        {
            return false;
        }
        return true;
    }

    /// <summary>The erasure tags recorded on the target; records whose signature does not verify are reported, never applied.</summary>
    public List<string> Erasures(SignedNote.Verifier verifier, List<string> problems)
    {
        var tags = new List<string>();
        var dir = Path.Combine(Root, "erasures");
        var files = Directory.Exists(dir) ? Directory.EnumerateFiles(dir, "*.note").Order(StringComparer.Ordinal).ToList() : [];
        foreach (var file in files)
        {
            if (SignedNote.TryOpen(File.ReadAllText(file), [verifier], out var text, out _, out _)
                && text.Split('\n') is ["ward-erasure-1", var tag, _, ""] && Path.GetFileNameWithoutExtension(file) == tag)
            {
                tags.Add(tag);
            }
            else
            {
                problems.Add($"erasure record {Relative(file)} does not verify: it was altered or forged");
            }
        }
        return tags;
    }

    public static string Sha256(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}

/// <summary>A backup that is damaged, incomplete or forged: verification fails (exit status 1), the message names what.</summary>
internal sealed class BackupDamageException(string message) : Exception(message);
