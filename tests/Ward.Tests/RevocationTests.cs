using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;
using Ward.Server.Identity;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The node's clock moved by the test: the system clock plus an offset that only grows.</summary>
public sealed class MovableClock : TimeProvider
{
    private long _offset;

    public void Advance(TimeSpan by) => Interlocked.Add(ref _offset, by.Ticks);

    public override DateTimeOffset GetUtcNow() => base.GetUtcNow().AddTicks(Interlocked.Read(ref _offset));
}

/// <summary>A node of its own whose clock the tests move (OpenIddict, token checks, client assertions and audit all read it).</summary>
public class ClockedNode : TestNode
{
    public ClockedNode(bool postgres) : base(postgres) => Clock = Time;

    public MovableClock Time { get; } = new();
}

public sealed class ClockedSqliteNode() : ClockedNode(postgres: false);

public sealed class ClockedPostgresNode() : ClockedNode(postgres: true);

/// <summary>
/// Revocation is real: each way of revoking a grant (the revocation endpoint, a reused refresh token, a replayed
/// authorization code, a disabled user, a removed client) stops every access token of that grant, OAuth or
/// <c>ward token</c>, at once when this node revoked it and within <see cref="AccessTokens.RecheckEvery"/> when another
/// process did (the command line); a client assertion's jti is refused as long as the assertion could be accepted.
/// </summary>
public abstract class RevocationTests(ClockedNode node)
{
    private const string AppScope = "openid fhirUser launch/patient offline_access patient/*.rs";

    private async Task<string> PatientAsync()
    {
        var response = await node.Http.PostAsJsonAsync(node.BaseUrl + "/Patient", new { resourceType = "Patient", gender = "other" });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
    }

    private sealed record Launch(SmartAgent Agent, string Client, string User, string Patient, string Code, JsonElement Token) : IDisposable
    {
        public string Access => Token.GetProperty("access_token").GetString()!;
        public string Refresh => Token.GetProperty("refresh_token").GetString()!;
        public void Dispose() => Agent.Dispose();
    }

    /// <summary>A patient signs in to a public app (password only: no code that depends on the moved clock) and the app redeems the code.</summary>
    private async Task<Launch> LaunchAsync(string? client = null)
    {
        var patient = await PatientAsync();
        var user = await SmartSetup.UserAsync(node, "patient", "Patient/" + patient);
        client ??= await SmartSetup.PublicClientAsync(node);
        var agent = new SmartAgent(node);
        var login = await agent.FollowAsync(await agent.GetAsync(agent.AuthorizeUrl(client, AppScope)));
        var approval = await agent.SignInAsync(login, user, SmartSetup.Password, _ => throw new InvalidOperationException("no second factor expected"));
        var callback = await agent.SubmitAsync(approval, ("decision", "allow"));
        var code = SmartAgent.Query(callback.Headers.Location!, "code")!;
        var token = await agent.TokenAsync(("grant_type", "authorization_code"), ("code", code), ("redirect_uri", SmartAgent.RedirectUri),
            ("client_id", client), ("code_verifier", agent.Verifier));
        Assert.True(token.TryGetProperty("access_token", out _), token.ToString());
        return new Launch(agent, client, user, patient, code, token);
    }

    private async Task<HttpStatusCode> ReadAsync(string token, string patient)
    {
        using var http = node.NewHttp(token);
        return (await http.GetAsync($"{node.BaseUrl}/Patient/{patient}")).StatusCode;
    }

    private async Task<HttpStatusCode> SearchAsync(string token)
    {
        using var http = node.NewHttp(token);
        return (await http.GetAsync($"{node.BaseUrl}/Patient?_count=1")).StatusCode;
    }

    private async Task<HttpStatusCode> RevokeAsync(Launch launch, string token, string? hint)
    {
        using var http = node.NewHttp(null);
        var form = new Dictionary<string, string> { ["token"] = token, ["client_id"] = launch.Client };
        if (hint is not null)
        {
            form["token_type_hint"] = hint;
        }
        return (await http.PostAsync(node.Origin + "/connect/revoke", new FormUrlEncodedContent(form))).StatusCode;
    }

    private static string? Error(JsonElement response) => response.TryGetProperty("error", out var e) ? e.GetString() : null;

    [Theory]
    [InlineData("refresh_token")]
    [InlineData("access_token")]
    [InlineData(null)]
    public async Task Revoking_either_token_at_the_revocation_endpoint_stops_every_access_token_of_the_grant_at_once(string? which)
    {
        using var launch = await LaunchAsync();
        var refreshed = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", launch.Refresh), ("client_id", launch.Client));
        var second = refreshed.GetProperty("access_token").GetString()!;
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(launch.Access, launch.Patient));
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(second, launch.Patient));

        // Without a hint, the newest refresh token; with one, the token it names.
        var revoked = which == "access_token" ? launch.Access : refreshed.GetProperty("refresh_token").GetString()!;
        Assert.Equal(HttpStatusCode.OK, await RevokeAsync(launch, revoked, which));

        // No clock moved: the node that revoked checks its remembered tokens again at once.
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(launch.Access, launch.Patient));
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(second, launch.Patient));
        var again = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", refreshed.GetProperty("refresh_token").GetString()!), ("client_id", launch.Client));
        Assert.Equal("invalid_grant", Error(again));
    }

    [Fact]
    public async Task Reusing_a_redeemed_refresh_token_stops_every_access_token_of_the_grant_at_once()
    {
        using var launch = await LaunchAsync();
        var refreshed = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", launch.Refresh), ("client_id", launch.Client));
        var second = refreshed.GetProperty("access_token").GetString()!;
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(launch.Access, launch.Patient));
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(second, launch.Patient));

        var reuse = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", launch.Refresh), ("client_id", launch.Client));
        Assert.Equal("invalid_grant", Error(reuse));
        // The thief's and the app's access tokens alike, without waiting.
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(launch.Access, launch.Patient));
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(second, launch.Patient));
        // And the grant is revoked, not only its tokens.
        await using var scope = node.Services.CreateAsyncScope();
        var grants = scope.ServiceProvider.GetRequiredService<OpenIddict.Abstractions.IOpenIddictAuthorizationManager>();
        var grantId = new JsonWebToken(second).GetClaim(AccessTokens.GrantClaim).Value;
        Assert.True(await grants.HasStatusAsync((await grants.FindByIdAsync(grantId))!, OpenIddict.Abstractions.OpenIddictConstants.Statuses.Revoked));
    }

    [Fact]
    public async Task Replaying_an_authorization_code_stops_the_access_tokens_it_gave_at_once()
    {
        using var launch = await LaunchAsync();
        var refreshed = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", launch.Refresh), ("client_id", launch.Client));
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(launch.Access, launch.Patient));
        var replay = await launch.Agent.TokenAsync(("grant_type", "authorization_code"), ("code", launch.Code), ("redirect_uri", SmartAgent.RedirectUri),
            ("client_id", launch.Client), ("code_verifier", launch.Agent.Verifier));
        Assert.Equal("invalid_grant", Error(replay));
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(launch.Access, launch.Patient));
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(refreshed.GetProperty("access_token").GetString()!, launch.Patient));
    }

    [Fact]
    public async Task Disabling_a_user_from_the_command_line_stops_their_oauth_ward_token_and_unbound_tokens_within_the_recheck_period()
    {
        using var launch = await LaunchAsync();
        string wardToken;
        string userId;
        await using (var accounts = Accounts.Open(node.Config))
        {
            wardToken = await accounts.IssueTokenAsync(launch.User, null, "patient/*.rs", 60, CancellationToken.None);
            userId = (await accounts.FindUserAsync(launch.User)).Id;
        }
        // A token made on the node with its key but bound to no grant (as before this change, or by a benchmark).
        var unbound = node.Token(new AccessGrant(userId, null, "patient", SmartScopes.Parse("patient/*.rs"), launch.Patient, "Patient/" + launch.Patient));
        string[] tokens = [launch.Access, wardToken, unbound];
        foreach (var token in tokens)
        {
            Assert.Equal(HttpStatusCode.OK, await ReadAsync(token, launch.Patient));
        }

        // Another process (ward users disable) revokes: this node learns it at its next recheck.
        await using (var accounts = Accounts.Open(node.Config))
        {
            await accounts.DisableUserAsync(launch.User, CancellationToken.None);
        }
        node.Time.Advance(AccessTokens.RecheckEvery + TimeSpan.FromSeconds(1));
        foreach (var token in tokens)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(token, launch.Patient));
        }
        var refresh = await launch.Agent.TokenAsync(("grant_type", "refresh_token"), ("refresh_token", launch.Refresh), ("client_id", launch.Client));
        Assert.Equal("invalid_grant", Error(refresh));
    }

    /// <summary>A client assertion expiring <paramref name="expiresIn"/> after the node's now (negative: already expired).</summary>
    private string Assertion(BackendClient client, TimeSpan expiresIn, string? jti = null) =>
        new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = client.ClientId,
            Audience = node.Origin + "/connect/token",
            Claims = new Dictionary<string, object> { ["sub"] = client.ClientId, ["jti"] = jti ?? Guid.NewGuid().ToString("N") },
            IssuedAt = (node.Time.GetUtcNow() + expiresIn - TimeSpan.FromMinutes(1)).UtcDateTime,
            NotBefore = (node.Time.GetUtcNow() + expiresIn - TimeSpan.FromMinutes(1)).UtcDateTime,
            Expires = (node.Time.GetUtcNow() + expiresIn).UtcDateTime,
            SigningCredentials = new SigningCredentials(client.Key, "RS384"),
        });

    private async Task<(HttpStatusCode Status, JsonElement Body)> ClientTokenAsync(string assertion)
    {
        using var http = node.NewHttp(null);
        var response = await http.PostAsync(node.Origin + "/connect/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials",
            ["scope"] = "system/*.rs",
            ["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ["client_assertion"] = assertion,
        }));
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    [Fact]
    public async Task Removing_a_client_from_the_command_line_stops_its_backend_ward_token_and_users_tokens_within_the_recheck_period()
    {
        var backend = await node.BackendClientAsync();
        var (status, body) = await ClientTokenAsync(Assertion(backend, TimeSpan.FromMinutes(4)));
        Assert.True(status == HttpStatusCode.OK, body.ToString());
        var service = body.GetProperty("access_token").GetString()!;
        string wardToken;
        await using (var accounts = Accounts.Open(node.Config))
        {
            wardToken = await accounts.IssueTokenAsync(null, backend.ClientId, "system/*.rs", 60, CancellationToken.None);
        }
        using var launch = await LaunchAsync();
        Assert.Equal(HttpStatusCode.OK, await SearchAsync(service));
        Assert.Equal(HttpStatusCode.OK, await SearchAsync(wardToken));
        Assert.Equal(HttpStatusCode.OK, await ReadAsync(launch.Access, launch.Patient));

        await using (var accounts = Accounts.Open(node.Config))
        {
            await accounts.RemoveClientAsync(backend.ClientId, CancellationToken.None);
            await accounts.RemoveClientAsync(launch.Client, CancellationToken.None);
        }
        node.Time.Advance(AccessTokens.RecheckEvery + TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.Unauthorized, await SearchAsync(service));
        Assert.Equal(HttpStatusCode.Unauthorized, await SearchAsync(wardToken));
        Assert.Equal(HttpStatusCode.Unauthorized, await ReadAsync(launch.Access, launch.Patient));
    }

    [Fact]
    public async Task A_backend_token_revoked_by_its_client_stops_at_once()
    {
        var backend = await node.BackendClientAsync();
        var (_, body) = await ClientTokenAsync(Assertion(backend, TimeSpan.FromMinutes(4)));
        var service = body.GetProperty("access_token").GetString()!;
        Assert.Equal(HttpStatusCode.OK, await SearchAsync(service));
        using var http = node.NewHttp(null);
        var revoke = await http.PostAsync(node.Origin + "/connect/revoke", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["token"] = service,
            ["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ["client_assertion"] = Assertion(backend, TimeSpan.FromMinutes(4)),
        }));
        Assert.True(revoke.StatusCode == HttpStatusCode.OK, await revoke.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, await SearchAsync(service));
    }

    [Fact]
    public async Task A_client_assertion_jti_is_refused_as_long_as_the_assertion_could_still_be_accepted()
    {
        var backend = await node.BackendClientAsync();
        // Replayed later and later: just past the one minute the jti used to be kept after exp, then near the five
        // minutes of clock skew OpenIddict allows a client assertion by default.
        var assertion = Assertion(backend, TimeSpan.FromMinutes(4));
        Assert.Equal(HttpStatusCode.OK, (await ClientTokenAsync(assertion)).Status);
        node.Time.Advance(TimeSpan.FromMinutes(4) + TimeSpan.FromSeconds(61));
        // Another assertion of the client comes meanwhile (this used to forget the first one's jti).
        Assert.Equal(HttpStatusCode.OK, (await ClientTokenAsync(Assertion(backend, TimeSpan.FromMinutes(4)))).Status);
        var replay = await ClientTokenAsync(assertion);
        Assert.Equal(HttpStatusCode.Unauthorized, replay.Status);
        Assert.Equal("invalid_client", Error(replay.Body));
        node.Time.Advance(TimeSpan.FromMinutes(3));
        Assert.Equal(HttpStatusCode.OK, (await ClientTokenAsync(Assertion(backend, TimeSpan.FromMinutes(4)))).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(assertion)).Status);

        // Within the skew an expired assertion is still good once, and not twice.
        var late = Assertion(backend, -(ClientAssertionRules.ClockSkew / 2));
        Assert.Equal(HttpStatusCode.OK, (await ClientTokenAsync(late)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(late)).Status);
        // Beyond it, refused even the first time.
        Assert.Equal(HttpStatusCode.Unauthorized, (await ClientTokenAsync(Assertion(backend, -(ClientAssertionRules.ClockSkew + TimeSpan.FromSeconds(5))))).Status);
    }
}

public sealed class RevocationTestsOnSqlite(ClockedSqliteNode node) : RevocationTests(node), IClassFixture<ClockedSqliteNode>;

public sealed class RevocationTestsOnPostgres(ClockedPostgresNode node) : RevocationTests(node), IClassFixture<ClockedPostgresNode>;
