using System.Net;
using System.Text.Json;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary><c>ward users</c>, <c>ward clients</c> and <c>ward token</c> as an operator runs them, in a child process, on a serving node.</summary>
public abstract class IdentityCliTests(TestNode node)
{
    private Task<(int Code, string Stdout, string Stderr)> Ward(string? stdin, params string[] args) =>
        WardProcess.RunAsync([args[0], .. args.Length > 1 && args[0] is "users" or "clients" ? [args[1]] : Array.Empty<string>(), "--data", node.DataDir,
            .. args.Skip(args[0] is "users" or "clients" ? 2 : 1)], stdin);

    [Fact]
    public async Task Users_are_added_with_a_password_on_stdin_listed_disabled_and_their_tokens_refused()
    {
        var name = "cli-" + Guid.NewGuid().ToString("N")[..8];
        var noStdin = await Ward(null, "users", "add", "--username", name, "--role", "clinician");
        Assert.Equal(2, noStdin.Code);
        Assert.Contains("--password-stdin", noStdin.Stderr);
        var tooShort = await Ward("short\n", "users", "add", "--username", name, "--role", "clinician", "--password-stdin");
        Assert.Equal(2, tooShort.Code);
        Assert.Contains("at least 12 characters", tooShort.Stderr);
        var badRole = await Ward(SmartSetup.Password + "\n", "users", "add", "--username", name, "--role", "surgeon", "--password-stdin");
        Assert.Equal(2, badRole.Code);
        Assert.Contains("not a role", badRole.Stderr);
        var patientWithout = await Ward(SmartSetup.Password + "\n", "users", "add", "--username", name, "--role", "patient", "--password-stdin");
        Assert.Equal(2, patientWithout.Code);

        await node.AsOperator("PUT", "Practitioner/cli-1", """{"resourceType":"Practitioner","id":"cli-1"}""");
        var added = await Ward(SmartSetup.Password + "\n", "users", "add", "--username", name, "--role", "clinician", "--practitioner", "Practitioner/cli-1", "--password-stdin");
        Assert.True(added.Code == 0, added.Stdout + added.Stderr);
        var duplicate = await Ward(SmartSetup.Password + "\n", "users", "add", "--username", name, "--role", "nurse", "--password-stdin");
        Assert.Equal(2, duplicate.Code);
        var list = await Ward(null, "users", "list");
        Assert.Contains(name, list.Stdout);
        Assert.Contains("to enrol", list.Stdout);

        var token = await Ward(null, "token", "--user", name, "--scope", "user/Patient.rs", "--minutes", "10");
        Assert.True(token.Code == 0, token.Stdout + token.Stderr);
        var jwt = token.Stdout.TrimEnd('\n');
        Assert.DoesNotContain('\n', jwt);
        Assert.Equal(3, jwt.Split('.').Length);
        using var http = node.NewHttp(jwt);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.BaseUrl + "/Patient?_count=1")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync(node.BaseUrl + "/Observation?_count=1")).StatusCode);
        Assert.Equal(2, (await Ward(null, "token", "--user", name, "--scope", "system/*.rs")).Code);
        Assert.Equal(2, (await Ward(null, "token", "--user", name, "--scope", "user/*.rs", "--minutes", "61")).Code);

        Assert.Equal(0, (await Ward(null, "users", "reset-mfa", "--username", name)).Code);
        Assert.Equal(0, (await Ward(null, "users", "disable", "--username", name)).Code);
        Assert.Contains("disabled", (await Ward(null, "users", "list")).Stdout);
        var refused = await Ward(null, "token", "--user", name, "--scope", "user/*.rs");
        Assert.Equal(2, refused.Code);
        Assert.Contains("disabled", refused.Stderr);
        Assert.Equal("", refused.Stdout); // a script's TOKEN=$(ward token ...) never captures the error as a token
        using var agent = new SmartAgent(node);
        var signIn = await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", name), ("password", SmartSetup.Password));
        Assert.NotEqual(HttpStatusCode.Redirect, signIn.StatusCode);
    }

    [Fact]
    public async Task Clients_are_registered_listed_and_removed_and_backend_clients_need_public_keys()
    {
        var id = "cli-app-" + Guid.NewGuid().ToString("N")[..8];
        var add = await Ward(null, "clients", "add", "--client-id", id, "--kind", "public", "--redirect-uri", "https://app.example/callback",
            "--scopes", "openid launch/patient patient/*.rs");
        Assert.True(add.Code == 0, add.Stdout + add.Stderr);
        Assert.Contains(id, (await Ward(null, "clients", "list")).Stdout);
        var cleartext = await Ward(null, "clients", "add", "--client-id", id + "x", "--kind", "public", "--redirect-uri", "http://app.example/callback", "--scopes", "openid");
        Assert.Equal(2, cleartext.Code);
        Assert.Contains("http:// only on loopback", cleartext.Stderr);
        var backend = await Ward(null, "clients", "add", "--client-id", id + "b", "--kind", "backend", "--scopes", "system/*.rs");
        Assert.Equal(2, backend.Code);
        Assert.Contains("--jwks", backend.Stderr);
        var secret = await Ward(null, "clients", "add", "--client-id", id + "c", "--kind", "confidential", "--redirect-uri", "https://app.example/cb", "--scopes", "openid user/*.rs");
        Assert.Equal(0, secret.Code);
        Assert.Contains("shown once", secret.Stdout);
        Assert.Equal(0, (await Ward(null, "clients", "remove", "--client-id", id)).Code);
        Assert.DoesNotContain(id + " ", (await Ward(null, "clients", "list")).Stdout);
        Assert.Equal(2, (await Ward(null, "clients", "remove", "--client-id", id)).Code);
    }
}

[Collection(SharedNode.Name)]
public sealed class IdentityCliTestsOnSqlite(TestNode node) : IdentityCliTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class IdentityCliTestsOnPostgres(PostgresTestNode node) : IdentityCliTests(node);
