using Microsoft.AspNetCore.Identity;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.Tokens;
using OpenIddict.Abstractions;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Core.Search;
using Ward.Core.Storage;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

internal enum ClientKind { Public, Confidential, Backend }

internal sealed record ClientSummary(string ClientId, string Kind, string? DisplayName, IReadOnlyList<string> RedirectUris, string Scopes);

/// <summary>
/// Users and clients of a node, managed from the command line on the data folder (<c>ward users</c>, <c>ward clients</c>,
/// <c>ward token</c>, <c>ward demo</c>), through the same Identity and OpenIddict managers as the web host.
/// </summary>
internal sealed class Accounts : IAsyncDisposable
{
    private readonly ServiceProvider _services;
    private readonly AsyncServiceScope _scope;
    private readonly NodeConfig _config;
    private readonly RecordStore _store;

    private Accounts(NodeConfig config)
    {
        _config = config;
        // The record store refuses a missing or damaged database, runs the migrations (identity tables included) and proves
        // the master key is the node's; it stays open to check the records that users are linked to.
        _store = RecordStore.Open(config);
        var services = new ServiceCollection();
        services.AddSingleton(TimeProvider.System);
        IdentitySetup.AddIdentityData(services, config);
        IdentitySetup.AddUserStore(services);
        _services = services.BuildServiceProvider();
        _scope = _services.CreateAsyncScope();
    }

    public static Accounts Open(NodeConfig config) => new(config);

    /// <summary>The node's record store these accounts opened: a command records its audit event through it instead of opening the database again.</summary>
    public RecordStore Store => _store;

    private UserManager<WardUser> Users => _scope.ServiceProvider.GetRequiredService<UserManager<WardUser>>();
    private IOpenIddictApplicationManager Apps => _scope.ServiceProvider.GetRequiredService<IOpenIddictApplicationManager>();
    private IOpenIddictAuthorizationManager Grants => _scope.ServiceProvider.GetRequiredService<IOpenIddictAuthorizationManager>();

    // ------------------------------------------------------------------ users

    public async Task<WardUser> AddUserAsync(string userName, string role, string? fhirUser, string password, CancellationToken ct)
    {
        Roles.Check(role);
        if (fhirUser is not null && (!ReferenceParser.TryParseLocal(fhirUser, out var type, out _) || type is not ("Practitioner" or "PractitionerRole" or "Patient" or "RelatedPerson")))
        {
            throw new NodeException($"'{fhirUser}' must name the user's FHIR record, such as Practitioner/123 or Patient/456.");
        }
        if (role == Roles.Patient && fhirUser?.StartsWith("Patient/", StringComparison.Ordinal) != true)
        {
            throw new NodeException("A patient account needs --patient Patient/ID: the record it may open.");
        }
        if (role != Roles.Patient && fhirUser?.StartsWith("Patient/", StringComparison.Ordinal) == true)
        {
            throw new NodeException("--patient is for patient accounts; staff are linked with --practitioner.");
        }
        if (role == Roles.Service)
        {
            throw new NodeException("Backend services are clients, not users: ward clients add --kind backend.");
        }
        if (fhirUser is not null)
        {
            CheckRecord(fhirUser);
        }
        var user = new WardUser { UserName = userName, Role = role, FhirUser = fhirUser, LockoutEnabled = true };
        Check(await Users.CreateAsync(user, password), $"Cannot create user '{userName}'");
        return user;
    }

    /// <summary>A user is linked to a record of this node that can be read: never to one that does not exist, was deleted or erased.</summary>
    private void CheckRecord(string reference)
    {
        ReferenceParser.TryParseLocal(reference, out var type, out var id);
        var current = _store.Read(s => s.GetCurrent(type!, id!));
        if (current is not { Deleted: false })
        {
            var state = current is null ? "does not exist on this node" : current.Value.Erased ? "was erased" : "was deleted";
            throw new NodeException($"{reference} {state}: a user is linked only to a record the node holds (import it first, or name the right one); no user was created.");
        }
    }

    public async Task<List<WardUser>> ListUsersAsync(CancellationToken ct) =>
        await Task.Run(() => Users.Users.OrderBy(u => u.UserName).ToList(), ct);

    public async Task<WardUser> FindUserAsync(string userName) =>
        await Users.FindByNameAsync(userName) ?? throw new NodeException($"No user '{userName}' on this node (ward users list).");

    /// <summary>Disables an account for good: no sign-in, no new token, and every grant it holds revoked.</summary>
    public async Task<int> DisableUserAsync(string userName, CancellationToken ct)
    {
        var user = await FindUserAsync(userName);
        user.Disabled = true;
        Check(await Users.UpdateAsync(user), "Cannot disable the user");
        Check(await Users.SetLockoutEndDateAsync(user, DateTimeOffset.MaxValue), "Cannot lock the user");
        Check(await Users.UpdateSecurityStampAsync(user), "Cannot end the user's sessions");
        return await RevokeGrantsAsync(user.Id, ct);
    }

    /// <summary>Forgets the user's authenticator: they enrol a new one at their next sign-in.</summary>
    public async Task ResetMfaAsync(string userName, CancellationToken ct)
    {
        var user = await FindUserAsync(userName);
        Check(await Users.SetTwoFactorEnabledAsync(user, false), "Cannot reset the second factor");
        Check(await Users.ResetAuthenticatorKeyAsync(user), "Cannot reset the authenticator key");
        Check(await Users.UpdateSecurityStampAsync(user), "Cannot end the user's sessions");
        await RevokeGrantsAsync(user.Id, ct);
    }

    /// <summary>Gives the user an authenticator key now (the demo prints it), instead of at their first sign-in.</summary>
    public async Task<string> EnrolAuthenticatorAsync(string userName)
    {
        var user = await FindUserAsync(userName);
        Check(await Users.ResetAuthenticatorKeyAsync(user), "Cannot create an authenticator key");
        Check(await Users.SetTwoFactorEnabledAsync(user, true), "Cannot enable the second factor");
        return (await Users.GetAuthenticatorKeyAsync(user))!;
    }

    private async Task<int> RevokeGrantsAsync(string subject, CancellationToken ct)
    {
        var revoked = 0;
        await foreach (var grant in Grants.FindBySubjectAsync(subject, ct))
        {
            if (await Grants.TryRevokeAsync(grant, ct))
            {
                revoked++;
            }
        }
        return revoked;
    }

    private static void Check(IdentityResult result, string what)
    {
        if (!result.Succeeded)
        {
            throw new NodeException($"{what}: {string.Join(" ", result.Errors.Select(e => e.Description))}");
        }
    }

    // ------------------------------------------------------------------ clients

    /// <summary>Registers a client; returns the generated secret of a confidential client without keys (shown once).</summary>
    public async Task<string?> AddClientAsync(string clientId, ClientKind kind, IReadOnlyList<string> redirectUris, string scopes, string? jwks, string? displayName, CancellationToken ct)
    {
        if (!SmartScopes.TryParse(scopes, out var parsed, out var error))
        {
            throw new NodeException(error);
        }
        if (await Apps.FindByClientIdAsync(clientId, ct) is not null)
        {
            throw new NodeException($"A client '{clientId}' is already registered (ward clients remove, then add).");
        }
        var descriptor = new OpenIddictApplicationDescriptor
        {
            ClientId = clientId,
            DisplayName = displayName ?? clientId,
            ClientType = kind == ClientKind.Public ? ClientTypes.Public : ClientTypes.Confidential,
            ConsentType = ConsentTypes.Explicit,
        };
        foreach (var scope in parsed.All)
        {
            descriptor.Permissions.Add(Permissions.Prefixes.Scope + scope);
        }
        descriptor.Permissions.Add(Permissions.Endpoints.Token);
        descriptor.Permissions.Add(Permissions.Endpoints.Revocation);
        string? secret = null;
        if (kind == ClientKind.Backend)
        {
            if (jwks is null)
            {
                throw new NodeException("A backend client authenticates with a signed JWT (SMART Backend Services): give its public keys with --jwks FILE.");
            }
            if (parsed.Resources.Any(r => r.Context != "system") || parsed.All.Count != parsed.Resources.Count)
            {
                throw new NodeException("A backend client is registered for system/ scopes only (for example system/*.rs).");
            }
            descriptor.Permissions.Add(Permissions.GrantTypes.ClientCredentials);
        }
        else
        {
            if (redirectUris.Count == 0)
            {
                throw new NodeException("An app that signs users in needs at least one --redirect-uri.");
            }
            if (parsed.Resources.Any(r => r.Context == "system"))
            {
                throw new NodeException("system/ scopes are for backend clients (--kind backend).");
            }
            foreach (var uri in redirectUris)
            {
                if (!Uri.TryCreate(uri, UriKind.Absolute, out var u) || u.Fragment.Length > 0 || u.Scheme is not ("https" or "http")
                    || u.Scheme == "http" && !u.IsLoopback)
                {
                    throw new NodeException($"'{uri}' is not an acceptable redirect URI: an absolute https:// URL without fragment (http:// only on loopback).");
                }
                descriptor.RedirectUris.Add(u);
            }
            descriptor.Permissions.Add(Permissions.Endpoints.Authorization);
            descriptor.Permissions.Add(Permissions.GrantTypes.AuthorizationCode);
            descriptor.Permissions.Add(Permissions.GrantTypes.RefreshToken);
            descriptor.Permissions.Add(Permissions.ResponseTypes.Code);
            descriptor.Requirements.Add(Requirements.Features.ProofKeyForCodeExchange);
            if (kind == ClientKind.Confidential && jwks is null)
            {
                secret = Base64UrlEncoder.Encode(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
                descriptor.ClientSecret = secret;
            }
        }
        if (jwks is not null)
        {
            if (kind == ClientKind.Public)
            {
                throw new NodeException("A public client has no credentials: --jwks is for confidential and backend clients.");
            }
            descriptor.JsonWebKeySet = ParseKeySet(jwks);
        }
        await Apps.CreateAsync(descriptor, ct);
        return secret;
    }

    private static JsonWebKeySet ParseKeySet(string json)
    {
        JsonWebKeySet set;
        try
        {
            set = JsonWebKeySet.Create(json);
        }
        catch (Exception e) when (e is ArgumentException or System.Text.Json.JsonException)
        {
            throw new NodeException($"The JWKS is not a JSON Web Key Set: {e.Message}");
        }
        if (set.Keys.Count == 0)
        {
            throw new NodeException("The JWKS holds no key.");
        }
        foreach (var key in set.Keys)
        {
            if (key.Kty is not ("RSA" or "EC"))
            {
                throw new NodeException($"JWKS key {key.Kid}: only RSA and EC keys sign SMART client assertions (RS384, ES384).");
            }
            if (key.HasPrivateKey)
            {
                throw new NodeException($"JWKS key {key.Kid} includes its private part: register the public keys only, and keep the private key with the client.");
            }
        }
        return set;
    }

    public async Task<List<ClientSummary>> ListClientsAsync(CancellationToken ct)
    {
        var list = new List<ClientSummary>();
        await foreach (var app in Apps.ListAsync(null, null, ct))
        {
            var permissions = await Apps.GetPermissionsAsync(app, ct);
            var kind = permissions.Contains(Permissions.GrantTypes.ClientCredentials) ? "backend" : await Apps.GetClientTypeAsync(app, ct) ?? "";
            var scopes = await SmartEndpoints.RegisteredScopesAsync(Apps, app, ct);
            list.Add(new ClientSummary((await Apps.GetClientIdAsync(app, ct))!, kind, await Apps.GetDisplayNameAsync(app, ct),
                (await Apps.GetRedirectUrisAsync(app, ct)).ToList(), scopes.ToString()));
        }
        return list.OrderBy(c => c.ClientId, StringComparer.Ordinal).ToList();
    }

    /// <summary>Removes a client, with every grant and token it holds.</summary>
    public async Task RemoveClientAsync(string clientId, CancellationToken ct)
    {
        var app = await Apps.FindByClientIdAsync(clientId, ct) ?? throw new NodeException($"No client '{clientId}' on this node (ward clients list).");
        await Apps.DeleteAsync(app, ct);
    }

    // ------------------------------------------------------------------ tokens

    public const int MaxTokenMinutes = 60;

    /// <summary>
    /// A short-lived access token for a user or a registered client, made with the node's key (<c>ward token</c>) and
    /// bound to a grant of its own (an OpenIddict authorization of that subject and client), so that disabling the user
    /// or removing the client revokes it like any token of the authorization server.
    /// </summary>
    public async Task<string> IssueTokenAsync(string? userName, string? clientId, string scope, int minutes, CancellationToken ct)
    {
        if (minutes is < 1 or > MaxTokenMinutes)
        {
            throw new NodeException($"--minutes must be between 1 and {MaxTokenMinutes}.");
        }
        if (!SmartScopes.TryParse(scope, out var scopes, out var error))
        {
            throw new NodeException(error);
        }
        if (scopes.Resources.Count == 0)
        {
            throw new NodeException("Ask for at least one resource scope, such as user/*.rs or system/Patient.rs.");
        }
        AccessGrant grant;
        string? applicationId = null;
        if (userName is not null)
        {
            var user = await FindUserAsync(userName);
            if (user.Disabled || await Users.IsLockedOutAsync(user))
            {
                throw new NodeException($"User '{userName}' is disabled or locked out.");
            }
            if (scopes.Resources.Any(r => r.Context == "system"))
            {
                throw new NodeException("system/ scopes are for backend clients (--client); a user's token takes user/ (staff) or patient/ (patients) scopes.");
            }
            string? patient = null;
            if (user.Role == Roles.Patient)
            {
                if (scopes.Resources.Any(r => r.Context != "patient"))
                {
                    throw new NodeException("A patient's token takes patient/ scopes (their own record).");
                }
                patient = user.FhirUser!["Patient/".Length..];
            }
            else if (scopes.NeedsPatient)
            {
                throw new NodeException("A staff token takes user/ scopes; patient/ scopes need a patient chosen at sign-in (SMART launch).");
            }
            grant = new AccessGrant(user.Id, null, user.Role, scopes, patient, user.FhirUser);
        }
        else
        {
            var app = await Apps.FindByClientIdAsync(clientId!, ct) ?? throw new NodeException($"No client '{clientId}' on this node (ward clients list).");
            if (!scopes.IsWithin(await SmartEndpoints.RegisteredScopesAsync(Apps, app, ct), out var outside))
            {
                throw new NodeException($"Client '{clientId}' is not registered for the scope '{outside}'.");
            }
            if (scopes.Resources.Any(r => r.Context != "system"))
            {
                throw new NodeException("A client's own token takes system/ scopes.");
            }
            grant = new AccessGrant(clientId!, clientId, Roles.Service, scopes, null, null);
            applicationId = await Apps.GetIdAsync(app, ct);
        }
        var clock = _scope.ServiceProvider.GetRequiredService<TimeProvider>();
        var descriptor = new OpenIddictAuthorizationDescriptor
        {
            Subject = grant.Subject,
            ApplicationId = applicationId,
            CreationDate = clock.GetUtcNow(),
            Status = Statuses.Valid,
            Type = AuthorizationTypes.AdHoc,
        };
        descriptor.Scopes.UnionWith(scopes.All);
        var bound = await Grants.CreateAsync(descriptor, ct);
        var tokens = new AccessTokens(OidcKeys.Load(_config), clock);
        return tokens.Issue(grant, TimeSpan.FromMinutes(minutes), "urn:ward:" + _config.Name, grantId: await Grants.GetIdAsync(bound, ct));
    }

    public async ValueTask DisposeAsync()
    {
        await _scope.DisposeAsync();
        await _services.DisposeAsync();
        _store.Dispose();
    }
}
