using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Server;

namespace Ward.Tests;

/// <summary>
/// Text from callers (break-the-glass justifications, review notes and reviewers, user names, client names) never
/// reaches a terminal or a log line raw: ESC sequences, CR/LF that would forge a line, U+202E and NUL are printed as
/// visible escapes by the <c>ward</c> command and the node's console log, and the rest of the text is unchanged.
/// </summary>
public sealed class CallerTextIsEscapedWhenPrintedTests(TestNode node) : IClassFixture<TestNode>
{
    /// <summary>What no terminal may receive from a caller: ESC (ANSI sequences), BEL, NUL, the right-to-left override.</summary>
    private static void NothingRaw(string output)
    {
        Assert.DoesNotContain('\x1b', output);
        Assert.DoesNotContain('\x07', output);
        Assert.DoesNotContain('\0', output);
        Assert.DoesNotContain('\u202e', output);
        Assert.DoesNotContain('\r', output);
    }

    /// <summary>A line of the output that begins with <paramref name="text"/> (after table borders): a forged line.</summary>
    private static bool StartsALine(string output, string text) =>
        output.Split('\n').Any(l => l.TrimStart(' ', '│', '|', '┃').StartsWith(text, StringComparison.Ordinal));

    private async Task<string> CreateAsync(string json)
    {
        var response = await node.AsOperator("POST", JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()!, json);
        Assert.Equal(201, response.Status);
        return JsonDocument.Parse(response.Body).RootElement.GetProperty("id").GetString()!;
    }

    [Fact]
    public async Task Break_the_glass_justifications_notes_and_reviewers_are_escaped_by_ward_breakglass()
    {
        var patient = await CreateAsync("""{"resourceType":"Patient","name":[{"family":"Escape"}]}""");
        var obs = await CreateAsync($$$"""{"resourceType":"Observation","status":"final","code":{"text":"pulse"},"subject":{"reference":"Patient/{{{patient}}}"}}""");
        string[] justifications =
        [
            "Collapsed in hall \x1b[2J\x1b[31mALL CLEAR\x1b[0m \x1b]0;pwned\x07 no record",
            "Collapsed in hall A\r\nFORGED-LINE 1 awaiting reviewed: justified",
            "Collapsed in hall B \u202edeifitsuj ton\u202c ok",
            // A NUL is refused at the door (ErrorTests): PostgreSQL's text cannot hold it.
        ];
        var index = 0;
        foreach (var why in justifications)
        {
            var practitioner = $"Practitioner/esc-{index++}-{Guid.NewGuid():N}"[..28];
            using var glass = node.NewHttp(node.Token(new AccessGrant(practitioner, "escape-tests", "clinician", SmartScopes.Parse("user/*.cruds"), null, practitioner)));
            glass.DefaultRequestHeaders.Add("Ward-Break-Glass", Uri.EscapeDataString(why));
            var read = await glass.GetAsync($"{node.BaseUrl}/Observation/{obs}");
            Assert.True(read.StatusCode == HttpStatusCode.OK, await read.Content.ReadAsStringAsync());
        }

        var (code, list) = await WardProcess.OutputAsync(["breakglass", "list", "--data", node.DataDir]);
        Assert.True(code == 0, list);
        NothingRaw(list);
        Assert.Contains("\\x1b[2J\\x1b[31mALL", list);
        Assert.Contains("\\x1b]0;pwned\\x07", list);
        Assert.Contains("\\r\\nFORGED-LINE", list);
        Assert.False(StartsALine(list, "FORGED-LINE"), list);
        Assert.Contains("\\u202Edeifitsuj", list);
        Assert.Contains("ton\\u202C", list);

        string id;
        using (var db = node.Db())
        {
            id = Convert.ToString(TestNode.Scalar(db, "SELECT MIN(id) FROM break_glass WHERE patient_id = @p", ("@p", patient)), System.Globalization.CultureInfo.InvariantCulture)!;
        }
        var review = await WardProcess.OutputAsync(["breakglass", "review", id, "--data", node.DataDir,
            "--note", "fine\r\nOpening 999 reviewed by nobody \x1b[8mhidden", "--reviewer", "so-\u202eenoemos"]);
        Assert.True(review.Code == 0, review.Output);
        NothingRaw(review.Output);
        Assert.Contains("so-\\u202Eenoemos", review.Output);
        var (_, all) = await WardProcess.OutputAsync(["breakglass", "list", "--all", "--data", node.DataDir]);
        NothingRaw(all);
        Assert.Contains("fine\\r\\nOpening", all);
        Assert.Contains("\\x1b[8mhidden", all);
        Assert.False(StartsALine(all, "Opening 999"), all);
    }

    [Fact]
    public async Task User_and_client_names_are_escaped_by_ward_users_and_ward_clients()
    {
        // A user name with controls is refused, and the refusal quoting it is escaped.
        var user = await WardProcess.RunAsync(["users", "add", "--data", node.DataDir, "--username", "evil\x1b[2J\r\nroot", "--role", "clinician", "--password-stdin"],
            "a-long-enough-password-123\n");
        Assert.NotEqual(0, user.Code);
        NothingRaw(user.Stdout + user.Stderr);

        var clientId = "escape-" + Guid.NewGuid().ToString("N")[..6];
        var add = await WardProcess.RunAsync(["clients", "add", "--data", node.DataDir, "--client-id", clientId, "--kind", "public",
            "--redirect-uri", "https://app.example/cb", "--scopes", "openid patient/*.rs", "--name", "Good App\x1b[1A\x1b[2K\r\nbackend-admin \u202eRLO\aend"]);
        Assert.True(add.Code == 0, add.Stdout + add.Stderr);
        var (code, list) = await WardProcess.OutputAsync(["clients", "list", "--data", node.DataDir]);
        Assert.True(code == 0, list);
        NothingRaw(list);
        Assert.Contains("App\\x1b[1A\\x1b[2K\\r\\nbackend-admin", list);
        Assert.Contains("\\u202ERLO\\x07end", list);
        Assert.False(StartsALine(list, "backend-admin"), list);
    }

    [Fact]
    public void The_node_console_log_writes_one_line_per_event_with_caller_text_escaped()
    {
        var formatter = new EscapingConsoleFormatter();
        foreach (var text in new[] { "user \x1b[31mred\x1b[0m", "a\r\nfail: Ward.Audit[0] forged entry", "name \u202eexe.txt", "nul \0 here" })
        {
            using var line = new StringWriter();
            var entry = new Microsoft.Extensions.Logging.Abstractions.LogEntry<string>(LogLevel.Warning, "Ward.Test", new EventId(7), text, new InvalidOperationException("boom " + text), (s, _) => "caller said " + s);
            formatter.Write(entry, null, line);
            var written = line.ToString();
            Assert.EndsWith("\n", written);
            Assert.Single(written.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            NothingRaw(written);
            Assert.StartsWith("warn: Ward.Test[7] caller said ", written);
            Assert.Contains(TerminalText.Escape(text), written);
        }
    }

    [Fact]
    public void Escaping_leaves_ordinary_text_of_any_script_alone()
    {
        foreach (var text in new[] { "Zoë Ångström-Núñez", "محمد", "دانش\u200cآموز", "张伟", "👩‍⚕️ Dr. Who", "C:\\path\\file", "tab-free plain text" })
        {
            Assert.Same(text, TerminalText.Escape(text));
        }
        Assert.Equal("a\\tb\\x7f\\x9b\\u2066x\\u2069\\u2028", TerminalText.Escape("a\tb\x7f\x9b\u2066x\u2069\u2028"));
        Assert.Equal("lone \\uD800 surrogate", TerminalText.Escape("lone \ud800 surrogate"));
    }
}
