using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore;
using Microsoft.AspNetCore.Http;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using OpenIddict.Server.AspNetCore;
using Ward.Core.Audit;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace Ward.Server.Identity;

/// <summary>Who an identity event is about, by ids only: the user or client, their role and FHIR record, the app, the patient in context, the grant.</summary>
internal sealed record AuditParty(string? Subject, string? Role, string? FhirUser, string? ClientId, string? Patient, string? GrantId);

/// <summary>
/// The audit trail of the OAuth endpoints (authorization, token, revocation): every response they give, success or
/// refusal, becomes an AuditEvent (User Authentication, DCM 110114) before it leaves, together with the security alerts
/// (DCM 110113) raised while handling the request (refresh token reuse, authorization code replay, client assertion
/// replayed or rejected). Ids only: never a token, a secret, a code or a name. When the audit log cannot be written the
/// response is replaced by a 503 and no token leaves.
/// </summary>
internal static class IdentityAudit
{
    private const string PartyKey = "ward:audit-party";
    private const string AlertsKey = "ward:audit-alerts";
    private const int MaxIdLength = 100;

    /// <summary>The party of a token or authorization principal (its claims).</summary>
    public static AuditParty Grant(ClaimsPrincipal principal) => new(
        principal.GetClaim(Claims.Subject),
        principal.GetClaim(AccessTokens.Claims.Role),
        principal.GetClaim(AccessTokens.Claims.User),
        principal.GetPresenters().FirstOrDefault(),
        principal.GetClaim(AccessTokens.Claims.Patient),
        principal.GetAuthorizationId());

    /// <summary>Names the party of the response this transaction will give (the last one named wins).</summary>
    public static void Note(OpenIddictServerTransaction transaction, AuditParty party) => transaction.Properties[PartyKey] = party;

    /// <summary>Names the party of the response of the OpenIddict request this HTTP request carries.</summary>
    public static void Note(HttpContext http, AuditParty party)
    {
        if (http.Features.Get<OpenIddictServerAspNetCoreFeature>()?.Transaction is { } transaction)
        {
            Note(transaction, party);
        }
    }

    /// <summary>Adds a security alert to what the response will record.</summary>
    public static void Alert(OpenIddictServerTransaction transaction, string subtype, AuditParty? party)
    {
        if (!transaction.Properties.TryGetValue(AlertsKey, out var value) || value is not List<(string, AuditParty?)> alerts)
        {
            transaction.Properties[AlertsKey] = alerts = [];
        }
        alerts.Add((subtype, party));
        if (party is not null)
        {
            transaction.Properties.TryAdd(PartyKey, party);
        }
    }

    /// <summary>The HTTP status an OAuth error stands for in the audit log (what the client is told, or would be without the redirect).</summary>
    public static int Status(string? error) => error switch
    {
        null or "" => 200,
        Errors.InvalidClient or Errors.LoginRequired => 401,
        Errors.AccessDenied or Errors.UnauthorizedClient or Errors.ConsentRequired => 403,
        Errors.ServerError => 500,
        Errors.TemporarilyUnavailable => 503,
        _ => 400,
    };

    private static string? Id(string? value) => value is null ? null : value.Length <= MaxIdLength ? value : value[..MaxIdLength];

    /// <summary>The events of one response: the response itself, then its alerts.</summary>
    internal static List<AuditRecord> Records(OpenIddictServerEvents.BaseRequestContext context, OpenIddictRequest? request, OpenIddictResponse response, long ticks)
    {
        var http = context.Transaction.GetHttpRequest()?.HttpContext;
        var address = http?.Connection.RemoteIpAddress?.ToString();
        var party = context.Transaction.Properties.TryGetValue(PartyKey, out var p) ? p as AuditParty : null;
        var status = Status(response.Error);
        var subtype = context.EndpointType switch
        {
            OpenIddictServerEndpointType.Authorization => status < 400 ? "authorization-granted" : "authorization-refused",
            OpenIddictServerEndpointType.Revocation => status < 400 ? "token-revoked" : "revocation-refused",
            _ when status >= 400 => "token-refused",
            _ when request?.IsRefreshTokenGrantType() == true => "token-refreshed",
            _ => "token-issued",
        };
        // The client named by the request, verified or not (a refusal may be about an unknown one); ids are bounded.
        var client = Id(party?.ClientId ?? request?.ClientId ?? AssertionIssuer(request?.ClientAssertion));
        var records = new List<AuditRecord> { Record(AuditKind.Login, subtype, status, party, client, address, ticks) };
        if (context.Transaction.Properties.TryGetValue(AlertsKey, out var a) && a is List<(string Subtype, AuditParty? Party)> alerts)
        {
            records.AddRange(alerts.Select(alert => Record(AuditKind.SecurityAlert, alert.Subtype, status, alert.Party ?? party, client, address, ticks)));
        }
        else if (status == 401 && context.EndpointType == OpenIddictServerEndpointType.Token && request?.ClientAssertion is not null)
        {
            // OpenIddict refused the assertion itself (signature, issuer, audience, expiry, unknown client).
            records.Add(Record(AuditKind.SecurityAlert, "client-assertion-rejected", status, party, client, address, ticks));
        }
        return records;
    }

    /// <summary>The client a client assertion claims to come from (its issuer), read without trusting it, for the record of a refusal.</summary>
    private static string? AssertionIssuer(string? assertion)
    {
        try
        {
            return assertion is null ? null : new Microsoft.IdentityModel.JsonWebTokens.JsonWebToken(assertion).Issuer;
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>One event; without a known user the requestor is the client (the token endpoint's caller), written as such.</summary>
    private static AuditRecord Record(AuditKind kind, string subtype, int status, AuditParty? party, string? client, string? address, long ticks) => new()
    {
        Kind = kind,
        Subtype = subtype,
        Action = 'E',
        Status = status,
        RecordedTicks = ticks,
        Subject = Id(party?.Subject) ?? client,
        Role = party?.Role,
        FhirUser = party?.FhirUser,
        ClientId = client,
        Address = address,
        Patient = party?.Patient,
        Entities = party?.GrantId is { } grant ? [new AuditEntity("grant/" + grant)] : [],
    };

    /// <summary>
    /// Records each response of the OAuth endpoints before OpenIddict writes it; when the log cannot be written, answers
    /// 503 itself instead (the token, code or confirmation never leaves).
    /// </summary>
    internal sealed class OnResponse<TContext>(AuditLog audit) : IOpenIddictServerHandler<TContext>
        where TContext : OpenIddictServerEvents.BaseRequestContext
    {
        public async ValueTask HandleAsync(TContext context)
        {
            var (request, response) = (context.Transaction.Request, context.Transaction.Response);
            if (response is null)
            {
                return;
            }
            try
            {
                await audit.RecordAsync(Records(context, request, response, audit.NowTicks));
            }
            catch (AuditUnavailableException e)
            {
                if (context.Transaction.GetHttpRequest()?.HttpContext.Response is not { HasStarted: false } http)
                {
                    throw;
                }
                http.StatusCode = StatusCodes.Status503ServiceUnavailable;
                http.ContentType = "application/json;charset=UTF-8";
                http.Headers.CacheControl = "no-store";
                http.Headers.RetryAfter = "5";
                await using (var json = new Utf8JsonWriter(http.Body))
                {
                    json.WriteStartObject();
                    json.WriteString("error", Errors.TemporarilyUnavailable);
                    json.WriteString("error_description", e.Message);
                    json.WriteEndObject();
                }
                context.HandleRequest();
            }
        }
    }
}
