using System.Net;
using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Http;

namespace Ward.Server.Identity;

/// <summary>
/// The sign-in pages: plain server-rendered HTML, no script, usable with a keyboard and a screen reader (labels bound to
/// inputs, one heading per page, errors announced with role="alert"), readable at any zoom.
/// </summary>
internal static class Html
{
    private const string Style = """
        body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111;background:#fff}
        h1{font-size:1.5rem}label{display:block;margin-top:1rem;font-weight:600}
        input[type=text],input[type=password],input[type=search]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box;border:2px solid #555}
        input:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:2px}
        button{margin-top:1rem;margin-right:.5rem;padding:.5rem 1.25rem;font-size:1rem;border:2px solid #1a5fb4;background:#1a5fb4;color:#fff;cursor:pointer}
        button.secondary{background:#fff;color:#1a5fb4}
        .alert{border-left:4px solid #a51d2d;padding:.5rem 1rem;background:#fbeaea}
        code,.secret{font-family:ui-monospace,monospace;font-size:1.1rem;letter-spacing:.05em;word-break:break-all}
        ul.scopes li{font-family:ui-monospace,monospace}fieldset{border:1px solid #999;margin-top:1rem}
        """;

    public static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    public static IResult Page(string title, string body, int status = 200) =>
        Results.Content($"""
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{E(title)} · Ward</title><style>{Style}</style></head>
            <body><main><h1>{E(title)}</h1>
            {body}
            </main></body></html>
            """, "text/html; charset=utf-8", Encoding.UTF8, status);

    public static string Alert(string? message) => message is null ? "" : $"""<p class="alert" role="alert">{E(message)}</p>""";

    /// <summary>The anti-forgery field every form carries (checked on POST).</summary>
    public static string Csrf(IAntiforgery antiforgery, HttpContext http)
    {
        var tokens = antiforgery.GetAndStoreTokens(http);
        return $"""<input type="hidden" name="{E(tokens.FormFieldName)}" value="{E(tokens.RequestToken)}">""";
    }

    public static string Hidden(string name, string? value) => $"""<input type="hidden" name="{E(name)}" value="{E(value)}">""";

    /// <summary>Only a path of this server may be returned to after signing in (no open redirect).</summary>
    public static string SafeReturn(string? returnUrl) =>
        returnUrl is { Length: > 1 } r && r[0] == '/' && r[1] is not ('/' or '\\') && !r.Contains("://", StringComparison.Ordinal) ? r : "/";
}
