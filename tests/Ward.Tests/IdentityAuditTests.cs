using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;
using Ward.Server.Identity;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// Every event of the token, revocation, authorization and sign-in endpoints is an AuditEvent in the Merkle log with
/// the right outcome: tokens issued, refreshed, refused, refresh token reuse and code replay, client assertions replayed
/// or rejected, revocations, sign-in success and failure, lockout, sign-out. Ids only (no password, token, code or
/// assertion), and no token or session leaves when the log cannot be written.
/// </summary>
public abstract partial class IdentityAuditTests(TestNode node)
{
    private async Task<List<JsonElement>> EventsAsync(string agent)
    {
        using var officer = node.NewHttp(node.Token(new AccessGrant("officer-" + Guid.NewGuid().ToString("N")[..6], "app", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
        var response = await officer.GetAsync($"{node.BaseUrl}/AuditEvent?agent={Uri.EscapeDataString(agent)}&_count=1000");
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        var bundle = await response.Content.ReadFromJsonAsync<JsonElement>();
        // Newest first in the bundle: oldest first here.
        return bundle.TryGetProperty("entry", out var entries) ? entries.EnumerateArray().Select(e => e.GetProperty("resource")).Reverse().ToList() : [];
    }

    private static string Subtype(JsonElement e) => e.GetProperty("subtype")[0].GetProperty("code").GetString()!;
    private static string Type(JsonElement e) => e.GetProperty("type").GetProperty("code").GetString()!;
    private static string Outcome(JsonElement e) => e.GetProperty("outcome").GetString()!;
    private static string Status(JsonElement e) => e.GetProperty("outcomeDesc").GetString()!;

    private static (string Subtype, string Type, string Status)[] Summary(IEnumerable<JsonElement> events) =>
        events.Select(e => (Subtype(e), Type(e), Status(e))).ToArray();

    private static void NothingSecret(IEnumerable<JsonElement> events, params string[] secrets)
    {
        var text = string.Join("\n", events.Select(e => e.GetRawText()));
        foreach (var secret in secrets)
        {
            Assert.DoesNotContain(secret, text);
        }
    }

    private async Task<string> UserIdAsync(string name)
    {
        await using var accounts = Accounts.Open(node.Config);
        return (await accounts.FindUserAsync(name)).Id;
    }

    private async Task<string> PatientAsync()
    {
        var response = await node.Http.PostAsJsonAsync(node.BaseUrl + "/Patient", new { resourceType = "Patient", gender = "other" });
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
    }

    [Fact]
    public async Task A_users_sign_in_codes_tokens_refresh_reuse_replay_and_revocation_are_each_audited_by_id_only()
    {
        var patient = await PatientAsync();
        var user = await SmartSetup.UserAsync(node, "patient", "Patient/" + patient);
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var login = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid fhirUser launch/patient offline_access patient/*.rs")));
        var approval = await agent.SignInAsync(login, user, SmartSetup.Password, _ => throw new InvalidOperationException("no second factor expected"));
        var code = SmartAgent.Query((await agent.SubmitAsync(approval, ("decision", "allow"))).Headers.Location!, "code")!;
        (string, string)[] exchange = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", SmartAgent.RedirectUri), ("client_id", client), ("code_verifier", agent.Verifier)];
        var token = await agent.TokenAsync(exchange);
        var refresh = token.GetProperty("refresh_token").GetString()!;
        var refreshed = await agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client));
        Assert.True(refreshed.TryGetProperty("access_token", out _));
        Assert.True((await agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client))).TryGetProperty("error", out _));

        // A second grant: its code replayed, then a refresh token revoked.
        var again = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid launch/patient offline_access patient/*.rs")));
        var code2 = SmartAgent.Query((await agent.SubmitAsync(again, ("decision", "allow"))).Headers.Location!, "code")!;
        (string, string)[] exchange2 = [("grant_type", "authorization_code"), ("code", code2), ("redirect_uri", SmartAgent.RedirectUri), ("client_id", client), ("code_verifier", agent.Verifier)];
        var token2 = await agent.TokenAsync(exchange2);
        Assert.True((await agent.TokenAsync(exchange2)).TryGetProperty("error", out _));
        var third = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid launch/patient offline_access patient/*.rs")));
        var code3 = SmartAgent.Query((await agent.SubmitAsync(third, ("decision", "allow"))).Headers.Location!, "code")!;
        var token3 = await agent.TokenAsync(("grant_type", "authorization_code"), ("code", code3), ("redirect_uri", SmartAgent.RedirectUri), ("client_id", client), ("code_verifier", agent.Verifier));
        using var http = node.NewHttp(null);
        var revoke = await http.PostAsync(node.Origin + "/connect/revoke", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["token"] = token3.GetProperty("refresh_token").GetString()!,
            ["client_id"] = client,
        }));
        Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        // A decline is audited too.
        var fourth = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid launch/patient patient/*.rs")));
        Assert.Equal(HttpStatusCode.Redirect, (await agent.SubmitAsync(fourth, ("decision", "deny"))).StatusCode);

        var events = await EventsAsync(await UserIdAsync(user));
        Assert.Equal(
        [
            ("login", "110114", "200"),
            ("authorization-granted", "110114", "200"), ("token-issued", "110114", "200"), ("token-refreshed", "110114", "200"),
            ("token-refused", "110114", "400"), ("refresh-token-reuse", "110113", "400"),
            ("authorization-granted", "110114", "200"), ("token-issued", "110114", "200"),
            ("token-refused", "110114", "400"), ("authorization-code-replay", "110113", "400"),
            ("authorization-granted", "110114", "200"), ("token-issued", "110114", "200"), ("token-revoked", "110114", "200"),
            ("authorization-refused", "110114", "403"),
        ], Summary(events));
        Assert.All(events.Where(e => Subtype(e) != "login"), e => Assert.Contains(e.GetProperty("agent").EnumerateArray(),
            a => a.GetProperty("who").TryGetProperty("identifier", out var id) && id.GetProperty("value").GetString() == client));
        var issued = events.First(e => Subtype(e) == "token-issued");
        Assert.Equal("Patient/" + patient, issued.GetProperty("entity")[0].GetProperty("what").GetProperty("reference").GetString());
        Assert.StartsWith("grant/", issued.GetProperty("entity")[1].GetProperty("what").GetProperty("reference").GetString());
        NothingSecret(events, SmartSetup.Password, code, code2, code3, agent.Verifier, refresh, token.GetProperty("access_token").GetString()!,
            refreshed.GetProperty("refresh_token").GetString()!, token2.GetProperty("access_token").GetString()!, token3.GetProperty("refresh_token").GetString()!);
    }

    private string Assertion(BackendClient client, string algorithm = "RS384", string? jti = null) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        Issuer = client.ClientId,
        Audience = node.Origin + "/connect/token",
        Claims = new Dictionary<string, object> { ["sub"] = client.ClientId, ["jti"] = jti ?? Guid.NewGuid().ToString("N") },
        Expires = DateTime.UtcNow + TimeSpan.FromMinutes(4),
        SigningCredentials = new SigningCredentials(client.Key, algorithm),
    });

    private async Task<(HttpStatusCode Status, string Body)> ClientTokenAsync(string assertion, string scope = "system/*.rs")
    {
        using var http = node.NewHttp(null);
        var response = await http.PostAsync(node.Origin + "/connect/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials",
            ["scope"] = scope,
            ["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ["client_assertion"] = assertion,
        }));
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_backend_services_tokens_and_each_kind_of_refused_assertion_are_audited()
    {
        var client = await node.BackendClientAsync();
        var good = Assertion(client);
        var (status, body) = await ClientTokenAsync(good);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(good)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(Assertion(client, SecurityAlgorithms.RsaSha256))).Status);
        var stranger = await node.BackendClientAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(Assertion(client with { Key = stranger.Key }))).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await ClientTokenAsync(Assertion(client), "system/*.cruds")).Status);

        var events = await EventsAsync(client.ClientId);
        Assert.Equal(
        [
            ("token-issued", "110114", "200"),
            ("token-refused", "110114", "401"), ("client-assertion-replayed", "110113", "401"),
            ("token-refused", "110114", "401"), ("client-assertion-rejected", "110113", "401"),
            ("token-refused", "110114", "401"), ("client-assertion-rejected", "110113", "401"),
            ("token-refused", "110114", "400"),
        ], Summary(events));
        Assert.Equal(["0", "4"], events.Select(Outcome).Distinct().Order());
        NothingSecret(events, good, JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!);
    }

    [GeneratedRegex("name=\"__csrf\" value=\"([^\"]+)\"")]
    private static partial Regex Csrf();

    [Fact]
    public async Task Sign_in_success_failures_lockout_and_sign_out_are_audited()
    {
        var patient = await PatientAsync();
        var user = await SmartSetup.UserAsync(node, "patient", "Patient/" + patient);
        using var agent = new SmartAgent(node);
        Assert.Equal(HttpStatusCode.Unauthorized, (await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", user), ("password", "not the password at all"))).StatusCode);
        // A form without its anti-forgery token.
        using (var bare = node.NewHttp(null))
        {
            var forged = await bare.PostAsync(node.Origin + "/account/login", new FormUrlEncodedContent(new Dictionary<string, string> { ["username"] = user, ["password"] = SmartSetup.Password }));
            Assert.Equal(HttpStatusCode.BadRequest, forged.StatusCode);
        }
        var client = await SmartSetup.PublicClientAsync(node);
        var login = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid launch/patient patient/*.rs")));
        var approval = await agent.SignInAsync(login, user, SmartSetup.Password, _ => throw new InvalidOperationException("no second factor expected"));
        var csrf = Csrf().Match(await approval.Content.ReadAsStringAsync()).Groups[1].Value;
        var logout = await agent.PostAsync("/account/logout", ("__csrf", System.Net.WebUtility.HtmlDecode(csrf)));
        Assert.Equal(HttpStatusCode.OK, logout.StatusCode);

        // Five failures lock the account: one alert, at the failure that locked it.
        for (var i = 0; i < 5; i++)
        {
            await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", user), ("password", "still not the password"));
        }
        Assert.Equal((HttpStatusCode)423, (await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", user), ("password", SmartSetup.Password))).StatusCode);

        var events = await EventsAsync(await UserIdAsync(user));
        Assert.Equal(
        [
            ("login", "110114", "401"), ("login", "110114", "200"), ("logout", "110114", "200"),
            ("login", "110114", "401"), ("login", "110114", "401"), ("login", "110114", "401"), ("login", "110114", "401"),
            ("login", "110114", "423"), ("account-locked", "110113", "423"),
            ("login", "110114", "423"),
        ], Summary(events.Where(e => Subtype(e) is "login" or "logout" or "account-locked")));
        NothingSecret(events, SmartSetup.Password, "not the password at all", "still not the password", csrf);
    }

    [Fact]
    public async Task Unknown_user_names_and_requests_beyond_the_rate_limit_are_audited_without_a_subject()
    {
        var limited = new TestNode(node.IsPostgres) { Limits = new() { LoginPerMinute = 3, TokenPerMinute = 2 } };
        await limited.InitializeAsync();
        try
        {
            using var agent = new SmartAgent(limited);
            var statuses = new List<HttpStatusCode>();
            for (var i = 0; i < 4; i++)
            {
                statuses.Add((await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", "nobody-" + i), ("password", "not a password at all"))).StatusCode);
            }
            Assert.Equal([HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests], statuses);
            using var http = limited.NewHttp(null);
            var tokenStatuses = new List<string>();
            for (var i = 0; i < 3; i++)
            {
                var response = await http.PostAsync(limited.Origin + "/connect/token", new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "client_credentials", ["client_id"] = "no-such-client" }));
                tokenStatuses.Add(((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            Assert.Equal(["400", "400", "429"], tokenStatuses);
            using var officer = limited.NewHttp(limited.Token(new AccessGrant("officer", "app", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
            var bundle = await officer.GetFromJsonAsync<JsonElement>($"{limited.BaseUrl}/AuditEvent?_count=1000");
            var events = bundle.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource")).Reverse()
                .Where(e => Subtype(e) is "login" or "token-refused").ToList();
            Assert.Equal(
            [
                ("login", "110114", "401"), ("login", "110114", "401"), ("login", "110114", "401"), ("login", "110114", "429"),
                // What the client was told: 400 (an unknown client without credentials), then 429.
                ("token-refused", "110114", "400"), ("token-refused", "110114", "400"), ("token-refused", "110114", "429"),
            ], Summary(events));
            // Nobody is named for a failed sign-in with an unknown name (it may be a password typed in the wrong field).
            Assert.All(events.Take(4), e => Assert.Equal("unauthenticated", e.GetProperty("agent")[0].GetProperty("who").GetProperty("display").GetString()));
            NothingSecret(events, "nobody-0", "not a password at all");
        }
        finally
        {
            await limited.DisposeAsync();
        }
    }

    [Fact]
    public async Task When_the_audit_log_cannot_be_written_no_token_and_no_session_leave()
    {
        var client = await node.BackendClientAsync();
        var patient = await PatientAsync();
        var user = await SmartSetup.UserAsync(node, "patient", "Patient/" + patient);
        using var agent = new SmartAgent(node);
        var page = await agent.GetAsync("/account/login");
        using (var db = node.Db())
        {
            using var cmd = db.CreateCommand();
            cmd.CommandText = node.IsPostgres
                ? "CREATE FUNCTION test_identity_audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit disk full'; END $$; "
                    + "CREATE TRIGGER test_identity_audit_down BEFORE INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION test_identity_audit_down();"
                : "CREATE TRIGGER test_identity_audit_down BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;";
            cmd.ExecuteNonQuery();
        }
        try
        {
            var (status, body) = await ClientTokenAsync(Assertion(client));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.DoesNotContain("access_token", body);
            Assert.Contains("audit", body);
            var signIn = await agent.SubmitAsync(page, ("username", user), ("password", SmartSetup.Password));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, signIn.StatusCode);
            Assert.False(signIn.Headers.TryGetValues("Set-Cookie", out var cookies) && cookies.Any(c => c.StartsWith("ward.session", StringComparison.Ordinal)));
        }
        finally
        {
            using var db = node.Db();
            using var cmd = db.CreateCommand();
            cmd.CommandText = node.IsPostgres
                ? "DROP TRIGGER test_identity_audit_down ON audit_entry; DROP FUNCTION test_identity_audit_down();"
                : "DROP TRIGGER test_identity_audit_down;";
            cmd.ExecuteNonQuery();
        }
        Assert.Equal(HttpStatusCode.OK, (await ClientTokenAsync(Assertion(client))).Status);
    }
}

[Collection(SharedNode.Name)]
public sealed class IdentityAuditTestsOnSqlite(TestNode node) : IdentityAuditTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class IdentityAuditTestsOnPostgres(PostgresTestNode node) : IdentityAuditTests(node);
