using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Ward.Core.Node;

namespace Ward.Server;

/// <summary>
/// The Prometheus scraping endpoint <c>/metrics</c>, for the operator only. Without <c>metrics: token-file</c> it answers a
/// request from a loopback address that names no proxy (a reverse proxy on the same machine connects from loopback,
/// and says so with <c>Forwarded</c> or <c>X-Forwarded-For</c>); with a token file, a request that carries
/// <c>Authorization: Bearer</c> and that token, from any address (loopback included: the token is then the only key).
/// Every other request gets the node's plain 404, as if there were no such endpoint.
/// </summary>
internal sealed class MetricsEndpoint
{
    public const string Path = "/metrics";

    /// <summary>Headers a reverse proxy adds to what it forwards: such a request did not start on this machine.</summary>
    private static readonly string[] ProxyHeaders = ["Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP"];

    /// <summary>SHA-256 of the scrape token (compared in constant time, whatever the presented token's length); null: loopback only.</summary>
    private readonly byte[]? _token;

    private MetricsEndpoint(byte[]? token) => _token = token;

    /// <summary>The endpoint as <c>ward.yaml</c> configures it; a named token file that is missing, unreadable or shorter than 16 characters stops the node.</summary>
    public static MetricsEndpoint Load(NodeConfig config)
    {
        if (config.Metrics.TokenFile is not { } file)
        {
            return new MetricsEndpoint(null);
        }
        var path = config.Resolve(file);
        string token;
        try
        {
            token = File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new NodeException($"The metrics token file {path} (metrics: token-file in ward.yaml) cannot be read: {e.Message}");
        }
        if (token.Length < 16)
        {
            throw new NodeException($"The metrics token file {path} (metrics: token-file in ward.yaml) must hold a token of 16 characters or more.");
        }
        return new MetricsEndpoint(SHA256.HashData(Encoding.UTF8.GetBytes(token)));
    }

    /// <summary>Serves the scrape to the requests <see cref="Allows"/> lets through; the others go on to the node's 404.</summary>
    public void Use(WebApplication app) =>
        app.UseOpenTelemetryPrometheusScrapingEndpoint(http => http.Request.Path.Equals(Path, StringComparison.OrdinalIgnoreCase) && Allows(http));

    public bool Allows(HttpContext http)
    {
        if (_token is null)
        {
            return http.Connection.RemoteIpAddress is { } address
                && IPAddress.IsLoopback(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address)
                && !ProxyHeaders.Any(http.Request.Headers.ContainsKey);
        }
        var header = http.Request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
            && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim())), _token);
    }
}
