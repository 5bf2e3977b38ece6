using System.Collections.Immutable;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Identity;
using Microsoft.AspNetCore.Routing;
using Microsoft.IdentityModel.Tokens;
using OpenIddict.Abstractions;
using OpenIddict.Server.AspNetCore;
using Ward.Core.Access;
using Ward.Core.Fhir;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

/// <summary>
/// SMART App Launch 2 and Backend Services on top of OpenIddict: the discovery document, the authorization endpoint
/// (sign-in, patient picker for staff, approval) and the token endpoint (authorization code, refresh token, client
/// credentials). OpenIddict validates the protocol (clients, redirect URIs, PKCE S256, codes, refresh token rotation
/// and reuse); these handlers decide who gets which scopes and which patient.
/// </summary>
internal static class SmartEndpoints
{
    /// <summary>Access tokens of backend services live at most this long (SMART Backend Services).</summary>
    public static readonly TimeSpan BackendTokenLifetime = TimeSpan.FromMinutes(5);

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/.well-known/smart-configuration", Configuration).RequireCors(WardServer.BrowserApps);
        app.MapGet("/fhir/.well-known/smart-configuration", Configuration).RequireCors(WardServer.BrowserApps);
        app.MapMethods("/connect/authorize", ["GET", "POST"], AuthorizeAsync).DisableAntiforgery();
        app.MapPost("/connect/token", TokenAsync).RequireRateLimiting(IdentitySetup.TokenLimit).RequireCors(WardServer.BrowserApps).DisableAntiforgery();
    }

    public static string Origin(HttpRequest request) => $"{request.Scheme}://{request.Host}{request.PathBase}";

    private static IResult Configuration(HttpContext http)
    {
        var origin = Origin(http.Request);
        var document = new SmartConfiguration(
            Issuer: origin + "/",
            JwksUri: origin + "/.well-known/jwks",
            AuthorizationEndpoint: origin + "/connect/authorize",
            TokenEndpoint: origin + "/connect/token",
            RevocationEndpoint: origin + "/connect/revoke",
            TokenEndpointAuthMethodsSupported: ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            TokenEndpointAuthSigningAlgValuesSupported: ["RS384", "ES384"],
            GrantTypesSupported: [GrantTypes.AuthorizationCode, GrantTypes.RefreshToken, GrantTypes.ClientCredentials],
            ScopesSupported: ["openid", "fhirUser", "launch/patient", "offline_access", "online_access", "patient/*.rs", "patient/*.read", "user/*.rs", "user/*.read", "user/*.cruds", "system/*.rs", "system/*.read"],
            ResponseTypesSupported: ["code"],
            CodeChallengeMethodsSupported: ["S256"],
            Capabilities: ["launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
                "context-standalone-patient", "permission-offline", "permission-online", "permission-patient", "permission-user",
                "permission-v1", "permission-v2", "sso-openid-connect", "authorize-post"]);
        return Results.Json(document, SmartJson.Default.SmartConfiguration);
    }

    private static IResult Error(string error, string description) =>
        Results.Forbid(new AuthenticationProperties(new Dictionary<string, string?>
        {
            [OpenIddictServerAspNetCoreConstants.Properties.Error] = error,
            [OpenIddictServerAspNetCoreConstants.Properties.ErrorDescription] = description,
        }), [OpenIddictServerAspNetCoreDefaults.AuthenticationScheme]);

    /// <summary>The scopes a client was registered with (<c>ward clients add --scopes</c>).</summary>
    public static async Task<SmartScopes> RegisteredScopesAsync(IOpenIddictApplicationManager apps, object app, CancellationToken ct)
    {
        var permissions = await apps.GetPermissionsAsync(app, ct);
        return SmartScopes.Parse(string.Join(' ', permissions.Where(p => p.StartsWith(Permissions.Prefixes.Scope, StringComparison.Ordinal))
            .Select(p => p[Permissions.Prefixes.Scope.Length..])));
    }

    private static async Task<IResult> AuthorizeAsync(HttpContext http, IOpenIddictApplicationManager apps, UserManager<WardUser> users,
        IAntiforgery csrf, FhirEngine engine)
    {
        var request = http.GetOpenIddictServerRequest() ?? throw new InvalidOperationException("Not an OpenID Connect request.");
        var ct = http.RequestAborted;
        var client = await apps.FindByClientIdAsync(request.ClientId!, ct) ?? throw new InvalidOperationException("OpenIddict let an unknown client through.");
        var fhirBase = Origin(http.Request) + "/fhir";
        if ((string?)request["aud"] is not { } aud)
        {
            return Error(Errors.InvalidRequest, $"The aud parameter is required: the FHIR base URL of this server ({fhirBase}).");
        }
        if (aud.TrimEnd('/') != fhirBase)
        {
            return Error(Errors.InvalidRequest, $"aud names {aud}, but this server's FHIR base URL is {fhirBase}.");
        }
        if (!SmartScopes.TryParse(request.Scope, out var scopes, out var invalid))
        {
            return Error(Errors.InvalidScope, invalid);
        }
        if (!scopes.IsWithin(await RegisteredScopesAsync(apps, client, ct), out var outside))
        {
            return Error(Errors.InvalidScope, $"The client is not registered for the scope '{outside}'.");
        }
        if (scopes.Resources.Any(r => r.Context == "system"))
        {
            return Error(Errors.InvalidScope, "system/ scopes are for backend services (client credentials), not for a user's sign-in.");
        }

        var session = await http.AuthenticateAsync(IdentityConstants.ApplicationScheme);
        var user = session.Succeeded ? await users.GetUserAsync(session.Principal!) : null;
        if (user is null || user.Disabled || request.HasPromptValue(PromptValues.Login) && http.Request.Method == "GET")
        {
            if (request.HasPromptValue(PromptValues.None))
            {
                return Error(Errors.LoginRequired, "The user is not signed in.");
            }
            await http.SignOutAsync(IdentityConstants.ApplicationScheme);
            var query = http.Request.HasFormContentType
                ? QueryString.Create(request.GetParameters().Where(p => p.Key != PromptValues.Login).Select(p => KeyValuePair.Create(p.Key, (string?)p.Value)))
                : http.Request.QueryString;
            // After signing in, come back without prompt=login (or it would loop).
            var back = http.Request.Path + RemovePromptLogin(query.ToString());
            return Results.Redirect("/account/login?returnUrl=" + Uri.EscapeDataString(back));
        }
        IdentityAudit.Note(http, new AuditParty(user.Id, user.Role, user.FhirUser, request.ClientId, null, null));
        if (Roles.IsStaff(user.Role) && !user.TwoFactorEnabled)
        {
            return Error(Errors.AccessDenied, "Staff accounts must sign in with a second factor.");
        }
        if (user.Role == Roles.Service)
        {
            return Error(Errors.AccessDenied, "Service accounts cannot sign in interactively.");
        }
        if (user.Role == Roles.Patient && scopes.Resources.Any(r => r.Context == "user"))
        {
            return Error(Errors.InvalidScope, "A patient signs in with patient/ scopes (their own record), not user/ scopes.");
        }

        var form = http.Request.HasFormContentType ? await http.Request.ReadFormAsync(ct) : null;
        var wantsPatient = scopes.NeedsPatient || scopes.Has("launch/patient");
        string? patient = null;
        if (wantsPatient && user.Role == Roles.Patient)
        {
            if (user.FhirUser is not { } me || !me.StartsWith("Patient/", StringComparison.Ordinal))
            {
                return Error(Errors.AccessDenied, "This patient account is not linked to a Patient record.");
            }
            patient = me["Patient/".Length..];
        }
        var decision = form?["decision"].ToString();
        if (form is null || string.IsNullOrEmpty(decision) || !await csrf.IsRequestValidAsync(http))
        {
            return await ApprovalPage(http, csrf, engine, request, client, apps, user, scopes, wantsPatient && patient is null, form?["search"].ToString(), null);
        }
        if (decision != "allow")
        {
            return Error(Errors.AccessDenied, "The user declined to give the application access.");
        }
        if (wantsPatient && patient is null)
        {
            patient = form["patient"].ToString();
            if (!Ward.Core.Search.ReferenceParser.IsValidId(patient) || !await PatientExistsAsync(engine, user, fhirBase, patient, ct))
            {
                return await ApprovalPage(http, csrf, engine, request, client, apps, user, scopes, true, form["search"].ToString(), "Choose the patient whose record the application will open.");
            }
        }

        var identity = new ClaimsIdentity(TokenValidationParameters.DefaultAuthenticationType, Claims.Name, Claims.Role);
        identity.SetClaim(Claims.Subject, user.Id).SetClaim(Claims.PreferredUsername, user.UserName).SetClaim(AccessTokens.Claims.Role, user.Role);
        if (user.FhirUser is { } fhirUser)
        {
            identity.SetClaim(AccessTokens.Claims.User, fhirUser);
            if (scopes.Has("fhirUser"))
            {
                identity.SetClaim(AccessTokens.Claims.FhirUser, $"{fhirBase}/{fhirUser}");
            }
        }
        if (patient is not null)
        {
            identity.SetClaim(AccessTokens.Claims.Patient, patient);
        }
        IdentityAudit.Note(http, new AuditParty(user.Id, user.Role, user.FhirUser, request.ClientId, patient, null));
        identity.SetScopes(scopes.All);
        identity.SetDestinations(ClaimDestinations);
        return Results.SignIn(new ClaimsPrincipal(identity), properties: null, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
    }

    private static string RemovePromptLogin(string query) =>
        string.Join('&', query.TrimStart('?').Split('&').Where(p => p != "prompt=login")) is { Length: > 0 } q ? "?" + q : "";

    private static IEnumerable<string> ClaimDestinations(Claim claim) => claim.Type switch
    {
        Claims.Subject or AccessTokens.Claims.FhirUser => [Destinations.AccessToken, Destinations.IdentityToken],
        Claims.PreferredUsername => [Destinations.IdentityToken],
        _ => [Destinations.AccessToken],
    };

    /// <summary>What staff may see while choosing a patient: reads as the user, through the same engine and checks.</summary>
    private static AccessGrant PickerGrant(WardUser user) => new(user.Id, null, user.Role, SmartScopes.Parse("user/Patient.rs"), null, user.FhirUser);

    private static async Task<bool> PatientExistsAsync(FhirEngine engine, WardUser user, string fhirBase, string id, CancellationToken ct)
    {
        try
        {
            var response = await engine.HandleAsync(new FhirRequest { Method = "GET", Path = "Patient/" + id, BaseUrl = fhirBase, Caller = PickerGrant(user) }, ct);
            return response.Status == 200;
        }
        catch (FhirException)
        {
            return false;
        }
    }

    private static async Task<IResult> ApprovalPage(HttpContext http, IAntiforgery csrf, FhirEngine engine, OpenIddictRequest request, object client,
        IOpenIddictApplicationManager apps, WardUser user, SmartScopes scopes, bool pickPatient, string? search, string? error)
    {
        var name = await apps.GetDisplayNameAsync(client, http.RequestAborted) ?? request.ClientId;
        var hidden = new StringBuilder();
        foreach (var (key, value) in request.GetParameters())
        {
            if (key is not ("decision" or "patient" or "search" or "__csrf"))
            {
                hidden.Append(Html.Hidden(key, (string?)value));
            }
        }
        var picker = "";
        if (pickPatient)
        {
            var rows = new StringBuilder();
            if (!string.IsNullOrWhiteSpace(search))
            {
                foreach (var (id, label) in await FindPatientsAsync(engine, user, Origin(http.Request) + "/fhir", search, http.RequestAborted))
                {
                    rows.Append($"""<div><input type="radio" name="patient" id="p-{Html.E(id)}" value="{Html.E(id)}"> <label for="p-{Html.E(id)}" style="display:inline">{Html.E(label)}</label></div>""");
                }
                if (rows.Length == 0)
                {
                    rows.Append("<p>No patient found with that name.</p>");
                }
            }
            picker = $"""
                <fieldset><legend>Patient</legend>
                <label for="search">Family or given name (start of)</label>
                <input type="search" id="search" name="search" value="{Html.E(search)}">
                <button type="submit" name="decision" value="" class="secondary">Find</button>
                {rows}
                </fieldset>
                """;
        }
        var list = string.Join("", scopes.All.Select(s => $"<li>{Html.E(s)}</li>"));
        return Html.Page("Allow access?", $"""
            {Html.Alert(error)}
            <p>Signed in as <strong>{Html.E(user.UserName)}</strong> ({Html.E(user.Role)}).</p>
            <p>The application <strong>{Html.E(name)}</strong> asks for:</p>
            <ul class="scopes">{list}</ul>
            <form method="post" action="/connect/authorize">
            {Html.Csrf(csrf, http)}{hidden}
            {picker}
            <button type="submit" name="decision" value="allow">Allow</button>
            <button type="submit" name="decision" value="deny" class="secondary">Deny</button>
            </form>
            """);
    }

    private static async Task<List<(string Id, string Label)>> FindPatientsAsync(FhirEngine engine, WardUser user, string fhirBase, string search, CancellationToken ct)
    {
        var found = new List<(string, string)>();
        var response = await engine.HandleAsync(new FhirRequest
        {
            Method = "GET",
            Path = "Patient",
            Query = [new("name", search.Trim()), new("_count", "20")],
            BaseUrl = fhirBase,
            Caller = PickerGrant(user),
        }, ct);
        using var bundle = JsonDocument.Parse(response.Body);
        if (!bundle.RootElement.TryGetProperty("entry", out var entries))
        {
            return found;
        }
        foreach (var entry in entries.EnumerateArray())
        {
            if (!entry.TryGetProperty("resource", out var resource) || !resource.TryGetProperty("id", out var idElement)
                || resource.GetProperty("resourceType").GetString() != "Patient")
            {
                continue;
            }
            var id = idElement.GetString()!;
            var label = new StringBuilder();
            if (resource.TryGetProperty("name", out var names) && names.GetArrayLength() > 0)
            {
                var n = names[0];
                if (n.TryGetProperty("given", out var given))
                {
                    label.AppendJoin(' ', given.EnumerateArray().Select(g => g.GetString())).Append(' ');
                }
                if (n.TryGetProperty("family", out var family))
                {
                    label.Append(family.GetString());
                }
            }
            if (resource.TryGetProperty("birthDate", out var born))
            {
                label.Append(", born ").Append(born.GetString());
            }
            found.Add((id, label.ToString().Trim()));
        }
        return found;
    }

    private static async Task<IResult> TokenAsync(HttpContext http, IOpenIddictApplicationManager apps, UserManager<WardUser> users)
    {
        var request = http.GetOpenIddictServerRequest() ?? throw new InvalidOperationException("Not an OpenID Connect request.");
        var ct = http.RequestAborted;
        if (request.IsClientCredentialsGrantType())
        {
            var client = await apps.FindByClientIdAsync(request.ClientId!, ct) ?? throw new InvalidOperationException("OpenIddict let an unknown client through.");
            IdentityAudit.Note(http, new AuditParty(request.ClientId, Roles.Service, null, request.ClientId, null, null));
            if (!SmartScopes.TryParse(request.Scope, out var scopes, out var invalid))
            {
                return Error(Errors.InvalidScope, invalid);
            }
            if (scopes.Resources.Count == 0 || scopes.Resources.Any(r => r.Context != "system") || scopes.All.Count != scopes.Resources.Count)
            {
                return Error(Errors.InvalidScope, "A backend service asks for system/ scopes only (for example system/*.rs).");
            }
            if (!scopes.IsWithin(await RegisteredScopesAsync(apps, client, ct), out var outside))
            {
                return Error(Errors.InvalidScope, $"The client is not registered for the scope '{outside}'.");
            }
            var identity = new ClaimsIdentity(TokenValidationParameters.DefaultAuthenticationType, Claims.Name, Claims.Role);
            identity.SetClaim(Claims.Subject, request.ClientId).SetClaim(AccessTokens.Claims.Role, Roles.Service);
            identity.SetScopes(scopes.All);
            identity.SetDestinations(_ => [Destinations.AccessToken]);
            var principal = new ClaimsPrincipal(identity);
            principal.SetAccessTokenLifetime(BackendTokenLifetime);
            // SMART Backend Services: the token response always names the granted scopes.
            var granted = new AuthenticationProperties();
            granted.Parameters[Parameters.Scope] = scopes.ToString();
            return Results.SignIn(principal, granted, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
        }
        if (request.IsAuthorizationCodeGrantType() || request.IsRefreshTokenGrantType())
        {
            var result = await http.AuthenticateAsync(OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
            var user = result.Principal?.GetClaim(Claims.Subject) is { } sub ? await users.FindByIdAsync(sub) : null;
            if (result.Principal is { } granted)
            {
                IdentityAudit.Note(http, IdentityAudit.Grant(granted) with { Role = user?.Role, FhirUser = user?.FhirUser, ClientId = request.ClientId });
            }
            if (user is null || user.Disabled || await users.IsLockedOutAsync(user))
            {
                return Error(Errors.InvalidGrant, "The user of this grant can no longer sign in.");
            }
            var identity = new ClaimsIdentity(result.Principal!.Claims, TokenValidationParameters.DefaultAuthenticationType, Claims.Name, Claims.Role);
            identity.SetClaim(AccessTokens.Claims.Role, user.Role);
            identity.SetDestinations(ClaimDestinations);
            var properties = new AuthenticationProperties();
            if (identity.GetClaim(AccessTokens.Claims.Patient) is { } patient)
            {
                // SMART: the patient in context is a parameter of the token response.
                properties.Parameters[AccessTokens.Claims.Patient] = patient;
            }
            return Results.SignIn(new ClaimsPrincipal(identity), properties, OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
        }
        return Error(Errors.UnsupportedGrantType, "This node issues tokens for authorization_code, refresh_token and client_credentials.");
    }
}

internal sealed record SmartConfiguration(
    string Issuer, string JwksUri, string AuthorizationEndpoint, string TokenEndpoint, string RevocationEndpoint,
    string[] TokenEndpointAuthMethodsSupported, string[] TokenEndpointAuthSigningAlgValuesSupported, string[] GrantTypesSupported,
    string[] ScopesSupported, string[] ResponseTypesSupported, string[] CodeChallengeMethodsSupported, string[] Capabilities);

[System.Text.Json.Serialization.JsonSerializable(typeof(SmartConfiguration))]
[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.SnakeCaseLower)]
internal sealed partial class SmartJson : System.Text.Json.Serialization.JsonSerializerContext;
