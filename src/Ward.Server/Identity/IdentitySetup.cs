using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Identity;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using OpenIddict.Server;
using Ward.Core.Node;

namespace Ward.Server.Identity;

/// <summary>Registers identity: users (ASP.NET Core Identity), the OAuth 2 / OpenID Connect server (OpenIddict), and their limits.</summary>
internal static class IdentitySetup
{
    public const string LoginLimit = "login";
    public const string TokenLimit = "token";

    /// <summary>Password hashing: PBKDF2-HMAC-SHA512 (Identity v3 format) at OWASP's 2023 work factor for that function.</summary>
    public const int PasswordIterations = 210_000;

    /// <summary>What both the web host and the command line need: the identity database, users and clients.</summary>
    public static void AddIdentityData(IServiceCollection services, NodeConfig config)
    {
        services.AddDbContext<IdentityDb>(options => IdentityDb.Configure(options, config));
        // Cookies, anti-forgery tokens and Identity's own tokens are protected with keys kept beside the node's other
        // keys (0700), so that every process of the node, and the node after a restart, can read them.
        services.AddDataProtection()
            .PersistKeysToFileSystem(new DirectoryInfo(config.Resolve("keys/data-protection")))
            .SetApplicationName("ward:" + config.Name);
        services.Configure<PasswordHasherOptions>(o =>
        {
            o.CompatibilityMode = PasswordHasherCompatibilityMode.IdentityV3;
            o.IterationCount = PasswordIterations;
        });
        services.AddOpenIddict().AddCore(o => o.UseEntityFrameworkCore().UseDbContext<IdentityDb>());
    }

    private static void Options(IdentityOptions o)
    {
        // NIST SP 800-63B and OWASP: length over composition rules.
        o.Password.RequiredLength = 12;
        o.Password.RequireDigit = false;
        o.Password.RequireLowercase = false;
        o.Password.RequireUppercase = false;
        o.Password.RequireNonAlphanumeric = false;
        o.Password.RequiredUniqueChars = 4;
        o.Lockout.MaxFailedAccessAttempts = 5;
        o.Lockout.DefaultLockoutTimeSpan = TimeSpan.FromMinutes(15);
        o.Lockout.AllowedForNewUsers = true;
        o.User.AllowedUserNameCharacters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._@";
        o.SignIn.RequireConfirmedAccount = false;
    }

    /// <summary>Users without the web host's sign-in machinery (for <c>ward users</c>).</summary>
    public static void AddUserStore(IServiceCollection services)
    {
        services.AddLogging();
        services.AddIdentityCore<WardUser>(Options)
            .AddEntityFrameworkStores<IdentityDb>()
            .AddDefaultTokenProviders();
    }

    public static void AddServer(IServiceCollection services, NodeConfig config, OidcKeys keys)
    {
        AddIdentityData(services, config);
        services.AddIdentity<WardUser, IdentityRole>(Options)
            .AddEntityFrameworkStores<IdentityDb>()
            .AddDefaultTokenProviders();
        services.ConfigureApplicationCookie(o =>
        {
            o.Cookie.Name = "ward.session";
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Lax;
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
            o.ExpireTimeSpan = TimeSpan.FromHours(1);
            o.SlidingExpiration = true;
            o.LoginPath = "/account/login";
            o.LogoutPath = "/account/logout";
        });
        services.ConfigureExternalCookie(o => o.Cookie.Name = "ward.external");
        services.AddAntiforgery(o =>
        {
            o.Cookie.Name = "ward.antiforgery";
            o.FormFieldName = "__csrf";
        });
        services.AddOpenIddict().AddServer(o =>
        {
            o.SetAuthorizationEndpointUris("connect/authorize")
                .SetTokenEndpointUris("connect/token")
                .SetRevocationEndpointUris("connect/revoke")
                .SetJsonWebKeySetEndpointUris(".well-known/jwks")
                .SetConfigurationEndpointUris(".well-known/openid-configuration");
            o.AllowAuthorizationCodeFlow().AllowRefreshTokenFlow().AllowClientCredentialsFlow();
            o.RequireProofKeyForCodeExchange();
            o.Configure(options => options.CodeChallengeMethods.Remove(OpenIddict.Abstractions.OpenIddictConstants.CodeChallengeMethods.Plain));
            o.SetAccessTokenLifetime(TimeSpan.FromMinutes(60));
            o.SetAuthorizationCodeLifetime(TimeSpan.FromMinutes(2));
            o.SetIdentityTokenLifetime(TimeSpan.FromMinutes(10));
            o.SetRefreshTokenLifetime(TimeSpan.FromDays(30));
            // A redeemed refresh token is never accepted again: reuse revokes the whole grant.
            o.SetRefreshTokenReuseLeeway(TimeSpan.Zero);
            o.AddSigningKey(keys.Signing).AddEncryptionKey(keys.Encryption);
            // The node is its own resource server; access tokens stay signed JWTs so that they are checked without decryption.
            o.DisableAccessTokenEncryption();
            // SMART scopes are open-ended (every resource type): Ward checks them itself against each client's registration.
            o.DisableScopeValidation();
            o.IgnoreScopePermissions();
            o.AddEventHandler<OpenIddictServerEvents.ValidateTokenContext>(h => h.UseSingletonHandler<SmartAssertionType.Accept>()
                .SetOrder(OpenIddictServerHandlers.Protection.ValidateIdentityModelToken.Descriptor.Order - 500));
            o.AddEventHandler<OpenIddictServerEvents.ValidateTokenContext>(h => h.UseSingletonHandler<SmartAssertionType.RestoreType>()
                .SetOrder(OpenIddictServerHandlers.Protection.ValidatePrincipal.Descriptor.Order - 500));
            o.AddEventHandler<OpenIddictServerEvents.ProcessAuthenticationContext>(h =>
                h.UseScopedHandler<ClientAssertionRules>().SetOrder(OpenIddictServerHandlers.ValidateClientAssertionWellknownClaims.Descriptor.Order + 500));
            // Revocation is of the whole grant, and reuse of a redeemed refresh token or code revokes the grant too.
            o.AddEventHandler<OpenIddictServerEvents.HandleRevocationRequestContext>(h =>
                h.UseScopedHandler<GrantStatus.RevokeWholeGrant>().SetOrder(OpenIddictServerHandlers.Revocation.RevokeToken.Descriptor.Order + 500));
            o.AddEventHandler<OpenIddictServerEvents.ValidateTokenContext>(h =>
                h.UseScopedHandler<GrantStatus.RevokeOnReuse>().SetOrder(OpenIddictServerHandlers.Protection.ValidateTokenEntry.Descriptor.Order - 500));
            // Every response of the OAuth endpoints is audited before it is written (before OpenIddict normalises errors).
            o.AddEventHandler<OpenIddictServerEvents.ApplyAuthorizationResponseContext>(h =>
                h.UseSingletonHandler<IdentityAudit.OnResponse<OpenIddictServerEvents.ApplyAuthorizationResponseContext>>().SetOrder(int.MinValue + 50_000));
            o.AddEventHandler<OpenIddictServerEvents.ApplyTokenResponseContext>(h =>
                h.UseSingletonHandler<IdentityAudit.OnResponse<OpenIddictServerEvents.ApplyTokenResponseContext>>().SetOrder(int.MinValue + 50_000));
            o.AddEventHandler<OpenIddictServerEvents.ApplyRevocationResponseContext>(h =>
                h.UseSingletonHandler<IdentityAudit.OnResponse<OpenIddictServerEvents.ApplyRevocationResponseContext>>().SetOrder(int.MinValue + 50_000));
            o.UseAspNetCore()
                .EnableAuthorizationEndpointPassthrough()
                .EnableTokenEndpointPassthrough()
                .EnableStatusCodePagesIntegration()
                // Plain HTTP is only ever served on loopback (WardServer.ParseUrls); everything else is HTTPS.
                .DisableTransportSecurityRequirement();
        });
        services.AddRateLimiter(o =>
        {
            o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            o.AddPolicy(LoginLimit, http => PerClient(http, config.RateLimits.LoginPerMinute));
            o.AddPolicy(TokenLimit, http => PerClient(http, config.RateLimits.TokenPerMinute));
            o.OnRejected = async (context, _) =>
            {
                context.HttpContext.Response.Headers.RetryAfter = "60";
                // A refusal of the sign-in pages or the OAuth endpoints like any other: audited (the caller is unknown at
                // this point, only its address).
                var http = context.HttpContext;
                if (!http.Request.Path.StartsWithSegments("/connect") && !http.Request.Path.StartsWithSegments("/account"))
                {
                    return;
                }
                var audit = http.RequestServices.GetRequiredService<Ward.Core.Audit.AuditLog>();
                await audit.RecordAsync([new Ward.Core.Audit.AuditRecord
                {
                    Kind = Ward.Core.Audit.AuditKind.Login,
                    Subtype = http.Request.Path.StartsWithSegments("/connect/token") ? "token-refused" : "login",
                    Action = 'E',
                    Status = StatusCodes.Status429TooManyRequests,
                    RecordedTicks = audit.NowTicks,
                    Address = http.Connection.RemoteIpAddress?.ToString(),
                }]);
            };
        });
    }

    private static RateLimitPartition<string> PerClient(HttpContext http, int perMinute) =>
        RateLimitPartition.GetFixedWindowLimiter(http.Connection.RemoteIpAddress?.ToString() ?? "unknown", _ => new FixedWindowRateLimiterOptions
        {
            PermitLimit = perMinute,
            Window = TimeSpan.FromMinutes(1),
            QueueLimit = 0,
        });
}
