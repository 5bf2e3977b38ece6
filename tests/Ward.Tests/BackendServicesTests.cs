using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Server.Identity;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// SMART Backend Services: client credentials with a <c>private_key_jwt</c> assertion (RS384 or ES384) checked against the
/// client's registered JWKS; five-minute assertions and tokens; a jti is good once.
/// </summary>
public abstract class BackendServicesTests(TestNode node)
{
    private sealed record Backend(string ClientId, SecurityKey Key, string Algorithm);

    private async Task<Backend> RegisterAsync(string algorithm = "RS384", string scopes = "system/*.rs")
    {
        SecurityKey key;
        JsonWebKey jwk;
        if (algorithm.StartsWith("ES", StringComparison.Ordinal))
        {
            var ec = ECDsa.Create(ECCurve.NamedCurves.nistP384);
            key = new ECDsaSecurityKey(ec) { KeyId = Guid.NewGuid().ToString("N") };
            jwk = JsonWebKeyConverter.ConvertFromECDsaSecurityKey(new ECDsaSecurityKey(ECDsa.Create(ec.ExportParameters(false))) { KeyId = key.KeyId });
        }
        else
        {
            var rsa = RSA.Create(2048);
            key = new RsaSecurityKey(rsa) { KeyId = Guid.NewGuid().ToString("N") };
            jwk = JsonWebKeyConverter.ConvertFromRSASecurityKey(new RsaSecurityKey(rsa.ExportParameters(false)) { KeyId = key.KeyId });
        }
        var jwks = JsonSerializer.Serialize(new { keys = new[] { jwk } }, new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull });
        var id = "svc-" + Guid.NewGuid().ToString("N")[..8];
        await using var accounts = Accounts.Open(node.Config);
        await accounts.AddClientAsync(id, ClientKind.Backend, [], scopes, jwks, "Lab integration", CancellationToken.None);
        return new Backend(id, key, algorithm);
    }

    private string Assertion(Backend client, TimeSpan? lifetime = null, string? jti = null, string? algorithm = null) =>
        new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = client.ClientId,
            Audience = node.Origin + "/connect/token",
            Claims = new Dictionary<string, object> { ["sub"] = client.ClientId, ["jti"] = jti ?? Guid.NewGuid().ToString("N") },
            Expires = DateTime.UtcNow + (lifetime ?? TimeSpan.FromMinutes(4)),
            SigningCredentials = new SigningCredentials(client.Key, algorithm ?? client.Algorithm),
        });

    private async Task<(HttpStatusCode Status, JsonElement Body)> TokenAsync(Backend client, string assertion, string scope = "system/*.rs")
    {
        using var http = node.NewHttp(null);
        var response = await http.PostAsync(node.Origin + "/connect/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials",
            ["scope"] = scope,
            ["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ["client_assertion"] = assertion,
        }));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(body.Length > 0, $"{response.StatusCode} {response.Headers} {string.Join("\n", node.Logs.Lines.TakeLast(5))}");
        return (response.StatusCode, JsonDocument.Parse(body).RootElement.Clone());
    }

    [Theory]
    [InlineData("RS384")]
    [InlineData("ES384")]
    public async Task A_backend_service_gets_a_five_minute_token_with_a_signed_assertion_and_reads_with_it(string algorithm)
    {
        var client = await RegisterAsync(algorithm);
        var (status, body) = await TokenAsync(client, Assertion(client));
        Assert.True(status == HttpStatusCode.OK, body.ToString());
        Assert.InRange(body.GetProperty("expires_in").GetInt32(), 1, 300);
        Assert.Equal("system/*.rs", body.GetProperty("scope").GetString());
        using var http = node.NewHttp(body.GetProperty("access_token").GetString());
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(node.BaseUrl + "/Patient?_count=1")).StatusCode);
        var write = await http.PostAsJsonAsync(node.BaseUrl + "/Patient", new { resourceType = "Patient", gender = "female" });
        Assert.True(HttpStatusCode.Forbidden == write.StatusCode, await write.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_replayed_jti_is_refused()
    {
        var client = await RegisterAsync();
        var assertion = Assertion(client);
        Assert.Equal(HttpStatusCode.OK, (await TokenAsync(client, assertion)).Status);
        var (status, body) = await TokenAsync(client, assertion);
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("invalid_client", body.GetProperty("error").GetString());
        Assert.Contains("jti", body.GetProperty("error_description").GetString());
    }

    [Fact]
    public async Task An_assertion_that_expires_more_than_five_minutes_ahead_is_refused()
    {
        var client = await RegisterAsync();
        var (status, body) = await TokenAsync(client, Assertion(client, TimeSpan.FromMinutes(10)));
        Assert.Equal("invalid_client", body.GetProperty("error").GetString());
        Assert.Contains("5 minutes", body.GetProperty("error_description").GetString());
        Assert.NotEqual(HttpStatusCode.OK, status);
    }

    [Fact]
    public async Task Rs256_assertions_keys_of_another_client_and_scopes_beyond_the_registration_are_refused()
    {
        var client = await RegisterAsync();
        Assert.Contains("RS384 or ES384", (await TokenAsync(client, Assertion(client, algorithm: SecurityAlgorithms.RsaSha256))).Body.GetProperty("error_description").GetString());
        var other = await RegisterAsync();
        var impostor = client with { Key = other.Key };
        Assert.Equal("invalid_client", (await TokenAsync(impostor, Assertion(impostor))).Body.GetProperty("error").GetString());
        Assert.Equal("invalid_scope", (await TokenAsync(client, Assertion(client), "system/*.cruds")).Body.GetProperty("error").GetString());
        Assert.Equal("invalid_scope", (await TokenAsync(client, Assertion(client), "user/*.rs")).Body.GetProperty("error").GetString());
    }
}

[Collection(SharedNode.Name)]
public sealed class BackendServicesTestsOnSqlite(TestNode node) : BackendServicesTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class BackendServicesTestsOnPostgres(PostgresTestNode node) : BackendServicesTests(node);
