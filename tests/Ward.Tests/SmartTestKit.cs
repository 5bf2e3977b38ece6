using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.IdentityModel.Tokens;
using Ward.Server.Identity;

namespace Ward.Tests;

/// <summary>
/// A user agent for the sign-in pages and the OAuth endpoints, over real HTTP: cookies, manual redirects, form posts
/// with the hidden fields the server rendered. What a browser does, minus the rendering (the Playwright test has that).
/// </summary>
internal sealed partial class SmartAgent : IDisposable
{
    public const string RedirectUri = "http://127.0.0.1:9/callback";
    private readonly HttpClient _http;
    private readonly TestNode _node;

    public SmartAgent(TestNode node)
    {
        _node = node;
        _http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = true, CookieContainer = new CookieContainer() })
        {
            BaseAddress = new Uri(node.Origin),
        };
    }

    public string Verifier { get; } = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(32));
    public string Challenge => Base64UrlEncoder.Encode(SHA256.HashData(Encoding.ASCII.GetBytes(Verifier)));

    public string AuthorizeUrl(string clientId, string scope, string state = "st-123", string? method = "S256", string? redirect = RedirectUri, string? challenge = null) =>
        "/connect/authorize?" + string.Join('&', new Dictionary<string, string?>
        {
            ["response_type"] = "code",
            ["client_id"] = clientId,
            ["redirect_uri"] = redirect,
            ["scope"] = scope,
            ["state"] = state,
            ["aud"] = _node.BaseUrl,
            ["code_challenge"] = challenge ?? (method == "plain" ? Verifier : Challenge),
            ["code_challenge_method"] = method,
        }.Where(p => p.Value is not null).Select(p => $"{p.Key}={Uri.EscapeDataString(p.Value!)}"));

    public Task<HttpResponseMessage> GetAsync(string url) => _http.GetAsync(url);

    /// <summary>Posts a form of the given fields (with this agent's cookies).</summary>
    public Task<HttpResponseMessage> PostAsync(string url, params (string Name, string Value)[] fields) =>
        _http.PostAsync(url, new FormUrlEncodedContent(fields.Select(f => new KeyValuePair<string, string>(f.Name, f.Value))));

    /// <summary>Posts the first form of a page with its hidden fields, plus the given ones.</summary>
    public async Task<HttpResponseMessage> SubmitAsync(HttpResponseMessage page, params (string Name, string Value)[] fields)
    {
        var html = await page.Content.ReadAsStringAsync();
        var action = FormAction().Match(html) is { Success: true } m ? WebUtility.HtmlDecode(m.Groups[1].Value) : throw new InvalidOperationException("No form on the page:\n" + html);
        var values = Hidden().Matches(html).Select(h => new KeyValuePair<string, string>(WebUtility.HtmlDecode(h.Groups[1].Value), WebUtility.HtmlDecode(h.Groups[2].Value))).ToList();
        values.AddRange(fields.Select(f => new KeyValuePair<string, string>(f.Name, f.Value)));
        return await _http.PostAsync(action, new FormUrlEncodedContent(values));
    }

    /// <summary>Follows redirects within the node; stops at a redirect to elsewhere (the app's callback) or a page.</summary>
    public async Task<HttpResponseMessage> FollowAsync(HttpResponseMessage response)
    {
        while (response.StatusCode is HttpStatusCode.Redirect or HttpStatusCode.Found or HttpStatusCode.SeeOther && response.Headers.Location is { } location)
        {
            var target = location.IsAbsoluteUri ? location : new Uri(new Uri(_node.Origin), location);
            if (target.GetLeftPart(UriPartial.Authority) != _node.Origin)
            {
                return response;
            }
            response = await _http.GetAsync(target);
        }
        return response;
    }

    /// <summary>Signs in with password and TOTP (enrolling on first sign-in); returns the page after the second factor.</summary>
    public async Task<HttpResponseMessage> SignInAsync(HttpResponseMessage loginPage, string user, string password, Func<string?, string> code)
    {
        var afterPassword = await FollowAsync(await SubmitAsync(loginPage, ("username", user), ("password", password)));
        var html = await afterPassword.Content.ReadAsStringAsync();
        if (!html.Contains("name=\"code\"", StringComparison.Ordinal))
        {
            return afterPassword;
        }
        var secret = Secret().Match(html) is { Success: true } s ? s.Groups[1].Value.Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant() : null;
        return await FollowAsync(await SubmitAsync(afterPassword, ("code", code(secret))));
    }

    public static string TotpNow(string base32) => new OtpNet.Totp(OtpNet.Base32Encoding.ToBytes(base32)).ComputeTotp();

    public async Task<JsonElement> TokenAsync(params (string Name, string Value)[] form)
    {
        var response = await _http.PostAsync("/connect/token", new FormUrlEncodedContent(form.Select(f => new KeyValuePair<string, string>(f.Name, f.Value))));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
        return json;
    }

    public static string? Query(Uri uri, string name) =>
        uri.Query.TrimStart('?').Split('&').Select(p => p.Split('=', 2)).FirstOrDefault(p => p[0] == name) is { } kv ? Uri.UnescapeDataString(kv[1]) : null;

    public static HttpRequestMessage Get(string url, string token)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return request;
    }

    public void Dispose() => _http.Dispose();

    [GeneratedRegex("<form[^>]*action=\"([^\"]+)\"")]
    private static partial Regex FormAction();

    [GeneratedRegex("<input type=\"hidden\" name=\"([^\"]*)\" value=\"([^\"]*)\">")]
    private static partial Regex Hidden();

    [GeneratedRegex("<span class=\"secret\">([^<]+)</span>")]
    private static partial Regex Secret();
}

/// <summary>Users and clients made through the same code as <c>ward users</c> and <c>ward clients</c>.</summary>
internal static class SmartSetup
{
    public const string Password = "correct horse battery staple";
    public const string AppScopes = "openid fhirUser launch/patient offline_access patient/*.rs patient/*.read user/*.rs patient/Observation.cruds";

    public static async Task<string> UserAsync(TestNode node, string role, string? fhirUser = null)
    {
        var name = role + "-" + Guid.NewGuid().ToString("N")[..8];
        await using var accounts = Accounts.Open(node.Config);
        await accounts.AddUserAsync(name, role, fhirUser, Password, CancellationToken.None);
        return name;
    }

    public static async Task<string> PublicClientAsync(TestNode node, string scopes = AppScopes, string redirect = SmartAgent.RedirectUri)
    {
        var id = "app-" + Guid.NewGuid().ToString("N")[..8];
        await using var accounts = Accounts.Open(node.Config);
        await accounts.AddClientAsync(id, ClientKind.Public, [redirect], scopes, null, "Test app", CancellationToken.None);
        return id;
    }
}
