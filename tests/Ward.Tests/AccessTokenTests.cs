using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Server.Identity;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>The access token checks on their own, with a clock the test moves: expiry, and revocation of a grant.</summary>
public sealed class AccessTokenTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ward-tokens-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly OidcKeys _keys;
    private readonly ManualClock _clock = new(new DateTimeOffset(2026, 11, 23, 12, 0, 0, TimeSpan.Zero));

    public AccessTokenTests()
    {
        _keys = OidcKeys.Load(NodeConfig.Init(_dir, "tokens"));
    }

    private sealed class ManualClock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;
        public override DateTimeOffset GetUtcNow() => Now;
    }

    private string GrantToken(string grantId) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        TokenType = "at+jwt",
        Claims = new Dictionary<string, object> { ["sub"] = "u1", ["scope"] = "patient/*.rs", ["patient"] = "p1", [AccessTokens.GrantClaim] = grantId },
        IssuedAt = _clock.Now.UtcDateTime,
        NotBefore = _clock.Now.UtcDateTime,
        Expires = _clock.Now.UtcDateTime.AddMinutes(60),
        SigningCredentials = new SigningCredentials(_keys.Signing, SecurityAlgorithms.RsaSha256),
    });

    [Fact]
    public async Task A_revoked_grant_stops_its_tokens_at_the_next_recheck_and_expiry_is_exact()
    {
        var valid = true;
        var checks = 0;
        var tokens = new AccessTokens(_keys, _clock) { Revoked = (_, _) => { checks++; return Task.FromResult(valid ? null : "The access token's grant was revoked."); } };
        var token = GrantToken("grant-1");
        var (grant, error) = await tokens.ValidateAsync(token, CancellationToken.None);
        Assert.Null(error);
        Assert.Equal("p1", grant!.Patient);
        Assert.Equal(1, checks);
        // Within the recheck period, a known token costs no database check.
        _clock.Now += TimeSpan.FromSeconds(10);
        Assert.NotNull((await tokens.ValidateAsync(token, CancellationToken.None)).Grant);
        Assert.Equal(1, checks);
        valid = false;
        _clock.Now += AccessTokens.RecheckEvery;
        var (revoked, why) = await tokens.ValidateAsync(token, CancellationToken.None);
        Assert.Null(revoked);
        Assert.Contains("revoked", why);

        var other = GrantToken("grant-2");
        valid = true;
        Assert.NotNull((await tokens.ValidateAsync(other, CancellationToken.None)).Grant);
        _clock.Now += TimeSpan.FromMinutes(61);
        Assert.Contains("expired", (await tokens.ValidateAsync(other, CancellationToken.None)).Error);
    }

    [Fact]
    public async Task A_revocation_on_this_process_makes_every_remembered_token_checked_again_at_once_grant_or_not()
    {
        var revoked = new HashSet<string>();
        var checks = 0;
        var tokens = new AccessTokens(_keys, _clock) { Revoked = (b, _) => { checks++; return Task.FromResult(revoked.Contains(b.Subject) ? "revoked" : null); } };
        var bound = GrantToken("grant-1");
        var unbound = tokens.Issue(new AccessGrant("u9", null, "nurse", SmartScopes.Parse("user/*.rs"), null, null), TimeSpan.FromMinutes(5), "urn:ward:test");
        Assert.NotNull((await tokens.ValidateAsync(bound, CancellationToken.None)).Grant);
        Assert.NotNull((await tokens.ValidateAsync(unbound, CancellationToken.None)).Grant);
        Assert.Equal(2, checks);
        revoked.Add("u1");
        revoked.Add("u9");
        // Without a revocation on this process, the remembered answer stands until the recheck...
        Assert.NotNull((await tokens.ValidateAsync(bound, CancellationToken.None)).Grant);
        // ...with one, both are checked again at their next use, without waiting.
        tokens.RevocationHappened();
        Assert.Equal("revoked", (await tokens.ValidateAsync(bound, CancellationToken.None)).Error);
        Assert.Equal("revoked", (await tokens.ValidateAsync(unbound, CancellationToken.None)).Error);
    }

    [Fact]
    public async Task Tokens_made_by_ward_token_carry_the_grant_they_were_made_for()
    {
        var tokens = new AccessTokens(_keys, _clock);
        var grant = new AccessGrant("u2", "c2", "nurse", SmartScopes.Parse("user/Observation.rs"), null, "Practitioner/9");
        var (read, _) = await tokens.ValidateAsync(tokens.Issue(grant, TimeSpan.FromMinutes(5), "urn:ward:test"), CancellationToken.None);
        Assert.Equal(("u2", "c2", "nurse", "user/Observation.rs", "Practitioner/9"), (read!.Subject, read.ClientId, read.Role, read.Scopes.ToString(), read.FhirUser));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
