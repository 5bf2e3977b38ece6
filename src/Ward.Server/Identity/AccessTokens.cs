using System.Collections.Concurrent;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;

namespace Ward.Server.Identity;

/// <summary>
/// Access tokens: JWTs (<c>typ: at+jwt</c>, RS256) signed with the node's key, issued by the authorization server or by
/// <c>ward token</c>, and checked here for every FHIR request. The signature is the trust anchor (no other issuer's token
/// can verify with the node's key). A token once verified is remembered until it expires, so that the hot path is one
/// dictionary lookup; every token is re-checked against the database (<see cref="Revoked"/>: its grant, its own token
/// entry, its user) at most every <see cref="RecheckEvery"/>, and at once after this process revoked anything
/// (<see cref="RevocationHappened"/>), so that a revoked grant stops working within that time, and immediately when the
/// revocation happened on this process.
/// </summary>
internal sealed class AccessTokens
{
    public static readonly TimeSpan RecheckEvery = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Skew = TimeSpan.FromSeconds(30);
    private const int MaxCached = 50_000;

    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    private readonly TokenValidationParameters _parameters;
    private readonly OidcKeys _keys;
    private readonly TimeProvider _clock;
    private readonly ConcurrentDictionary<string, Verified> _verified = new(StringComparer.Ordinal);
    // Looked up by the span of the Authorization header, so that a known token costs no allocation.
    private readonly ConcurrentDictionary<string, Verified>.AlternateLookup<ReadOnlySpan<char>> _bySpan;
    // Incremented by every revocation made on this process: a token checked before it is checked again.
    private long _revocations;

    public AccessTokens(OidcKeys keys, TimeProvider clock)
    {
        _keys = keys;
        _clock = clock;
        _bySpan = _verified.GetAlternateLookup<ReadOnlySpan<char>>();
        _parameters = new TokenValidationParameters
        {
            IssuerSigningKey = keys.Signing,
            ValidAlgorithms = [SecurityAlgorithms.RsaSha256],
            ValidTypes = ["at+jwt", "application/at+jwt"],
            ValidateIssuer = false,
            ValidateAudience = false,
            // Lifetime is checked below against the node's TimeProvider.
            ValidateLifetime = false,
            RequireExpirationTime = true,
            RequireSignedTokens = true,
        };
    }

    /// <summary>
    /// Why a token may no longer be used (its grant or token entry revoked or gone, its user disabled), or null while it
    /// may; set by the server (<see cref="GrantStatus"/>), null where there is no database (every token then stands until it expires).
    /// </summary>
    public Func<TokenBinding, CancellationToken, Task<string?>>? Revoked { get; set; }

    /// <summary>Makes every remembered token be checked again at its next use: called after each revocation this process makes.</summary>
    public void RevocationHappened() => Interlocked.Increment(ref _revocations);

    private sealed record Verified(AccessGrant Grant, DateTimeOffset Expires, TokenBinding Binding, DateTimeOffset RecheckAt, long Revocations);

    /// <summary>The grant a token carries, or the reason it is refused (for the WWW-Authenticate error_description).</summary>
    public ValueTask<(AccessGrant? Grant, string? Error)> ValidateAsync(ReadOnlySpan<char> token, CancellationToken ct)
    {
        var now = _clock.GetUtcNow();
        if (_bySpan.TryGetValue(token, out var known) && now < known.Expires + Skew && now < known.RecheckAt
            && known.Revocations == Volatile.Read(ref _revocations))
        {
            return ValueTask.FromResult<(AccessGrant?, string?)>((known.Grant, null));
        }
        return ValidateAsync(token.ToString(), known, now, ct);
    }

    private async ValueTask<(AccessGrant? Grant, string? Error)> ValidateAsync(string token, Verified? known, DateTimeOffset now, CancellationToken ct)
    {
        if (known is not null && now >= known.Expires + Skew)
        {
            _verified.TryRemove(token, out _);
            return (null, "The access token expired.");
        }
        // Read before the database is: a revocation committed while this check runs makes the next use check again.
        var revocations = Volatile.Read(ref _revocations);
        Verified verified;
        if (known is null)
        {
            var result = await _handler.ValidateTokenAsync(token, _parameters);
            if (!result.IsValid || result.SecurityToken is not JsonWebToken jwt)
            {
                return (null, "The access token is not valid: it is malformed, of another type, or not signed by this node.");
            }
            var expires = new DateTimeOffset(jwt.ValidTo, TimeSpan.Zero);
            var notBefore = jwt.ValidFrom == DateTime.MinValue ? DateTimeOffset.MinValue : new DateTimeOffset(jwt.ValidFrom, TimeSpan.Zero);
            if (now >= expires + Skew)
            {
                return (null, "The access token expired.");
            }
            if (now + Skew < notBefore)
            {
                return (null, "The access token is not valid yet.");
            }
            if (Grant(result.ClaimsIdentity) is not { } grant)
            {
                return (null, "The access token lacks a subject or carries scopes this node does not know.");
            }
            var binding = new TokenBinding(grant.Subject, result.ClaimsIdentity.FindFirst(GrantClaim)?.Value, result.ClaimsIdentity.FindFirst(TokenIdClaim)?.Value);
            verified = new Verified(grant, expires, binding, now, revocations);
        }
        else
        {
            verified = known;
        }
        if (Revoked is { } check && await check(verified.Binding, ct) is { } why)
        {
            _verified.TryRemove(token, out _);
            return (null, why);
        }
        if (_verified.Count >= MaxCached)
        {
            _verified.Clear();
        }
        _verified[token] = verified with { RecheckAt = now + RecheckEvery, Revocations = revocations };
        return (verified.Grant, null);
    }

    /// <summary>OpenIddict's claim naming the grant (authorization) a token belongs to.</summary>
    public const string GrantClaim = "oi_au_id";

    /// <summary>OpenIddict's claim naming the token's own entry (revoked by <c>/connect/revoke</c> and by reuse detection).</summary>
    public const string TokenIdClaim = "oi_tkn_id";

    private static AccessGrant? Grant(ClaimsIdentity identity)
    {
        var subject = identity.FindFirst("sub")?.Value;
        var scopes = string.Join(' ', identity.FindAll("scope").Select(c => c.Value));
        if (subject is null || !SmartScopes.TryParse(scopes, out var parsed, out _))
        {
            return null;
        }
        return new AccessGrant(subject, identity.FindFirst("client_id")?.Value, identity.FindFirst(Claims.Role)?.Value, parsed,
            identity.FindFirst(Claims.Patient)?.Value, identity.FindFirst(Claims.User)?.Value ?? identity.FindFirst(Claims.FhirUser)?.Value);
    }

    /// <summary>
    /// A token made on the node itself (<c>ward token</c>, tests and benchmarks): the same format and key as the
    /// authorization server's, bound to the grant <paramref name="grantId"/> when given (<c>ward token</c> always gives
    /// one, so that disabling the user or removing the client revokes it).
    /// </summary>
    public string Issue(AccessGrant grant, TimeSpan lifetime, string issuer, DateTimeOffset? at = null, string? grantId = null)
    {
        var now = at ?? _clock.GetUtcNow();
        var claims = new Dictionary<string, object>
        {
            ["sub"] = grant.Subject,
            ["scope"] = grant.Scopes.ToString(),
            ["jti"] = Guid.NewGuid().ToString("N"),
        };
        if (grant.ClientId is { } client)
        {
            claims["client_id"] = client;
        }
        if (grantId is not null)
        {
            claims[GrantClaim] = grantId;
        }
        if (grant.Role is { } role)
        {
            claims[Claims.Role] = role;
        }
        if (grant.Patient is { } patient)
        {
            claims[Claims.Patient] = patient;
        }
        if (grant.FhirUser is { } fhirUser)
        {
            claims[Claims.FhirUser] = fhirUser;
        }
        return _handler.CreateToken(new SecurityTokenDescriptor
        {
            TokenType = "at+jwt",
            Issuer = issuer,
            Claims = claims,
            IssuedAt = now.UtcDateTime,
            NotBefore = now.UtcDateTime,
            Expires = (now + lifetime).UtcDateTime,
            SigningCredentials = new SigningCredentials(_keys.Signing, SecurityAlgorithms.RsaSha256),
        });
    }

    /// <summary>What a token is bound to, checked against the database: its subject, its grant and its own token entry (each when it has one).</summary>
    internal sealed record TokenBinding(string Subject, string? GrantId, string? TokenId);

    /// <summary>The claims Ward adds to tokens besides the registered ones.</summary>
    public static class Claims
    {
        public const string Role = "ward_role";
        public const string Patient = "patient";
        public const string FhirUser = "fhirUser";
        /// <summary>The user's FHIR resource (Practitioner/…), always in the access token: the access policy needs it whatever scopes the app asked for.</summary>
        public const string User = "ward_user";
    }
}
