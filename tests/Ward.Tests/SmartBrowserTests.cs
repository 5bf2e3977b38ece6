using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Playwright;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// The reference SMART client library, npm <c>fhirclient</c>, in headless Chromium (Debian's, driven by Playwright): a
/// standalone launch from an app on its own origin, sign-in with password and TOTP enrolment, the patient picker, the
/// callback with PKCE, then the app reads the chosen patient through the FHIR API (CORS included).
/// </summary>
public abstract class SmartBrowserTests(TestNode node)
{
    private const string Chromium = "/usr/bin/chromium";

    private static async Task<(WebApplication App, string Origin)> StartAppAsync()
    {
        var library = Path.Combine(TestData.RepoRoot, "tests", "js", "node_modules", "fhirclient", "build", "fhir-client.js");
        Assert.True(File.Exists(library), "npm fhirclient is not installed: run 'npm ci --prefix tests/js' (.ci/run does).");
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        app.MapGet("/fhir-client.js", () => Results.File(library, "text/javascript"));
        app.MapGet("/launch.html", () => Results.Content("""
            <!doctype html><html><head><script src="/fhir-client.js"></script></head><body>Launching…
            <script>
              const q = new URLSearchParams(location.search);
              FHIR.oauth2.authorize({ iss: q.get("iss"), clientId: q.get("client"), redirectUri: "/app.html",
                scope: "openid fhirUser launch/patient patient/*.rs offline_access" });
            </script></body></html>
            """, "text/html"));
        app.MapGet("/app.html", () => Results.Content("""
            <!doctype html><html><head><script src="/fhir-client.js"></script></head><body><pre id="out">waiting</pre>
            <script>
              FHIR.oauth2.ready()
                .then(client => Promise.all([client.patient.read(), client.request("Observation?_count=5")]).then(([p, obs]) => ({ p, obs, client })))
                .then(({ p, obs, client }) => { document.getElementById("out").textContent = JSON.stringify({
                  id: p.id, family: p.name[0].family, patient: client.patient.id, observations: obs.total ?? (obs.entry || []).length,
                  scope: client.state.tokenResponse.scope, refresh: !!client.state.tokenResponse.refresh_token }); })
                .catch(e => { document.getElementById("out").textContent = "error: " + e; });
            </script></body></html>
            """, "text/html"));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return (app, address);
    }

    [Fact]
    public async Task Fhirclient_standalone_launch_in_chromium_signs_in_with_totp_picks_the_patient_and_reads_it()
    {
        Assert.True(File.Exists(Chromium), "Chromium is not installed: apt-get install chromium (.ci/run does).");
        var family = "Browserfam" + Guid.NewGuid().ToString("N")[..6];
        var created = await node.Http.PostAsJsonAsync(node.BaseUrl + "/Patient",
            new { resourceType = "Patient", name = new[] { new { family, given = new[] { "Grace" } } }, birthDate = "1961-07-01" });
        var patient = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        await node.AsOperator("PUT", "Practitioner/browser-test", """{"resourceType":"Practitioner","id":"browser-test"}""");
        var user = await SmartSetup.UserAsync(node, "clinician", "Practitioner/browser-test");
        await node.CareTeamAsync(patient, "Practitioner/browser-test");
        var (app, origin) = await StartAppAsync();
        await using var stop = app;
        var client = await SmartSetup.PublicClientAsync(node, redirect: origin + "/app.html");

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true });
        var page = await browser.NewPageAsync();
        await page.GotoAsync($"{origin}/launch.html?iss={Uri.EscapeDataString(node.BaseUrl)}&client={client}");

        await page.WaitForURLAsync(url => url.Contains("/account/login", StringComparison.Ordinal));
        await page.GetByLabel("User name").FillAsync(user);
        await page.GetByLabel("Password").FillAsync(SmartSetup.Password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();

        await page.WaitForURLAsync(url => url.Contains("/account/mfa", StringComparison.Ordinal));
        var secret = (await page.Locator(".secret").InnerTextAsync()).Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant();
        Assert.Equal(1, await page.GetByRole(AriaRole.Img, new() { Name = "QR code" }).CountAsync());
        await page.GetByLabel("6-digit code").FillAsync(SmartAgent.TotpNow(secret));
        await page.GetByRole(AriaRole.Button, new() { Name = "Verify" }).ClickAsync();

        await page.GetByLabel("Family or given name").FillAsync(family);
        await page.GetByRole(AriaRole.Button, new() { Name = "Find" }).ClickAsync();
        await page.GetByLabel($"Grace {family}, born 1961-07-01").CheckAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Allow" }).ClickAsync();

        await page.WaitForURLAsync(url => url.StartsWith(origin + "/app.html", StringComparison.Ordinal));
        var output = page.Locator("#out");
        await Assertions.Expect(output).Not.ToHaveTextAsync("waiting", new() { Timeout = 30_000 });
        var text = await output.InnerTextAsync();
        Assert.False(text.StartsWith("error", StringComparison.Ordinal), text);
        var result = JsonDocument.Parse(text).RootElement;
        Assert.Equal(patient, result.GetProperty("id").GetString());
        Assert.Equal(patient, result.GetProperty("patient").GetString());
        Assert.Equal(family, result.GetProperty("family").GetString());
        Assert.True(result.GetProperty("refresh").GetBoolean());
        Assert.Contains("patient/*.rs", result.GetProperty("scope").GetString());
    }
}

[Collection(SharedNode.Name)]
public sealed class SmartBrowserTestsOnSqlite(TestNode node) : SmartBrowserTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class SmartBrowserTestsOnPostgres(PostgresTestNode node) : SmartBrowserTests(node);
