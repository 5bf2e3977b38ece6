using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Ward.Core.Node;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// SMART App Launch 2 (standalone) through the node's authorization server, over real HTTP: sign-in pages, TOTP, the
/// patient picker, PKCE, codes, refresh tokens, and the errors each broken step must give.
/// </summary>
public abstract class SmartAppLaunchTests(TestNode node)
{
    private async Task<(string Id, string Family)> PatientAsync()
    {
        var family = "Smartfam" + Guid.NewGuid().ToString("N")[..6];
        var response = await node.Http.PostAsJsonAsync(node.BaseUrl + "/Patient",
            new { resourceType = "Patient", name = new[] { new { family, given = new[] { "Ada" } } }, birthDate = "1970-01-02" });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var id = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        return (id, family);
    }

    /// <summary>Runs the whole standalone launch as a clinician who picks a patient; returns the token response.</summary>
    private async Task<(SmartAgent Agent, JsonElement Token, string Patient, string Client)> LaunchAsync(string scope = "openid fhirUser launch/patient offline_access patient/*.rs")
    {
        var (patient, family) = await PatientAsync();
        await node.AsOperator("PUT", "Practitioner/p1", """{"resourceType":"Practitioner","id":"p1"}""");
        var user = await SmartSetup.UserAsync(node, "clinician", "Practitioner/p1");
        await node.CareTeamAsync(patient, "Practitioner/p1");
        var client = await SmartSetup.PublicClientAsync(node);
        var agent = new SmartAgent(node);
        var login = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, scope)));
        Assert.Contains("Sign in to Ward", await login.Content.ReadAsStringAsync());
        var approval = await agent.SignInAsync(login, user, SmartSetup.Password, secret => SmartAgent.TotpNow(secret!));
        var page = await approval.Content.ReadAsStringAsync();
        Assert.Contains("Allow access?", page);
        var found = await agent.SubmitAsync(approval, ("search", family), ("decision", ""));
        Assert.Contains("Ada " + family, await found.Content.ReadAsStringAsync());
        var callback = await agent.SubmitAsync(found, ("search", family), ("patient", patient), ("decision", "allow"));
        Assert.Equal(HttpStatusCode.Redirect, callback.StatusCode);
        var location = callback.Headers.Location!;
        Assert.StartsWith(SmartAgent.RedirectUri, location.ToString());
        Assert.Equal("st-123", SmartAgent.Query(location, "state"));
        var code = SmartAgent.Query(location, "code")!;
        var token = await agent.TokenAsync(("grant_type", "authorization_code"), ("code", code), ("redirect_uri", SmartAgent.RedirectUri),
            ("client_id", client), ("code_verifier", agent.Verifier));
        return (agent, token, patient, client);
    }

    [Fact]
    public async Task A_clinician_signs_in_with_password_and_totp_picks_a_patient_and_the_app_reads_only_that_patient()
    {
        var (agent, token, patient, _) = await LaunchAsync();
        using var dispose = agent;
        Assert.True(token.TryGetProperty("access_token", out var access), token.ToString());
        Assert.Equal(patient, token.GetProperty("patient").GetString());
        Assert.Equal("Bearer", token.GetProperty("token_type").GetString());
        Assert.InRange(token.GetProperty("expires_in").GetInt32(), 1, 3600);
        Assert.True(token.TryGetProperty("id_token", out _));
        Assert.True(token.TryGetProperty("refresh_token", out _));
        Assert.Contains("patient/*.rs", token.GetProperty("scope").GetString());

        using var http = node.NewHttp(access.GetString());
        var own = await http.GetAsync($"{node.BaseUrl}/Patient/{patient}");
        Assert.True(own.StatusCode == HttpStatusCode.OK, await own.Content.ReadAsStringAsync());
        var (other, _) = await PatientAsync();
        var denied = await http.GetAsync($"{node.BaseUrl}/Patient/{other}");
        // Another patient's record answers as one that does not exist (issue 29, point 6).
        Assert.Equal(HttpStatusCode.NotFound, denied.StatusCode);
        Assert.Contains($"Patient/{other} does not exist, or is not open to you", await denied.Content.ReadAsStringAsync());
        var search = await http.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/Patient");
        Assert.Equal([patient], search.GetProperty("entry").EnumerateArray().Select(e => e.GetProperty("resource").GetProperty("id").GetString()!).ToArray());
        var write = await http.PostAsJsonAsync($"{node.BaseUrl}/Observation", new { resourceType = "Observation", status = "final", code = new { text = "x" }, subject = new { reference = "Patient/" + patient } });
        Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
    }

    private static string Error(JsonElement response) =>
        response.TryGetProperty("error", out var e) ? e.GetString()! : "(no error) " + response;

    [Fact]
    public async Task An_authorization_code_is_redeemed_once_the_second_try_is_invalid_grant()
    {
        var (agent, token, _, client) = await LaunchAsync();
        using var dispose = agent;
        Assert.True(token.TryGetProperty("access_token", out _));
        // LaunchAsync redeemed its code; ask for another and redeem it twice.
        var again = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/*.rs launch/patient")));
        var patient = token.GetProperty("patient").GetString()!;
        var callback = await agent.SubmitAsync(again, ("patient", patient), ("decision", "allow"));
        var code = SmartAgent.Query(callback.Headers.Location!, "code")!;
        (string, string)[] exchange = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", SmartAgent.RedirectUri), ("client_id", client), ("code_verifier", agent.Verifier)];
        Assert.True((await agent.TokenAsync(exchange)).TryGetProperty("access_token", out _));
        var reused = await agent.TokenAsync(exchange);
        Assert.Equal("invalid_grant", Error(reused));
    }

    [Fact]
    public async Task Refresh_tokens_rotate_and_reusing_a_redeemed_one_revokes_the_whole_grant()
    {
        var (agent, token, _, client) = await LaunchAsync();
        using var dispose = agent;
        // The access token names its grant, so that revoking the grant reaches it (AccessTokenTests).
        Assert.True(new Microsoft.IdentityModel.JsonWebTokens.JsonWebToken(token.GetProperty("access_token").GetString()).TryGetClaim(Ward.Server.Identity.AccessTokens.GrantClaim, out _));
        var first = token.GetProperty("refresh_token").GetString()!;
        var refreshed = await agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", first), ("client_id", client));
        var second = refreshed.GetProperty("refresh_token").GetString()!;
        Assert.NotEqual(first, second);
        Assert.Equal(token.GetProperty("patient").GetString(), refreshed.GetProperty("patient").GetString());

        var reuse = await agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", first), ("client_id", client));
        Assert.Equal("invalid_grant", Error(reuse));
        // The thief replayed an old token: the grant is revoked, so the legitimate app's newer token dies too.
        var after = await agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", second), ("client_id", client));
        Assert.Equal("invalid_grant", Error(after));
    }

    [Fact]
    public async Task Plain_pkce_is_refused()
    {
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var response = await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/*.rs", method: "plain"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Null(response.Headers.Location);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Contains("invalid_request", body);
        Assert.Contains("code_challenge_method", body);
    }

    [Fact]
    public async Task A_request_without_pkce_is_refused()
    {
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var response = await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/*.rs", method: null, challenge: "").Replace("&code_challenge=", "&x=", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Contains("invalid_request", body);
        Assert.Contains("code_challenge", body);
    }

    [Fact]
    public async Task A_redirect_uri_that_is_not_registered_is_refused_without_redirecting()
    {
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var response = await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/*.rs", redirect: "http://127.0.0.1:9/evil"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Null(response.Headers.Location);
        Assert.Contains("redirect_uri", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Scopes_beyond_the_client_registration_or_a_wrong_audience_are_refused()
    {
        var client = await SmartSetup.PublicClientAsync(node, scopes: "openid patient/Observation.rs");
        using var agent = new SmartAgent(node);
        var wide = await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/*.rs"));
        Assert.Equal("invalid_scope", SmartAgent.Query(wide.Headers.Location!, "error"));
        var audience = await agent.GetAsync(agent.AuthorizeUrl(client, "openid patient/Observation.rs").Replace(Uri.EscapeDataString(node.BaseUrl), Uri.EscapeDataString("https://elsewhere.example/fhir")));
        Assert.Equal("invalid_request", SmartAgent.Query(audience.Headers.Location!, "error"));
    }

    [Fact]
    public async Task Five_wrong_passwords_lock_the_account_even_against_the_right_one()
    {
        var user = await SmartSetup.UserAsync(node, "nurse");
        using var agent = new SmartAgent(node);
        for (var i = 0; i < 5; i++)
        {
            var page = await agent.GetAsync("/account/login");
            var failed = await agent.SubmitAsync(page, ("username", user), ("password", "not the password " + i));
            Assert.True(failed.StatusCode is HttpStatusCode.Unauthorized or (HttpStatusCode)423, failed.StatusCode.ToString());
        }
        var right = await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", user), ("password", SmartSetup.Password));
        Assert.Equal((HttpStatusCode)423, right.StatusCode);
        Assert.Contains("locked", await right.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Staff_cannot_authorize_an_app_with_a_password_alone_nor_with_a_wrong_code()
    {
        var user = await SmartSetup.UserAsync(node, "clinician");
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var url = agent.AuthorizeUrl(client, "openid user/*.rs");
        var login = await agent.FollowAsync(await agent.GetAsync(url));
        var mfa = await agent.FollowAsync(await agent.SubmitAsync(login, ("username", user), ("password", SmartSetup.Password)));
        Assert.Contains("Set up your authenticator", await mfa.Content.ReadAsStringAsync());
        // Skipping the second factor: the authorization endpoint still sends the user to sign in.
        var skipped = await agent.GetAsync(url);
        Assert.Equal(HttpStatusCode.Redirect, skipped.StatusCode);
        Assert.StartsWith("/account/login", skipped.Headers.Location!.ToString());
        var wrong = await agent.SubmitAsync(mfa, ("code", "000000"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Contains("code is not right", await wrong.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Redirect, (await agent.GetAsync(url)).StatusCode);
    }

    [Fact]
    public async Task A_patient_signs_in_with_a_password_and_gets_their_own_record_only()
    {
        var (patient, _) = await PatientAsync();
        var user = await SmartSetup.UserAsync(node, "patient", "Patient/" + patient);
        var client = await SmartSetup.PublicClientAsync(node);
        using var agent = new SmartAgent(node);
        var login = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, "openid fhirUser launch/patient patient/*.rs")));
        var approval = await agent.SignInAsync(login, user, SmartSetup.Password, _ => throw new InvalidOperationException("no second factor expected"));
        Assert.DoesNotContain("name=\"search\"", await approval.Content.ReadAsStringAsync());
        var callback = await agent.SubmitAsync(approval, ("decision", "allow"));
        var token = await agent.TokenAsync(("grant_type", "authorization_code"), ("code", SmartAgent.Query(callback.Headers.Location!, "code")!),
            ("redirect_uri", SmartAgent.RedirectUri), ("client_id", client), ("code_verifier", agent.Verifier));
        Assert.Equal(patient, token.GetProperty("patient").GetString());
        var idToken = new Microsoft.IdentityModel.JsonWebTokens.JsonWebToken(token.GetProperty("id_token").GetString());
        Assert.Equal($"{node.BaseUrl}/Patient/{patient}", idToken.GetClaim("fhirUser").Value);
    }

    [Fact]
    public async Task Sign_in_and_token_requests_beyond_the_rate_limit_get_429_with_retry_after()
    {
        var limited = new TestNode(node.IsPostgres) { Limits = new() { LoginPerMinute = 3, TokenPerMinute = 3 } };
        await limited.InitializeAsync();
        try
        {
            await ExceedLimitsAsync(limited);
        }
        finally
        {
            await limited.DisposeAsync();
        }
    }

    private static async Task ExceedLimitsAsync(TestNode limited)
    {
        using var agent = new SmartAgent(limited);
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 4; i++)
        {
            statuses.Add((await agent.SubmitAsync(await agent.GetAsync("/account/login"), ("username", "nobody"), ("password", "not a password at all"))).StatusCode);
        }
        Assert.Equal([HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests], statuses);
        using var http = limited.NewHttp(null);
        HttpResponseMessage last = null!;
        for (var i = 0; i < 4; i++)
        {
            last = await http.PostAsync(limited.Origin + "/connect/token", new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "client_credentials" }));
        }
        Assert.Equal(HttpStatusCode.TooManyRequests, last.StatusCode);
        Assert.Equal("60", last.Headers.GetValues("Retry-After").Single());
    }

    [Fact]
    public async Task Sign_in_pages_cannot_be_framed_or_cached()
    {
        using var agent = new SmartAgent(node);
        var page = await agent.GetAsync("/account/login");
        Assert.Contains("frame-ancestors 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal("DENY", page.Headers.GetValues("X-Frame-Options").Single());
        Assert.Contains("no-store", page.Headers.CacheControl!.ToString());
    }

    [Fact]
    public async Task The_smart_configuration_advertises_s256_only_and_the_endpoints()
    {
        using var http = node.NewHttp(null);
        var config = await http.GetFromJsonAsync<JsonElement>(node.BaseUrl + "/.well-known/smart-configuration");
        Assert.Equal(["S256"], config.GetProperty("code_challenge_methods_supported").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Equal(node.Origin + "/connect/token", config.GetProperty("token_endpoint").GetString());
        Assert.Contains("permission-v2", config.GetProperty("capabilities").EnumerateArray().Select(e => e.GetString()));
        var metadata = await http.GetFromJsonAsync<JsonElement>(node.BaseUrl + "/metadata");
        Assert.Equal("SMART-on-FHIR", metadata.GetProperty("rest")[0].GetProperty("security").GetProperty("service")[0].GetProperty("coding")[0].GetProperty("code").GetString());
        var discovery = await http.GetFromJsonAsync<JsonElement>(node.Origin + "/.well-known/openid-configuration");
        Assert.Equal(node.Origin + "/connect/authorize", discovery.GetProperty("authorization_endpoint").GetString());
    }
}

[Collection(SharedNode.Name)]
public sealed class SmartAppLaunchTestsOnSqlite(TestNode node) : SmartAppLaunchTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class SmartAppLaunchTestsOnPostgres(PostgresTestNode node) : SmartAppLaunchTests(node);
