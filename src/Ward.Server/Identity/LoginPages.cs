using System.Security.Claims;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Identity;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Ward.Core.Access;
using Ward.Core.Audit;

namespace Ward.Server.Identity;

/// <summary>
/// Sign-in: password, then for staff (and patients who chose it) a TOTP code; staff without an authenticator enrol at
/// their first sign-in and cannot get past this page until they have. Five failures (password or code) lock the account
/// for 15 minutes. Messages never tell whether a user name exists. Every step is audited (sign-in success and failure,
/// second factor, sign-out; an account locked is also a security alert); when the audit log cannot be written the page
/// answers 503 and signs nobody in.
/// </summary>
internal static partial class LoginPages
{
    private const string Failed = "The user name or password is not right.";

    public static void Map(IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("/account").AddEndpointFilter(async (context, next) =>
        {
            try
            {
                return await next(context);
            }
            catch (AuditUnavailableException e)
            {
                // No session leaves without its trace: drop any cookie this request set.
                context.HttpContext.Response.Headers.Remove("Set-Cookie");
                return Html.Page("Try again in a moment", Html.Alert(e.Message), StatusCodes.Status503ServiceUnavailable);
            }
        });
        pages.MapGet("/login", (HttpContext http, IAntiforgery csrf, string? returnUrl) => LoginForm(http, csrf, returnUrl, null));
        pages.MapPost("/login", LoginAsync).RequireRateLimiting(IdentitySetup.LoginLimit).DisableAntiforgery();
        pages.MapGet("/mfa", MfaFormAsync);
        pages.MapPost("/mfa", MfaAsync).RequireRateLimiting(IdentitySetup.LoginLimit).DisableAntiforgery();
        pages.MapPost("/logout", LogoutAsync).DisableAntiforgery();
    }

    private static IResult LoginForm(HttpContext http, IAntiforgery csrf, string? returnUrl, string? error, int status = 200) =>
        Html.Page("Sign in to Ward", $"""
            {Html.Alert(error)}
            <form method="post" action="/account/login">
            {Html.Csrf(csrf, http)}{Html.Hidden("returnUrl", Html.SafeReturn(returnUrl))}
            <label for="username">User name</label>
            <input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus>
            <label for="password">Password</label>
            <input type="password" id="password" name="password" autocomplete="current-password" required>
            <button type="submit">Sign in</button>
            </form>
            """, status);

    /// <summary>
    /// Records a sign-in step in the audit log (the account by its id; an unknown name is not recorded, it may be a
    /// mistyped password), and a security alert when this very step locked the account.
    /// </summary>
    private static Task AuditAsync(AuditLog audit, HttpContext http, string subtype, int status, WardUser? user, bool locked = false)
    {
        AuditRecord Record(AuditKind kind, string code) => new()
        {
            Kind = kind,
            Subtype = code,
            Action = 'E',
            Status = status,
            RecordedTicks = audit.NowTicks,
            Subject = user?.Id,
            Role = user?.Role,
            FhirUser = user?.FhirUser,
            Address = http.Connection.RemoteIpAddress?.ToString(),
        };
        return audit.RecordAsync(locked ? [Record(AuditKind.Login, subtype), Record(AuditKind.SecurityAlert, "account-locked")] : [Record(AuditKind.Login, subtype)]);
    }

    private static async Task<IResult> LoginAsync(HttpContext http, IAntiforgery csrf, SignInManager<WardUser> signIn, AuditLog audit, ILogger<WardUser> log)
    {
        if (!await csrf.IsRequestValidAsync(http))
        {
            await AuditAsync(audit, http, "login", 400, null);
            return LoginForm(http, csrf, null, "The form expired. Please sign in again.", 400);
        }
        var form = await http.Request.ReadFormAsync(http.RequestAborted);
        var returnUrl = Html.SafeReturn(form["returnUrl"]);
        var user = await signIn.UserManager.FindByNameAsync(form["username"].ToString());
        if (user is null)
        {
            // Hash anyway, so that an unknown name takes as long as a known one.
            signIn.UserManager.PasswordHasher.HashPassword(new WardUser(), form["password"].ToString());
            await AuditAsync(audit, http, "login", 401, null);
            return LoginForm(http, csrf, returnUrl, Failed, 401);
        }
        var wasLocked = await signIn.UserManager.IsLockedOutAsync(user);
        var result = await signIn.CheckPasswordSignInAsync(user, form["password"].ToString(), lockoutOnFailure: true);
        var status = result.IsLockedOut ? 423 : !result.Succeeded ? 401 : user.Disabled ? 403 : 200;
        await AuditAsync(audit, http, "login", status, user, locked: result.IsLockedOut && !wasLocked);
        if (result.IsLockedOut)
        {
            LogLockedOut(log, user.Id);
            return LoginForm(http, csrf, returnUrl, "This account is locked after too many failed attempts. Try again in 15 minutes, or ask an administrator.", 423);
        }
        if (!result.Succeeded)
        {
            return LoginForm(http, csrf, returnUrl, Failed, 401);
        }
        if (user.Disabled)
        {
            return LoginForm(http, csrf, returnUrl, "This account is disabled. Ask an administrator.", 403);
        }
        if (Roles.IsStaff(user.Role) || user.TwoFactorEnabled)
        {
            // Password checked: the second step (code, or enrolment) is pending, in Identity's two-factor cookie.
            await http.SignInAsync(IdentityConstants.TwoFactorUserIdScheme,
                new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, user.Id)], IdentityConstants.TwoFactorUserIdScheme)));
            return Results.Redirect("/account/mfa?returnUrl=" + Uri.EscapeDataString(returnUrl));
        }
        await signIn.SignInAsync(user, isPersistent: false, authenticationMethod: "pwd");
        return Results.Redirect(returnUrl);
    }

    private static async Task<IResult> MfaFormAsync(HttpContext http, IAntiforgery csrf, SignInManager<WardUser> signIn, string? returnUrl) =>
        await signIn.GetTwoFactorAuthenticationUserAsync() is { } user
            ? await MfaForm(http, csrf, signIn.UserManager, user, returnUrl, null)
            : Results.Redirect("/account/login?returnUrl=" + Uri.EscapeDataString(Html.SafeReturn(returnUrl)));

    private static async Task<IResult> MfaForm(HttpContext http, IAntiforgery csrf, UserManager<WardUser> users, WardUser user, string? returnUrl, string? error, int status = 200)
    {
        var form = $"""
            <form method="post" action="/account/mfa">
            {Html.Csrf(csrf, http)}{Html.Hidden("returnUrl", Html.SafeReturn(returnUrl))}
            <label for="code">6-digit code from your authenticator app</label>
            <input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{"{6,7}"}" required autofocus>
            <button type="submit">Verify</button>
            </form>
            """;
        if (user.TwoFactorEnabled)
        {
            return Html.Page("Enter your code", Html.Alert(error) + form, status);
        }
        var key = await users.GetAuthenticatorKeyAsync(user);
        if (string.IsNullOrEmpty(key))
        {
            await users.ResetAuthenticatorKeyAsync(user);
            key = await users.GetAuthenticatorKeyAsync(user);
        }
        var uri = Totp.Uri(user.UserName!, key!);
        return Html.Page("Set up your authenticator", $"""
            {Html.Alert(error)}
            <p>Staff accounts need a second factor. Add this account to an authenticator app (any app for TOTP codes, RFC 6238),
            by scanning the code below or by typing the key, then enter the 6-digit code it shows.</p>
            <figure>{Totp.QrSvg(uri)}<figcaption>QR code of the key for your authenticator app</figcaption></figure>
            <p>Key: <span class="secret">{Html.E(Totp.Group(key!))}</span></p>
            {form}
            """, status);
    }

    private static async Task<IResult> MfaAsync(HttpContext http, IAntiforgery csrf, SignInManager<WardUser> signIn, AuditLog audit, ILogger<WardUser> log)
    {
        var user = await signIn.GetTwoFactorAuthenticationUserAsync();
        if (user is null)
        {
            return Results.Redirect("/account/login");
        }
        var form = await http.Request.ReadFormAsync(http.RequestAborted);
        var returnUrl = Html.SafeReturn(form["returnUrl"]);
        var step = user.TwoFactorEnabled ? "login-second-factor" : "second-factor-enrolment";
        if (!await csrf.IsRequestValidAsync(http))
        {
            await AuditAsync(audit, http, step, 400, user);
            return await MfaForm(http, csrf, signIn.UserManager, user, returnUrl, "The form expired. Please enter the code again.", 400);
        }
        var code = form["code"].ToString().Replace(" ", "", StringComparison.Ordinal);
        if (await signIn.UserManager.IsLockedOutAsync(user))
        {
            await AuditAsync(audit, http, step, 423, user);
            return LoginForm(http, csrf, returnUrl, "This account is locked after too many failed attempts. Try again in 15 minutes, or ask an administrator.", 423);
        }
        if (user.TwoFactorEnabled)
        {
            var result = await signIn.TwoFactorAuthenticatorSignInAsync(code, isPersistent: false, rememberClient: false);
            await AuditAsync(audit, http, step, result.Succeeded ? 200 : result.IsLockedOut ? 423 : 401, user, locked: result.IsLockedOut);
            if (result.Succeeded)
            {
                return Results.Redirect(returnUrl);
            }
            if (result.IsLockedOut)
            {
                LogLockedOut(log, user.Id);
                return LoginForm(http, csrf, returnUrl, "This account is locked after too many failed attempts. Try again in 15 minutes, or ask an administrator.", 423);
            }
            return await MfaForm(http, csrf, signIn.UserManager, user, returnUrl, "That code is not right. Codes change every 30 seconds.", 401);
        }
        if (!await signIn.UserManager.VerifyTwoFactorTokenAsync(user, signIn.Options.Tokens.AuthenticatorTokenProvider, code))
        {
            await signIn.UserManager.AccessFailedAsync(user);
            var locked = await signIn.UserManager.IsLockedOutAsync(user);
            await AuditAsync(audit, http, step, locked ? 423 : 401, user, locked);
            return await MfaForm(http, csrf, signIn.UserManager, user, returnUrl, "That code is not right. Check the time on your device; codes change every 30 seconds.", 401);
        }
        await AuditAsync(audit, http, step, 200, user);
        await signIn.UserManager.SetTwoFactorEnabledAsync(user, true);
        await signIn.UserManager.ResetAccessFailedCountAsync(user);
        await http.SignOutAsync(IdentityConstants.TwoFactorUserIdScheme);
        await signIn.SignInAsync(user, isPersistent: false, authenticationMethod: "mfa");
        LogEnrolled(log, user.Id);
        return Results.Redirect(returnUrl);
    }

    private static async Task<IResult> LogoutAsync(HttpContext http, IAntiforgery csrf, SignInManager<WardUser> signIn, AuditLog audit)
    {
        var user = await signIn.UserManager.GetUserAsync(http.User);
        if (await csrf.IsRequestValidAsync(http))
        {
            await AuditAsync(audit, http, "logout", 200, user);
            await signIn.SignOutAsync();
        }
        else
        {
            await AuditAsync(audit, http, "logout", 400, user);
        }
        return Html.Page("Signed out", "<p>You are signed out of Ward.</p>");
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Account {UserId} locked after repeated sign-in failures")]
    private static partial void LogLockedOut(ILogger logger, string userId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Account {UserId} enrolled an authenticator")]
    private static partial void LogEnrolled(ILogger logger, string userId);
}
