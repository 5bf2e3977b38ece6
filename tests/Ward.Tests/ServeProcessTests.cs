using System.Diagnostics;
using System.Net;
using Xunit;

namespace Ward.Tests;

/// <summary><c>ward serve</c> as an operator starts it: a child process, in a folder of the operator's choosing.</summary>
public sealed class ServeProcessTests
{
    [Fact]
    public async Task An_appsettings_file_where_the_node_is_started_cannot_turn_on_request_logging()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ward-cwd-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            Assert.Equal(0, (await WardProcess.RunAsync(["init", "--data", Path.Combine(dir, "node")])).Code);
            // ASP.NET Core's request log at Information writes every URL, and search URLs carry patient data.
            await File.WriteAllTextAsync(Path.Combine(dir, "appsettings.json"), """{"Logging":{"LogLevel":{"Default":"Trace"}}}""");
            var port = PrivateCluster.FreePort();
            var start = WardProcess.StartInfo(["serve", "--data", "node", "--urls", $"http://127.0.0.1:{port}"]);
            start.WorkingDirectory = dir;
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            try
            {
                using var http = new HttpClient();
                var deadline = DateTime.UtcNow.AddSeconds(60);
                while (true)
                {
                    try
                    {
                        if ((await http.GetAsync($"http://127.0.0.1:{port}/health")).IsSuccessStatusCode) break;
                    }
                    catch (HttpRequestException) when (DateTime.UtcNow < deadline)
                    {
                    }
                    if (DateTime.UtcNow > deadline || process.HasExited)
                        Assert.Fail("ward serve did not start: " + (process.HasExited ? await stderr : "no answer in 60 s"));
                    await Task.Delay(200);
                }
                using var search = await http.GetAsync($"http://127.0.0.1:{port}/fhir/Patient?family=Sentinelname");
                Assert.Equal(HttpStatusCode.Unauthorized, search.StatusCode);
            }
            finally
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
            var output = await stdout + await stderr;
            Assert.Contains("serving FHIR R4", output);
            Assert.DoesNotContain("Sentinelname", output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
