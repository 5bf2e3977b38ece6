using System.Net;
using System.Net.Sockets;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// One initialised node (a researcher, a backup on a target) and the bad inputs of the table: a file where a folder is
/// expected and the reverse, missing files, a YAML file that is garbage, a node whose ward.yaml is garbage, a backup
/// target with a corrupt pack, a port held busy.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BadInputNode : IAsyncLifetime
{
    private TcpListener? _busy;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "ward-badinput-" + Guid.NewGuid().ToString("N")[..8]);
    public string Node => Path.Combine(Root, "node");

    /// <summary>A copy of the node taken before any row runs: rows that may change a node get a copy of it, never of the node other rows have open.</summary>
    public string Pristine => Path.Combine(Root, "pristine");
    public string Target => Path.Combine(Root, "target");
    public string Corrupt => Path.Combine(Root, "corrupt-target");
    public string GarbageNode => Path.Combine(Root, "garbage-node");
    public string File => Path.Combine(Root, "notes.txt");
    public string Folder => Path.Combine(Root, "a-folder");
    public string Missing => Path.Combine(Root, "missing");
    public string Garbage => Path.Combine(Root, "garbage.yaml");
    public string Csv => Path.Combine(Root, "table.csv");
    public string Hierarchies => Path.Combine(Root, "hierarchies");
    public int BusyPort { get; private set; }

    /// <summary>The node's files with their SHA-256, taken before the rows run.</summary>
    public Dictionary<string, string> NodeFiles { get; private set; } = [];

    public async Task InitializeAsync()
    {
        await BackedUpNode.Ok("init", "--data", Node, "--name", "bad-input");
        var add = await WardProcess.RunAsync(["users", "add", "--data", Node, "--username", "res", "--role", "researcher", "--password-stdin"], "a long enough password 1\n");
        Assert.True(add.Code == 0, add.Stdout + add.Stderr);
        await BackedUpNode.Ok("backup", "create", "--data", Node, "--target", Target);
        BackedUpNode.CopyDir(Target, Corrupt);
        var pack = Directory.EnumerateFiles(Path.Combine(Corrupt, "packs"), "*.pack", SearchOption.AllDirectories).First();
        var bytes = System.IO.File.ReadAllBytes(pack);
        bytes[100] ^= 1;
        System.IO.File.SetUnixFileMode(pack, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        System.IO.File.WriteAllBytes(pack, bytes);
        BackedUpNode.CopyDir(Node, GarbageNode);
        System.IO.File.WriteAllText(Path.Combine(GarbageNode, "ward.yaml"), ": : [\n\t{{ not yaml\n");
        System.IO.File.WriteAllText(File, "not what the command expects\n");
        System.IO.File.WriteAllText(Garbage, ": : [\n\t{{ not yaml\n");
        System.IO.File.WriteAllText(Csv, "age;zip\n30;1234\n31;1235\n40;1236\n");
        Directory.CreateDirectory(Folder);
        Directory.CreateDirectory(Hierarchies);
        System.IO.File.WriteAllText(Path.Combine(Hierarchies, "t_hierarchy_age.csv"), "30;30-39;*\n31;30-39;*\n40;40-49;*\n");
        _busy = new TcpListener(IPAddress.Loopback, 0);
        _busy.Start();
        BusyPort = ((IPEndPoint)_busy.LocalEndpoint).Port;
        NodeFiles = BackedUpNode.Hashes(Node);
        BackedUpNode.CopyDir(Node, Pristine);
    }

    public Task DisposeAsync()
    {
        _busy?.Dispose();
        Directory.Delete(Root, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>
/// Every verb of the README's CLI reference given bad input, as an operator types it: each answers one sentence on
/// standard error (never on standard output, which scripts capture), no stack trace, the exit status the README
/// promises (2 for an operator error; 1 only for a check that found a problem), and leaves the node as it was.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CliBadInputTests(BadInputNode node) : IClassFixture<BadInputNode>
{
    /// <summary>
    /// One bad input: the arguments (placeholders: {node} the shared node, {copy} a copy of it for this row, {scratch}
    /// a path that must still not exist afterwards, and the fixture's files), the exit status, words of the sentence;
    /// <paramref name="Working"/> for a command that shows its progress before it meets the problem (stdout empty otherwise).
    /// </summary>
    private sealed record Row(string Args, string Expected, int Status = 2, string? Stdin = null, bool Working = false);

    private static readonly Row[] Rows =
    [
        // Syntax: unknown option, missing required option, malformed values (System.CommandLine's own default is exit 1).
        new("init --data {scratch} --bogus", "Unrecognized command or argument '--bogus'"),
        new("verify", "Option '--data' is required"),
        new("token --data {node} --user res --scope user/*.rs --minutes abc", "Cannot parse argument 'abc'"),
        new("token --data {node} --user res", "Option '--scope' is required"),
        new("clients add --data {node} --client-id c --kind nonsense --scopes openid", "nonsense"),
        new("research query --data {node} --researcher res --epsilon abc", "Cannot parse argument 'abc'"),
        new("backup prune --target {target} --keep abc --recovery-key {node}/recovery.key", "Cannot parse argument 'abc'"),
        new("breakglass review abc --data {node} --note x", "Cannot parse argument 'abc'"),
        new("policy default --bogus", "Unrecognized command or argument '--bogus'"),
        new("", "Required command was not provided"),

        // A missing node, a file where the node's folder is expected, a node whose ward.yaml is garbage.
        new("init --data {file}", "is a file"),
        new("serve --data {missing}", "No Ward node"),
        new("verify --data {file}", "is a file"),
        new("verify --data {garbage-node}", "is not valid"),
        new("token --data {garbage-node} --user res --scope user/*.rs", "is not valid"),
        new("token --data {missing} --user res --scope user/*.rs", "No Ward node"),
        new("keys rotate-master --data {file}", "is a file"),
        new("keys new-recovery --data {missing}", "No Ward node"),
        new("users list --data {file}", "is a file"),
        new("clients list --data {missing}", "No Ward node"),
        new("doctor --data {missing}", "No Ward node"),
        new("breakglass list --data {file}", "is a file"),
        new("audit verify --data {missing}", "No Ward node"),

        // Files: missing, a folder where a file is expected, the reverse, garbage.
        new("import --data {copy} {missing}", "neither a file nor a folder"),
        new("export --data {node} --out {file}", "is a file"),
        new("clients add --data {copy} --client-id c --kind backend --scopes system/*.rs --jwks {missing}", "No JSON Web Key Set file"),
        new("clients add --data {copy} --client-id c --kind backend --scopes system/*.rs --jwks {folder}", "is a folder"),
        new("research export --data {node} --config {missing} --out {scratch}", "No export configuration"),
        new("research export --data {node} --config {garbage} --out {scratch}", "garbage.yaml"),
        new("policy check --data {node} --file {garbage}", "garbage.yaml"),
        new("policy check --data {node} --file {folder}", "No policy file"),
        new("deid kanon --input {missing} --hierarchies {folder} --qi age --k 2 --out {scratch} --report {scratch}", "No CSV file"),
        new("deid kanon --input {folder} --hierarchies {folder} --qi age --k 2 --out {scratch} --report {scratch}", "is a folder"),
        new("deid kanon --input {csv} --hierarchies {hierarchies} --qi age --k 0 --out {scratch} --report {scratch}", "k and l must be at least 1"),
        new("dicom dump {missing}", "No DICOM file"),
        new("dicom dump {folder}", "is a folder"),
        new("dicom dump {file}", "Not DICOM"),
        new("dicom deid {missing} {scratch}", "No file or folder"),
        new("backup create --data {copy} --target {file}", "is a file"),
        new("backup list --target {missing}", "not a Ward backup target"),
        new("backup verify --target {folder}", "not a Ward backup target"),
        new("backup prune --target {target} --keep 0 --recovery-key {node}/recovery.key", "--keep must be 1 or more"),
        new("backup restore --target {target} --data {scratch} --recovery-key {file}", "recovery key"),
        new("backup restore --target {target} --data {scratch} --recovery-key {folder}", "No recovery key"),

        // Malformed values the commands check themselves.
        new("patient erase --data {copy} --patient Observation/1 --reason test", "Patient/ID"),
        new("research budget --data {copy} --researcher res --epsilon -1", "--epsilon"),
        new("token --data {node} --user res --scope user/*.rs --minutes 0", "--minutes must be between 1 and 60"),
        new("token --data {node} --user nobody --scope user/*.rs", "No user 'nobody'"),
        new("users add --data {copy} --username u --role clinician", "--password-stdin"),
        new("users add --data {copy} --username u --role surgeon --password-stdin", "not a role", Stdin: "a long enough password 1\n"),
        new("users disable --data {copy} --username nobody", "nobody"),
        new("users reset-mfa --data {copy} --username nobody", "nobody"),
        new("clients remove --data {copy} --client-id nobody", "No client 'nobody'"),
        new("breakglass review 99 --data {copy} --note x", "no break-the-glass opening 99"),
        new("serve --data {node} --urls nonsense", "is not a listen address"),
        new("demo --data {scratch} --urls nonsense", "is not a listen address"),

        // Servers: unreachable, malformed, a busy port.
        new("audit verify --server http://127.0.0.1:1 --checkpoint {scratch}", "Could not reach"),
        new("audit verify --server nonsense --checkpoint {scratch}", "is not the base URL"),
        new("serve --data {copy} --urls http://127.0.0.1:{port}", "already in use"),
        new("demo --data {scratch} --urls http://127.0.0.1:{port}", "already in use"),

        // A corrupt backup pack: verify checked and found damage (1); restore could not be done (2) and leaves nothing.
        new("backup verify --target {corrupt}", "corrupt", Status: 1),
        new("backup restore --target {corrupt} --data {scratch} --recovery-key {node}/recovery.key", "corrupt", Working: true),
    ];

    [Fact]
    public async Task Every_verb_answers_bad_input_with_one_sentence_on_stderr_exit_2_no_stack_trace_and_an_unchanged_node()
    {
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        await Parallel.ForEachAsync(Rows.Select((row, i) => (row, i)), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (item, _) =>
        {
            var problems = await CheckAsync(item.row, item.i);
            if (problems.Count > 0)
            {
                failures.Add($"ward {item.row.Args}\n    " + string.Join("\n    ", problems));
            }
        });
        // The shared node: none of the rows on it changed a byte.
        Assert.Equal(node.NodeFiles, BackedUpNode.Hashes(node.Node));
        Assert.True(failures.IsEmpty, $"{failures.Count} of {Rows.Length} rows failed:\n" + string.Join("\n", failures.Order(StringComparer.Ordinal)));
    }

    private async Task<List<string>> CheckAsync(Row row, int index)
    {
        var rowRoot = Path.Combine(node.Root, "rows", index.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var copy = Path.Combine(rowRoot, "copy");
        var scratch = Path.Combine(rowRoot, "scratch", "made");
        Directory.CreateDirectory(Path.GetDirectoryName(scratch)!);
        if (row.Args.Contains("{copy}", StringComparison.Ordinal))
        {
            BackedUpNode.CopyDir(node.Pristine, copy);
        }
        var before = Directory.Exists(copy) ? BackedUpNode.Hashes(copy) : [];
        var args = row.Args.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(a => a
            .Replace("{node}", node.Node, StringComparison.Ordinal).Replace("{copy}", copy, StringComparison.Ordinal)
            .Replace("{scratch}", scratch, StringComparison.Ordinal).Replace("{target}", node.Target, StringComparison.Ordinal)
            .Replace("{corrupt}", node.Corrupt, StringComparison.Ordinal).Replace("{garbage-node}", node.GarbageNode, StringComparison.Ordinal)
            .Replace("{file}", node.File, StringComparison.Ordinal).Replace("{folder}", node.Folder, StringComparison.Ordinal)
            .Replace("{missing}", node.Missing, StringComparison.Ordinal).Replace("{garbage}", node.Garbage, StringComparison.Ordinal)
            .Replace("{csv}", node.Csv, StringComparison.Ordinal).Replace("{hierarchies}", node.Hierarchies, StringComparison.Ordinal)
            .Replace("{port}", node.BusyPort.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal)).ToArray();
        var (code, stdout, stderr) = await WardProcess.RunAsync(args, row.Stdin ?? "");

        var problems = new List<string>();
        if (code != row.Status)
        {
            problems.Add($"exit {code}, expected {row.Status}");
        }
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (row.Status == 1)
        {
            // A check that found a problem reports it (ward verify's findings are its output), and says why.
            if (!(stdout + stderr).Contains(row.Expected, StringComparison.Ordinal))
            {
                problems.Add($"the report does not say '{row.Expected}'");
            }
        }
        else if (lines.Length is 0 or > 2)
        {
            problems.Add($"{lines.Length} lines on stderr, expected one sentence");
        }
        else if (!stderr.Contains(row.Expected, StringComparison.Ordinal))
        {
            problems.Add($"stderr does not say '{row.Expected}'");
        }
        if (stdout.Contains("error:", StringComparison.Ordinal) || stdout.Contains("FAILED:", StringComparison.Ordinal))
        {
            problems.Add("the error is on stdout, where scripts capture output (ward token: only the token)");
        }
        else if (row.Status == 2 && !row.Working && stdout.Length > 0)
        {
            // Refused before it did or printed anything (ward demo: before it creates the node and prints its credentials).
            problems.Add("it printed output before it failed");
        }
        var all = stdout + stderr;
        if (all.Split('\n').Any(l => l.StartsWith("   at ", StringComparison.Ordinal)) || all.Contains("Exception:", StringComparison.Ordinal)
            || all.Contains("Unhandled exception", StringComparison.Ordinal))
        {
            problems.Add("a stack trace was printed");
        }
        if (Directory.Exists(copy))
        {
            var after = BackedUpNode.Hashes(copy);
            var changed = after.Keys.Union(before.Keys).Where(f => !after.TryGetValue(f, out var h) || !before.TryGetValue(f, out var b) || h != b).Order(StringComparer.Ordinal).ToList();
            if (changed.Count > 0)
            {
                problems.Add($"the node's files changed: {string.Join(", ", changed)}");
            }
        }
        if (Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(scratch)!).Any())
        {
            problems.Add($"it left {string.Join(", ", Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(scratch)!).Select(Path.GetFileName))} behind");
        }
        if (problems.Count > 0)
        {
            problems.Add($"stdout: {Clip(stdout)}");
            problems.Add($"stderr: {Clip(stderr)}");
        }
        return problems;
    }

    private static string Clip(string text) => text.Length > 400 ? text[..400] + "…" : text;
}
