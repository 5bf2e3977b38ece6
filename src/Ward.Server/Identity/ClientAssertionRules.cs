using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.IdentityModel.JsonWebTokens;
using OpenIddict.Server;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

/// <summary>
/// SMART Backend Services rules for <c>private_key_jwt</c> client assertions, on top of OpenIddict's own checks
/// (signature against the client's registered JWKS, issuer, subject, audience, expiry): the assertion is signed with
/// RS384 or ES384, expires at most five minutes ahead, and its <c>jti</c> is used once (kept in the database until it
/// expires, so that no process of the node accepts it twice).
/// </summary>
internal sealed class ClientAssertionRules(IdentityDb db, TimeProvider clock) : IOpenIddictServerHandler<OpenIddictServerEvents.ProcessAuthenticationContext>
{
    public static readonly TimeSpan MaxLifetime = TimeSpan.FromMinutes(5);

    public async ValueTask HandleAsync(OpenIddictServerEvents.ProcessAuthenticationContext context)
    {
        if (context.ClientAssertionPrincipal is null || context.ClientAssertion is not { } assertion)
        {
            return;
        }
        // Already verified by OpenIddict: read its header and claims.
        var jwt = new JsonWebToken(assertion);
        if (jwt.Alg is not ("RS384" or "ES384"))
        {
            context.Reject(Errors.InvalidClient, $"The client assertion is signed with {jwt.Alg}; SMART Backend Services requires RS384 or ES384.");
            return;
        }
        var now = clock.GetUtcNow();
        var expires = new DateTimeOffset(jwt.ValidTo, TimeSpan.Zero);
        if (jwt.ValidTo == DateTime.MinValue || expires > now + MaxLifetime + TimeSpan.FromSeconds(30))
        {
            context.Reject(Errors.InvalidClient, "The client assertion's exp must be at most 5 minutes ahead.");
            return;
        }
        if (!jwt.TryGetPayloadValue<string>("jti", out var jti) || string.IsNullOrEmpty(jti))
        {
            context.Reject(Errors.InvalidClient, "The client assertion has no jti.");
            return;
        }
        var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(context.ClientId + "\n" + jti)));
        await db.UsedAssertions.Where(a => a.ExpiresUtc < now.UtcDateTime.AddMinutes(-1)).ExecuteDeleteAsync(context.CancellationToken);
        db.UsedAssertions.Add(new UsedAssertion { Id = key, ExpiresUtc = expires.UtcDateTime });
        try
        {
            await db.SaveChangesAsync(context.CancellationToken);
        }
        catch (DbUpdateException)
        {
            context.Reject(Errors.InvalidClient, "The client assertion was already used (jti replay).");
        }
    }
}
