using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Spectre.Console;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server;

namespace Ward.Cli;

/// <summary><c>ward serve</c> and <c>ward demo</c>: a node served over HTTP, its listen addresses checked before anything is made or printed.</summary>
internal static partial class Commands
{
    private static Option<string?> UrlsOption() => new("--urls")
    {
        Description = "Listen addresses, separated by ';' (default: the node's configured urls, http://127.0.0.1:8080). Non-loopback addresses need https.",
    };

    private static Command Serve()
    {
        var data = DataOption();
        var urls = UrlsOption();
        var readOnly = new Option<bool>("--read-only")
        {
            Description = "Serve a restored snapshot while the primary is rebuilt: reads with the same access rules and audit; every write answers 503 with the reason; no scheduled backups.",
        };
        var logFormat = new Option<string?>("--log-format")
        {
            Description = "The log on standard output: text (one escaped line per event, the default) or json (one JSON object per line); overrides logging: format in ward.yaml.",
        };
        logFormat.AcceptOnlyFromAmong(LoggingConfig.Text, LoggingConfig.Json);
        var cmd = new Command("serve", "Serve the node's FHIR API at /fhir.") { data, urls, readOnly, logFormat };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            var listen = pr.GetValue(urls) ?? config.Urls;
            CheckListen(listen, config);
            config.Logging.Format = pr.GetValue(logFormat) ?? config.Logging.Format;
            using var store = RecordStore.Open(config);
            await ServeAsync(config, store, listen, ct, pr.GetValue(readOnly));
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// Each listen address is one of this machine's and its port is free: checked before anything is opened, created or
    /// printed, so that a busy port is one sentence and not a failed start after the work (ward demo imports first).
    /// </summary>
    private static void CheckListen(string urls, NodeConfig? config)
    {
        foreach (var (address, port, _) in WardServer.ParseUrls(urls, config))
        {
            using var probe = new System.Net.Sockets.TcpListener(address, port);
            try
            {
                probe.Start();
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new NodeException(e.SocketErrorCode switch
                {
                    System.Net.Sockets.SocketError.AddressAlreadyInUse => $"Port {port} on {address} is already in use (another 'ward serve', or another program): stop it, or listen elsewhere with --urls.",
                    System.Net.Sockets.SocketError.AddressNotAvailable => $"{address} is not an address of this machine: give one of its addresses with --urls.",
                    System.Net.Sockets.SocketError.AccessDenied => $"Listening on port {port} needs privileges this account lacks: use a port above 1023 with --urls.",
                    _ => $"Cannot listen on {address} port {port}: {e.Message}",
                });
            }
        }
    }

    private static async Task ServeAsync(NodeConfig config, RecordStore store, string urls, CancellationToken ct, bool readOnly = false)
    {
        var app = WardServer.Build(config, urls, store, readOnly: readOnly);
        await app.StartAsync(ct);
        foreach (var url in app.Urls)
        {
            AnsiConsole.MarkupLineInterpolated($"[green]Ward node '{config.Name}' serving FHIR R4 at[/] {url}/fhir{(readOnly ? " (read-only: writes answer 503)" : "")}");
        }
        if (config.Backup.Target is { } target && !readOnly)
        {
            AnsiConsole.MarkupLineInterpolated($"Backing up to {target} every {config.Backup.IntervalMinutes} minutes (outcome at /health).");
        }
        AnsiConsole.MarkupLine("Press Ctrl+C to stop.");
        await app.WaitForShutdownAsync(ct);
    }


    private static Command Demo()
    {
        var data = new Option<string>("--data", "-d") { Description = "Demo node folder.", DefaultValueFactory = _ => "ward-demo" };
        var urls = UrlsOption();
        var cmd = new Command("demo", "Create (or reuse) a demo node in ./ward-demo, load the bundled Synthea sample patients, and serve it.") { data, urls };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            var dir = pr.GetValue(data)!;
            var fresh = !File.Exists(Path.Combine(dir, NodeConfig.FileName));
            var existing = fresh ? null : NodeConfig.Load(dir);
            // The address and the port first: nothing is created or printed for a demo that could not serve.
            var listen = pr.GetValue(urls) ?? existing?.Urls ?? new NodeConfig().Urls;
            CheckListen(listen, existing);
            var made = fresh && !File.Exists(dir) && (!Directory.Exists(dir) || !Directory.EnumerateFileSystemEntries(dir).Any());
            var config = existing ?? NodeConfig.Init(dir, "ward-demo");
            // One store for the whole command: the node is set up and served through it.
            using var store = RecordStore.Open(config, create: fresh);
            List<DemoIdentity.Credential> credentials;
            if (fresh)
            {
                var samples = Path.Combine(AppContext.BaseDirectory, "samples", "synthea");
                AnsiConsole.MarkupLineInterpolated($"Created demo node in {config.DataDir}; loading the Synthea sample patients from {samples}");
                try
                {
                    await ImportAsync(config, store, [samples], ct);
                    credentials = await DemoIdentity.CreateAsync(config, store, ct);
                }
                catch when (made)
                {
                    // A demo node half made (an interrupted import) would be reused next time: the same command starts afresh.
                    store.Dispose();
                    Directory.Delete(config.DataDir, recursive: true);
                    throw;
                }
            }
            else
            {
                AnsiConsole.MarkupLineInterpolated($"Reusing the demo node in {config.DataDir}");
                credentials = DemoIdentity.Load(config);
            }
            var @base = WardServer.ParseUrls(listen, config)[0];
            var url = $"{(@base.Https ? "https" : "http")}://{(@base.Address.ToString() == "0.0.0.0" ? "127.0.0.1" : @base.Address)}:{@base.Port}/fhir";
            string token;
            await using (var accounts = Ward.Server.Identity.Accounts.Open(config))
            {
                token = await accounts.IssueTokenAsync("demo-clinician", null, "user/*.rs", Ward.Server.Identity.Accounts.MaxTokenMinutes, ct);
            }
            // Plain lines, not a panel: the example requests must stay copyable at any terminal width.
            Console.WriteLine($"""

                Ward demo node: FHIR R4 at {url}
                Data folder: {config.DataDir} (run 'ward demo' again to reuse it; delete it to start afresh)
                """);
            DemoIdentity.Print(config, credentials, url, token);
            Console.WriteLine($"""
                Try (every request but /metadata needs the token):
                  curl -s {url}/metadata | head -c 300
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Patient?_summary=true&_count=5'
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Patient?family=shanahan'
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Observation?code=http://loinc.org|8302-2&_sort=-date&_count=3'
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Encounter?patient.family=bartell&_include=Encounter:participant'
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Patient?_has:Condition:patient:code=http://snomed.info/sct|444814009'
                  curl -s -H "Authorization: Bearer $TOKEN" '{url}/Patient/<id>/$everything'
                  curl -s '{url}/Patient'     (401: no token)

                """);
            await ServeAsync(config, store, listen, ct);
            return 0;
        }));
        return cmd;
    }
}
