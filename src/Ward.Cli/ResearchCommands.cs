using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Core.Privacy;
using Ward.Core.Storage;
using Ward.Server.Identity;

namespace Ward.Cli;

/// <summary><c>ward research</c>: de-identified exports for a project, and differentially private counts under each researcher's ε budget.</summary>
internal static partial class Commands
{
    private static Command ResearchCommand()
    {
        var research = new Command("research", "Research data: de-identified exports and differentially private counts. Patients whose Consent opts out of research are never included.");
        research.Add(ResearchExportCommand());
        research.Add(ResearchBudgetCommand());
        research.Add(ResearchQueryCommand());
        return research;
    }

    private static Command ResearchExportCommand()
    {
        var data = DataOption();
        var configFile = new Option<string>("--config") { Description = "The project's export configuration (YAML: project, tables, formats, date-shift-days, quasi-identifiers, privacy, hierarchies).", Required = true };
        var output = new Option<string>("--out") { Description = "The folder to write the tables, the risk report (JSON, HTML) and the data dictionary to.", Required = true };
        var export = new Command("export", "Exports the project's research tables (Parquet, CSV, FHIR NDJSON): project pseudonyms, per-patient date shifts, "
            + "direct identifiers removed, the patients' quasi-identifiers released under the configured privacy model, with the risk report.") { data, configFile, output };
        export.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            var path = pr.GetValue(configFile)!;
            var settings = ExportSettings.Parse(File.Exists(path) ? await File.ReadAllTextAsync(path, ct) : throw new NodeException($"No export configuration at {path}."),
                path, Path.GetDirectoryName(Path.GetFullPath(path)));
            using var store = RecordStore.Open(config);
            var result = await ResearchExport.RunAsync(store, store.Keys.Blind, settings, pr.GetValue(output)!, DateTime.UtcNow, ct);
            await AuditAdminAsync(config, "research-export", 'E', $"research/{settings.Project}", open: store);
            var o = result.Outcome;
            AnsiConsole.MarkupLineInterpolated($"[green]Exported[/] project {settings.Project}: {string.Join(", ", result.Rows.Select(r => $"{r.Key} {r.Value:N0}"))}; {result.OptedOut} patients opted out.");
            AnsiConsole.MarkupLineInterpolated($"{settings.Model.K}-anonymity: levels {string.Join(", ", o.Columns.Select((c, i) => $"{c} {o.Best.Levels[i]}"))}; {o.Best.Suppressed} suppressed; highest prosecutor risk {o.Before.HighestProsecutor:P1} -> {o.After.HighestProsecutor:P1}.");
            AnsiConsole.MarkupLineInterpolated($"Risk report: {Path.Combine(pr.GetValue(output)!, "risk-report.html")}");
            return 0;
        }));
        return export;
    }

    private static Command ResearchBudgetCommand()
    {
        var data = DataOption();
        var researcher = new Option<string?>("--researcher") { Description = "The researcher's user name (a user with the researcher role)." };
        var epsilon = new Option<double?>("--epsilon") { Description = "The researcher's total privacy budget ε (what was spent stays spent)." };
        var budget = new Command("budget", "Grants a researcher a differential-privacy budget (--researcher and --epsilon), or lists every budget and what was spent of it.") { data, researcher, epsilon };
        budget.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            using var store = RecordStore.Open(config);
            if (pr.GetValue(researcher) is { } name)
            {
                var e = pr.GetValue(epsilon) ?? throw new NodeException("Give the budget with --epsilon.");
                if (!(e >= 0) || e > 100)
                {
                    throw new NodeException("--epsilon must be between 0 and 100.");
                }
                var id = await ResearcherIdAsync(config, name);
                await store.WriteAsync(s =>
                {
                    s.GrantEpsilon(id, name, e, "os:" + Environment.UserName, DateTime.UtcNow.Ticks);
                    return true;
                }, ct);
                await AuditAdminAsync(config, "research-budget", 'U', $"research-budget/{id}", open: store);
                AnsiConsole.MarkupLineInterpolated($"[green]Budget set[/]: {Safe(name)} may spend ε = {e.ToString("R", CultureInfo.InvariantCulture)} in all.");
                return 0;
            }
            var table = new Table().AddColumns("researcher", "budget ε", "spent ε", "questions");
            foreach (var row in store.Read(s => s.EpsilonLedger()))
            {
                table.AddRow(Cell(row.Name), row.Budget.ToString("R", CultureInfo.InvariantCulture), row.Spent.ToString("0.######", CultureInfo.InvariantCulture), row.Questions.ToString(CultureInfo.InvariantCulture));
            }
            AnsiConsole.Write(table);
            return 0;
        }));
        return budget;
    }

    private static Command ResearchQueryCommand()
    {
        var data = DataOption();
        var researcher = new Option<string>("--researcher") { Description = "The researcher whose budget pays (user name).", Required = true };
        var count = new Option<string>("--count") { Description = "What to count: Patient, or patients with a Condition, Observation, Encounter, MedicationRequest, Procedure, Immunization.", DefaultValueFactory = _ => "Patient" };
        var by = new Option<string?>("--by") { Description = "Dimensions, comma-separated: age-band, gender, code." };
        var codes = new Option<string?>("--codes") { Description = "The codes to count (comma-separated); the cells by code are these, never taken from the data." };
        var epsilon = new Option<double>("--epsilon") { Description = "The privacy loss this question spends.", Required = true };
        var query = new Command("query", "Answers a count or histogram with the discrete Laplace mechanism, charging ε to the researcher's budget; refused once the budget is spent. Prints JSON.")
            { data, researcher, count, by, codes, epsilon };
        query.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            static List<string> List(string? text) => text?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList() ?? [];
            var question = new CountQuery(pr.GetValue(count), List(pr.GetValue(by)), List(pr.GetValue(codes)), pr.GetValue(epsilon));
            var id = await ResearcherIdAsync(config, pr.GetValue(researcher)!);
            using var store = RecordStore.Open(config);
            var answer = await PrivateCounts.AskAsync(store, store.Keys.Blind, id, question, DateTime.UtcNow, ct);
            await AuditAdminAsync(config, "research-query", 'E', $"research-budget/{id}", open: store);
            using var stdout = Console.OpenStandardOutput();
            using (var json = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true }))
            {
                answer.Write(json);
            }
            Console.WriteLine();
            return 0;
        }));
        return query;
    }

    /// <summary>The user id of a researcher, from their user name.</summary>
    private static async Task<string> ResearcherIdAsync(NodeConfig config, string name)
    {
        await using var accounts = Accounts.Open(config);
        var user = await accounts.FindUserAsync(name);
        return user.Role == Roles.Researcher ? user.Id : throw new NodeException($"'{name}' has the role {user.Role}: budgets are for users with the researcher role.");
    }
}
