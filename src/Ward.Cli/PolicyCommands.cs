using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using Ward.Core.Node;
using Ward.Core.Policy;
using Ward.Core.Storage;

namespace Ward.Cli;

/// <summary><c>ward policy</c> (check the access policy) and <c>ward breakglass</c> (the security officer's review of emergency access).</summary>
internal static partial class Commands
{
    private static Command PolicyCommand()
    {
        var policy = new Command("policy", "The node's access policy (policy.yaml in the data folder, else the default shipped with Ward).");
        var data = DataOption();
        var file = new Option<string?>("--file") { Description = "A policy file to check instead of the node's (for example before installing it)." };
        var check = new Command("check", "Validates the policy and prints what each role may reach. Exit status 0 when valid.") { data, file };
        check.SetAction(pr => Run(() =>
        {
            var path = pr.GetValue(file);
            var loaded = path is not null
                ? AccessPolicy.Parse(File.Exists(path) ? File.ReadAllText(path) : throw new NodeException($"No policy file at {path}."), path)
                : AccessPolicy.Load(CheckedNode(pr.GetValue(data)!).DataDir);
            var table = new Table().AddColumns("role", "access", "purposes", "reads", "writes", "break-glass");
            foreach (var role in loaded.Roles.Values)
            {
                table.AddRow(Cell(role.Name), role.Access.ToString().ToLowerInvariant(), string.Join(", ", role.Purposes),
                    Markup.Escape(role.Read.IsEmpty ? "-" : role.Read.ToString()), Markup.Escape((role.Write.IsEmpty ? "-" : role.Write.ToString()) + (role.Delete ? " (+ delete)" : "")),
                    role.BreakGlass ? "yes" : "no");
            }
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLineInterpolated($"Care relationship: {string.Join(", ", loaded.Explanations)} (encounters within {loaded.EncounterWindow.TotalDays:0} days).");
            AnsiConsole.MarkupLineInterpolated($"Break-the-glass: justification of {loaded.MinJustification}+ characters, open {loaded.GlassLifetime.TotalHours:0.#} h per user and patient, overrides {string.Join(", ", loaded.GlassOpens)}.");
            AnsiConsole.MarkupLineInterpolated($"Counts below {loaded.SmallCell} answered as \"<{loaded.SmallCell}\".");
            AnsiConsole.MarkupLineInterpolated($"[green]The policy is valid[/] ({loaded.Source}).");
            return 0;
        }));
        var print = new Command("default", "Prints the default policy, to start a node's own: ward policy default > DIR/policy.yaml");
        print.SetAction(_ =>
        {
            Console.Write(AccessPolicy.ReadDefault());
            return 0;
        });
        policy.Add(check);
        policy.Add(print);
        return policy;
    }

    /// <summary>A node whose files are read without opening its database: refused all the same when the database is missing or damaged.</summary>
    private static NodeConfig CheckedNode(string dir)
    {
        var config = NodeConfig.Load(dir);
        RecordStore.CheckExists(config);
        return config;
    }

    private static Command BreakGlassCommand()
    {
        var glass = new Command("breakglass", "Break-the-glass review: every emergency opening of a patient's record awaits the security officer's review.");
        var data = DataOption();
        var all = new Option<bool>("--all") { Description = "Include the openings already reviewed." };
        var list = new Command("list", "Lists the openings awaiting review (newest first): who, which patient, when, why, how many times the glass was broken for it.") { data, all };
        list.SetAction(pr => Run(() =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            var openings = store.Read(s => s.GlassOpenings(pr.GetValue(all)));
            if (openings.Count == 0)
            {
                AnsiConsole.MarkupLine(pr.GetValue(all) ? "No break-the-glass openings." : "No break-the-glass opening awaits review.");
                return 0;
            }
            var table = new Table().AddColumns("id", "opened (UTC)", "user", "role", "patient", "uses", "justification", "review");
            foreach (var o in openings)
            {
                table.AddRow(o.Id.ToString(CultureInfo.InvariantCulture), Cell(o.OpenedText), Cell(o.FhirUser ?? o.Subject), Cell(o.Role ?? "-"),
                    Cell("Patient/" + o.Patient), o.Uses.ToString(CultureInfo.InvariantCulture), Cell(o.Justification),
                    Cell(o.Reviewed is null ? "awaiting" : $"{o.Reviewer}: {o.ReviewNote}"));
            }
            AnsiConsole.Write(table);
            return 0;
        }));
        var id = new Argument<long>("id") { Description = "The opening's id (from ward breakglass list)." };
        var note = new Option<string>("--note") { Description = "The review's conclusion (justified, or what follows).", Required = true };
        var reviewer = new Option<string?>("--reviewer") { Description = "Who reviewed (default: the operating-system user)." };
        var reviewData = DataOption();
        var review = new Command("review", "Closes the review of one opening with a note; the review is recorded in the audit log.") { id, reviewData, note, reviewer };
        review.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(reviewData)!);
            using var store = RecordStore.Open(config);
            var who = pr.GetValue(reviewer) ?? "os:" + Environment.UserName;
            var opening = pr.GetValue(id);
            var done = await store.WriteAsync(s => s.ReviewGlass(opening, who, pr.GetValue(note)!, DateTime.UtcNow.Ticks), ct);
            if (!done)
            {
                throw new NodeException($"There is no break-the-glass opening {opening} awaiting review (ward breakglass list --all shows them all).");
            }
            await AuditAdminAsync(config, "break-glass-review", 'U', $"break-glass/{opening}", open: store);
            AnsiConsole.MarkupLineInterpolated($"Opening {opening} reviewed by {Safe(who)}.");
            return 0;
        }));
        glass.Add(list);
        glass.Add(review);
        return glass;
    }
}
