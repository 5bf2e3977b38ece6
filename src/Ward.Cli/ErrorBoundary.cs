using System.CommandLine;
using Spectre.Console;
using Ward.Core.Audit;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Cli;

/// <summary>The one place where a command's failure becomes a sentence on standard error and an exit status (2 an operator error, 1 a check that found a problem), syntax errors included.</summary>
internal static partial class Commands
{
    private static int Run(Func<int> action) => RunAsync(() => Task.FromResult(action())).GetAwaiter().GetResult();

    /// <summary>
    /// Where errors go: standard error, never among the output that scripts capture (<c>TOKEN=$(ward token ...)</c>). Into a
    /// file or a pipe, lines are not cut at 80 columns.
    /// </summary>
    private static readonly IAnsiConsole Errors = ErrorConsole();

    private static IAnsiConsole ErrorConsole()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected)
        {
            console.Profile.Width = 4096;
        }
        return console;
    }

    /// <summary>
    /// Parses and runs the command line. A syntax error (unknown option, missing required option, malformed value) is an
    /// operator error like any other: its sentences on standard error, where to find the usage, exit status 2.
    /// </summary>
    public static Task<int> InvokeAsync(string[] args)
    {
        var parsed = Build().Parse(args);
        if (parsed.Action is not System.CommandLine.Invocation.ParseErrorAction)
        {
            return parsed.InvokeAsync();
        }
        var names = new List<string>();
        for (var result = parsed.CommandResult; result.Parent is System.CommandLine.Parsing.CommandResult parent; result = parent)
        {
            names.Insert(0, result.Command.Name);
        }
        // One line: System.CommandLine lists the accepted values of an option on lines of their own.
        var sentence = LineBreaks().Replace(string.Join(' ', parsed.Errors.Select(e => e.Message)), " ");
        Errors.MarkupLineInterpolated($"[red]error:[/] {Safe(sentence)} See '{string.Join(' ', ["ward", .. names])} --help'.");
        return Task.FromResult(2);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"\s*\n\s*")]
    private static partial System.Text.RegularExpressions.Regex LineBreaks();

    /// <summary>
    /// The one place where a command's failure becomes what the operator reads: one sentence on standard error, never a
    /// stack trace, and the exit status (2: the command could not do what was asked; 1: it checked and found a problem).
    /// </summary>
    private static async Task<int> RunAsync(Func<Task<int>> action)
    {
        try
        {
            return await action();
        }
        catch (OperationCanceledException)
        {
            return 130;
        }
        catch (Exception e)
        {
            var (status, label, sentence) = Explain(e);
            Errors.MarkupLineInterpolated($"[red]{label}:[/] {SafeLines(sentence)}");
            return status;
        }
    }

    /// <summary>An exception as an exit status, a label and one sentence for the operator.</summary>
    private static (int Status, string Label, string Sentence) Explain(Exception e) => e switch
    {
        AggregateException { InnerExceptions.Count: 1 } a => Explain(a.InnerExceptions[0]),
        NodeException or Ward.Core.Privacy.PrivacyException or Ward.Core.Privacy.BudgetException or Ward.Core.Imaging.DicomException => (2, "error", e.Message),
        WitnessException or Ward.Core.Backup.BackupDamageException => (1, "FAILED", e.Message),
        RecordIntegrityException r => (2, "error", $"{r.Type}/{r.Id} version {r.Version} failed its integrity check: the stored record was altered outside Ward. Nothing more was done."),
        FileNotFoundException f => (2, "error", $"No file at {f.FileName ?? "the path given"}."),
        DirectoryNotFoundException or UnauthorizedAccessException or IOException => (2, "error", e.Message),
        HttpRequestException => (2, "error", $"The server could not be reached: {e.Message}"),
        System.Text.Json.JsonException or YamlDotNet.Core.YamlException or FormatException or InvalidDataException
            or System.Security.Cryptography.CryptographicException => (2, "error", $"Unreadable input: {e.Message}"),
        // Nothing unexpected escapes as a stack trace either: its message and type are enough to report it.
        _ => (2, "error", $"{e.Message} ({e.GetType().Name})"),
    };
}
