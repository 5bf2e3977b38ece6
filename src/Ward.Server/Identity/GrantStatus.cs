using Microsoft.AspNetCore.Identity;
using Microsoft.Extensions.DependencyInjection;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

/// <summary>
/// Whether an access token may still be used, from the database: the grant (OpenIddict authorization) it names is valid,
/// its own token entry is valid (the revocation endpoint and reuse detection revoke entries), and its user is not
/// disabled. Also revokes a whole grant, for the revocation endpoint and for reuse of a redeemed refresh token or code.
/// </summary>
internal sealed class GrantStatus(IServiceProvider services)
{
    /// <summary>Why the token bound to <paramref name="binding"/> may no longer be used, or null while it may.</summary>
    public async Task<string?> RevokedAsync(AccessTokens.TokenBinding binding, CancellationToken ct)
    {
        await using var scope = services.CreateAsyncScope();
        var provider = scope.ServiceProvider;
        if (binding.GrantId is { } grantId)
        {
            var authorizations = provider.GetRequiredService<IOpenIddictAuthorizationManager>();
            if (await authorizations.FindByIdAsync(grantId, ct) is not { } found || !await authorizations.HasStatusAsync(found, Statuses.Valid, ct))
            {
                return "The access token's grant was revoked.";
            }
        }
        if (binding.TokenId is { } tokenId)
        {
            var entries = provider.GetRequiredService<IOpenIddictTokenManager>();
            if (await entries.FindByIdAsync(tokenId, ct) is not { } found || !await entries.HasStatusAsync(found, Statuses.Valid, ct))
            {
                return "The access token was revoked.";
            }
        }
        // Any subject that names a user: a disabled account's tokens stop, whichever way they were made.
        var users = provider.GetRequiredService<UserManager<WardUser>>();
        if (await users.FindByIdAsync(binding.Subject) is { Disabled: true })
        {
            return "The access token's user is disabled.";
        }
        return null;
    }

    /// <summary>
    /// Revokes a grant and every token issued under it, and makes this process check every remembered access token again
    /// before its next use. Returns whether the grant was still valid.
    /// </summary>
    public static async Task<bool> RevokeGrantAsync(IServiceProvider provider, string grantId, CancellationToken ct)
    {
        var authorizations = provider.GetRequiredService<IOpenIddictAuthorizationManager>();
        var entries = provider.GetRequiredService<IOpenIddictTokenManager>();
        var revoked = false;
        if (await authorizations.FindByIdAsync(grantId, ct) is { } found && await authorizations.HasStatusAsync(found, Statuses.Valid, ct))
        {
            revoked = await authorizations.TryRevokeAsync(found, ct);
        }
        await entries.RevokeByAuthorizationIdAsync(grantId, ct);
        provider.GetRequiredService<AccessTokens>().RevocationHappened();
        return revoked;
    }

    /// <summary>
    /// The revocation endpoint revokes the grant of the token it is given, not only that token (RFC 7009 §2.1: revoking a
    /// refresh token should revoke the access tokens of the same grant; Ward revokes the grant for an access token too).
    /// A token bound to no grant (a backend service's) has its own entry revoked by OpenIddict; this process checks its
    /// remembered tokens again either way.
    /// </summary>
    internal sealed class RevokeWholeGrant(IServiceProvider provider) : IOpenIddictServerHandler<OpenIddictServerEvents.HandleRevocationRequestContext>
    {
        public async ValueTask HandleAsync(OpenIddictServerEvents.HandleRevocationRequestContext context)
        {
            if (context.IsRejected || context.GenericTokenPrincipal is not { } principal)
            {
                return;
            }
            if (principal.GetAuthorizationId() is { Length: > 0 } grantId)
            {
                await RevokeGrantAsync(provider, grantId, context.CancellationToken);
            }
            else
            {
                provider.GetRequiredService<AccessTokens>().RevocationHappened();
            }
            IdentityAudit.Note(context.Transaction, IdentityAudit.Grant(principal));
        }
    }

    /// <summary>
    /// A refresh token or authorization code presented again after it was redeemed: OpenIddict refuses it and revokes the
    /// tokens of its grant, but leaves the grant valid; this revokes the grant too (so that access tokens already issued
    /// under it stop at once on this process, within <see cref="AccessTokens.RecheckEvery"/> on others) and raises a
    /// security alert in the audit log. Runs just before OpenIddict's own token entry check.
    /// </summary>
    internal sealed class RevokeOnReuse(IServiceProvider provider) : IOpenIddictServerHandler<OpenIddictServerEvents.ValidateTokenContext>
    {
        public async ValueTask HandleAsync(OpenIddictServerEvents.ValidateTokenContext context)
        {
            if (context.EndpointType != OpenIddictServerEndpointType.Token || context.IsRejected || context.Principal is not { } principal
                || string.IsNullOrEmpty(context.TokenId)
                || !(principal.HasTokenType(TokenTypeIdentifiers.RefreshToken) || principal.HasTokenType(TokenTypeIdentifiers.Private.AuthorizationCode)))
            {
                return;
            }
            var entries = provider.GetRequiredService<IOpenIddictTokenManager>();
            if (await entries.FindByIdAsync(context.TokenId, context.CancellationToken) is not { } entry
                || !await entries.HasStatusAsync(entry, Statuses.Redeemed, context.CancellationToken))
            {
                return;
            }
            if (principal.GetAuthorizationId() is { Length: > 0 } grantId)
            {
                await RevokeGrantAsync(provider, grantId, context.CancellationToken);
            }
            var kind = principal.HasTokenType(TokenTypeIdentifiers.RefreshToken) ? "refresh-token-reuse" : "authorization-code-replay";
            IdentityAudit.Alert(context.Transaction, kind, IdentityAudit.Grant(principal));
        }
    }
}
