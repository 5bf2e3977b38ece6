using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.IdentityModel.JsonWebTokens;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

/// <summary>
/// SMART Backend Services rules for <c>private_key_jwt</c> client assertions, on top of OpenIddict's own checks
/// (signature against the client's registered JWKS, issuer, subject, audience, expiry): the assertion is signed with
/// RS384 or ES384, expires at most five minutes ahead, is refused once its expiry is more than <see cref="ClockSkew"/>
/// past, and its <c>jti</c> is used once: kept in the database until the assertion could no longer be accepted (its
/// expiry plus <see cref="ClockSkew"/>), so that no process of the node accepts it twice. Each refusal is a security
/// alert in the audit log.
/// </summary>
internal sealed class ClientAssertionRules(IdentityDb db, TimeProvider clock) : IOpenIddictServerHandler<OpenIddictServerEvents.ProcessAuthenticationContext>
{
    public static readonly TimeSpan MaxLifetime = TimeSpan.FromMinutes(5);

    /// <summary>How far the client's clock may be off: the same bound for OpenIddict's expiry check and for the jti's memory.</summary>
    public static readonly TimeSpan ClockSkew = TimeSpan.FromSeconds(30);

    private static void Reject(OpenIddictServerEvents.ProcessAuthenticationContext context, string alert, string description)
    {
        IdentityAudit.Alert(context.Transaction, alert, new AuditParty(null, null, null, context.ClientId, null, null));
        context.Reject(Errors.InvalidClient, description);
    }

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
            Reject(context, "client-assertion-rejected", $"The client assertion is signed with {jwt.Alg}; SMART Backend Services requires RS384 or ES384.");
            return;
        }
        var now = clock.GetUtcNow();
        var expires = new DateTimeOffset(jwt.ValidTo, TimeSpan.Zero);
        if (jwt.ValidTo == DateTime.MinValue || expires > now + MaxLifetime + ClockSkew)
        {
            Reject(context, "client-assertion-rejected", "The client assertion's exp must be at most 5 minutes ahead.");
            return;
        }
        // OpenIddict checks the expiry with the same skew (SmartAssertionType.Accept); checked here too, because the jti's
        // memory below must outlast every assertion this node could still accept.
        var forgetAfter = expires + ClockSkew;
        if (forgetAfter < now)
        {
            Reject(context, "client-assertion-rejected", "The client assertion expired.");
            return;
        }
        if (!jwt.TryGetPayloadValue<string>("jti", out var jti) || string.IsNullOrEmpty(jti))
        {
            Reject(context, "client-assertion-rejected", "The client assertion has no jti.");
            return;
        }
        var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(context.ClientId + "\n" + jti)));
        // Only assertions that can no longer be accepted are forgotten.
        await db.UsedAssertions.Where(a => a.ExpiresUtc < now.UtcDateTime).ExecuteDeleteAsync(context.CancellationToken);
        db.UsedAssertions.Add(new UsedAssertion { Id = key, ExpiresUtc = forgetAfter.UtcDateTime });
        try
        {
            await db.SaveChangesAsync(context.CancellationToken);
        }
        catch (DbUpdateException)
        {
            Reject(context, "client-assertion-replayed", "The client assertion was already used (jti replay).");
        }
    }
}

/// <summary>
/// SMART Backend Services fixes the client assertion's header to <c>typ: JWT</c>, while OpenIddict expects the newer
/// <c>client-authentication+jwt</c> (and takes a <c>JWT</c> for an identity token). For the client assertion only, and only
/// when the header says <c>JWT</c>, this lets Microsoft.IdentityModel accept that type (signature, issuer, audience and
/// lifetime checks all stay), and <see cref="RestoreType"/> then gives the principal back its client assertion type.
/// SMART also names the token endpoint as the assertion's audience, which is added to the audiences OpenIddict accepts.
/// </summary>
internal static class SmartAssertionType
{
    private const string Marker = "ward:smart-jwt-assertion";

    internal sealed class Accept : IOpenIddictServerHandler<OpenIddictServerEvents.ValidateTokenContext>
    {
        public ValueTask HandleAsync(OpenIddictServerEvents.ValidateTokenContext context)
        {
            if (context.TokenValidationParameters is not { ValidTypes: { } types } parameters || !types.Contains(JsonWebTokenTypes.ClientAuthentication)
                || !context.ValidTokenTypes.Contains(TokenTypeIdentifiers.Private.ClientAssertion))
            {
                return ValueTask.CompletedTask;
            }
            // SMART: "aud: the FHIR authorization server's token URL" (OpenIddict accepts its issuer identifier).
            // The clock skew OpenIddict allows past the assertion's exp, bounded by the jti's memory (ClientAssertionRules).
            parameters.ClockSkew = ClientAssertionRules.ClockSkew;
            if (context.Transaction.BaseUri is { } baseUri && context.ValidAudiences.Count > 0)
            {
                context.ValidAudiences.Add(new Uri(baseUri, "connect/token").AbsoluteUri);
            }
            if (context.Token is { Length: > 0 } token && new JsonWebTokenHandler().CanReadToken(token) && new JsonWebToken(token).Typ == "JWT")
            {
                parameters.ValidTypes = ["JWT"];
                context.Transaction.Properties[Marker] = true;
            }
            return ValueTask.CompletedTask;
        }
    }

    internal sealed class RestoreType : IOpenIddictServerHandler<OpenIddictServerEvents.ValidateTokenContext>
    {
        public ValueTask HandleAsync(OpenIddictServerEvents.ValidateTokenContext context)
        {
            if (context.Principal is { } principal && context.ValidTokenTypes.Contains(TokenTypeIdentifiers.Private.ClientAssertion)
                && context.Transaction.Properties.Remove(Marker))
            {
                principal.SetTokenType(TokenTypeIdentifiers.Private.ClientAssertion);
            }
            return ValueTask.CompletedTask;
        }
    }
}
