using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Ward.Core.Access;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>
/// Every FHIR interaction needs a valid token, and its scopes decide per interaction (c, r, u, d, s), per resource type,
/// and for patient/ scopes per compartment; batch and transaction entries are each checked on their own.
/// </summary>
public abstract class AccessControlTests(TestNode node)
{
    private HttpClient With(string scopes, string? patient = null, string role = "service") =>
        node.NewHttp(node.Token(new AccessGrant("u-" + role, "app", role, SmartScopes.Parse(scopes), patient, null)));

    private async Task<string> CreateAsync(object resource)
    {
        var response = await node.Http.PostAsJsonAsync($"{node.BaseUrl}/{JsonSerializer.SerializeToElement(resource).GetProperty("resourceType").GetString()}", resource);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
    }

    private Task<string> PatientAsync() => CreateAsync(new { resourceType = "Patient", gender = "other", name = new[] { new { family = "Scoped" } } });

    private static object Observation(string patient, string text = "heart rate") =>
        new { resourceType = "Observation", status = "final", code = new { text }, subject = new { reference = "Patient/" + patient } };

    private static async Task<string> Outcome(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("issue")[0].GetProperty("diagnostics").GetString()!;

    [Fact]
    public async Task Without_a_token_every_route_but_metadata_answers_401_with_www_authenticate()
    {
        using var anonymous = node.NewHttp(null);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync(node.BaseUrl + "/metadata")).StatusCode);
        foreach (var path in new[] { "/Patient", "/Patient/x", "/_history", "/Observation?code=1", "" })
        {
            var response = await anonymous.GetAsync(node.BaseUrl + path);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("Bearer realm=\"ward\"", response.Headers.WwwAuthenticate.ToString());
            Assert.Contains("access token", await Outcome(response));
        }
        var post = await anonymous.PostAsJsonAsync(node.BaseUrl + "/Patient", new { resourceType = "Patient", gender = "male" });
        Assert.Equal(HttpStatusCode.Unauthorized, post.StatusCode);
    }

    [Fact]
    public async Task Expired_malformed_foreign_and_wrongly_typed_tokens_are_refused_as_invalid_token()
    {
        var grant = new AccessGrant("u1", "app", "clinician", SmartScopes.Parse("user/*.rs"), null, null);
        var expired = node.Token(grant, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow.AddHours(-1));
        using var rsa = RSA.Create(2048);
        var foreign = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            TokenType = "at+jwt",
            Claims = new Dictionary<string, object> { ["sub"] = "u1", ["scope"] = "user/*.rs" },
            Expires = DateTime.UtcNow.AddMinutes(5),
            SigningCredentials = new SigningCredentials(new RsaSecurityKey(rsa), SecurityAlgorithms.RsaSha256),
        });
        var unsigned = Base64UrlEncoder.Encode("{\"alg\":\"none\",\"typ\":\"at+jwt\"}") + "." + Base64UrlEncoder.Encode("{\"sub\":\"u1\",\"scope\":\"user/*.rs\",\"exp\":9999999999}") + ".";
        foreach (var (token, expected) in new[] { (expired, "expired"), (foreign, "not signed by this node"), (unsigned, "not signed by this node"), ("garbage", "not valid") })
        {
            using var http = node.NewHttp(token);
            var response = await http.GetAsync(node.BaseUrl + "/Patient");
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            var challenge = response.Headers.WwwAuthenticate.ToString();
            Assert.Contains("error=\"invalid_token\"", challenge);
            Assert.Contains(expected, challenge);
        }
    }

    [Fact]
    public async Task Each_interaction_needs_its_own_letter()
    {
        var patient = await PatientAsync();
        var observation = await CreateAsync(Observation(patient));
        using var readOnly = With("user/*.rs");
        Assert.Equal(HttpStatusCode.OK, (await readOnly.GetAsync($"{node.BaseUrl}/Observation/{observation}")).StatusCode);
        var write = await readOnly.PostAsJsonAsync($"{node.BaseUrl}/Observation", Observation(patient));
        Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
        Assert.Contains("do not allow create of Observation", await Outcome(write));
        Assert.Equal(HttpStatusCode.Forbidden, (await readOnly.DeleteAsync($"{node.BaseUrl}/Observation/{observation}")).StatusCode);

        using var searchOnly = With("user/Observation.s");
        Assert.Equal(HttpStatusCode.OK, (await searchOnly.GetAsync($"{node.BaseUrl}/Observation?patient={patient}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await searchOnly.GetAsync($"{node.BaseUrl}/Observation/{observation}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await searchOnly.GetAsync($"{node.BaseUrl}/Patient?_id={patient}")).StatusCode);

        using var updateOnly = With("user/Observation.u");
        var current = await node.Http.GetFromJsonAsync<JsonElement>($"{node.BaseUrl}/Observation/{observation}");
        var put = await updateOnly.PutAsync($"{node.BaseUrl}/Observation/{observation}", JsonContent.Create(current));
        Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await updateOnly.PostAsJsonAsync($"{node.BaseUrl}/Observation", Observation(patient))).StatusCode);

        using var v1 = With("user/Observation.write");
        Assert.Equal(HttpStatusCode.Created, (await v1.PostAsJsonAsync($"{node.BaseUrl}/Observation", Observation(patient))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await v1.GetAsync($"{node.BaseUrl}/Observation/{observation}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await v1.DeleteAsync($"{node.BaseUrl}/Observation/{observation}")).StatusCode);
    }

    [Fact]
    public async Task A_patient_token_reaches_only_its_patients_compartment()
    {
        var a = await PatientAsync();
        var b = await PatientAsync();
        var mine = await CreateAsync(Observation(a, "mine"));
        var theirs = await CreateAsync(Observation(b, "theirs"));
        var practitioner = await CreateAsync(new { resourceType = "Practitioner", name = new[] { new { family = "Shared" } } });
        using var http = With("patient/*.rs", patient: a, role: "patient");

        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Observation/{mine}")).StatusCode);
        // Another patient's record answers as one that does not exist (issue 29, point 6); a compartment search is refused whatever exists.
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"{node.BaseUrl}/Observation/{theirs}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"{node.BaseUrl}/Patient/{b}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync($"{node.BaseUrl}/Patient/{b}/Observation")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync($"{node.BaseUrl}/Patient/{b}/$everything")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"{node.BaseUrl}/Observation/{theirs}/_history")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync($"{node.BaseUrl}/Observation/_history")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync($"{node.BaseUrl}/_history")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Practitioner/{practitioner}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"{node.BaseUrl}/Observation/does-not-exist")).StatusCode);

        // Searches are confined to the compartment, whatever they ask for.
        var ids = await Ids(http, $"{node.BaseUrl}/Observation?_count=1000");
        Assert.Contains(mine, ids);
        Assert.DoesNotContain(theirs, ids);
        Assert.Equal([a], await Ids(http, $"{node.BaseUrl}/Patient?_count=1000"));
        Assert.Empty(await Ids(http, $"{node.BaseUrl}/Observation?subject=Patient/{b}"));
        // Includes do not leak another patient's records.
        var reverse = await Ids(http, $"{node.BaseUrl}/Patient?_id={a}&_revinclude=Observation:subject");
        Assert.Contains(mine, reverse);
        Assert.DoesNotContain(theirs, reverse);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"{node.BaseUrl}/Patient/{a}/$everything")).StatusCode);
    }

    [Fact]
    public async Task A_patient_token_writes_only_into_its_own_compartment()
    {
        var a = await PatientAsync();
        var b = await PatientAsync();
        var theirs = await CreateAsync(Observation(b));
        using var http = With("patient/Observation.cruds", patient: a, role: "patient");
        Assert.Equal(HttpStatusCode.Created, (await http.PostAsJsonAsync($"{node.BaseUrl}/Observation", Observation(a))).StatusCode);
        var forged = await http.PostAsJsonAsync($"{node.BaseUrl}/Observation", Observation(b));
        Assert.Equal(HttpStatusCode.Forbidden, forged.StatusCode);
        Assert.Contains($"Patient/{a}", await Outcome(forged));
        // Taking another patient's record into one's own compartment is a write outside it too.
        var moved = (await node.Http.GetFromJsonAsync<System.Text.Json.Nodes.JsonObject>($"{node.BaseUrl}/Observation/{theirs}"))!;
        moved["subject"] = new System.Text.Json.Nodes.JsonObject { ["reference"] = "Patient/" + a };
        // Another patient's record is not said to exist (issue 29, point 6).
        Assert.Equal(HttpStatusCode.NotFound, (await http.PutAsync($"{node.BaseUrl}/Observation/{theirs}", JsonContent.Create(moved))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync($"{node.BaseUrl}/Observation/{theirs}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync($"{node.BaseUrl}/Observation/{theirs}")).StatusCode);
    }

    [Fact]
    public async Task Batch_entries_are_checked_one_by_one_and_a_forbidden_transaction_entry_changes_nothing()
    {
        var patient = await PatientAsync();
        var observation = await CreateAsync(Observation(patient));
        using var http = With("user/Observation.rs user/Patient.cruds");
        var batch = new
        {
            resourceType = "Bundle",
            type = "batch",
            entry = new object[]
            {
                new { request = new { method = "GET", url = $"Observation/{observation}" } },
                new { request = new { method = "POST", url = "Observation" }, resource = Observation(patient) },
                new { request = new { method = "POST", url = "Patient" }, resource = new { resourceType = "Patient", gender = "female" } },
            },
        };
        var response = await http.PostAsJsonAsync(node.BaseUrl, batch);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var statuses = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("entry").EnumerateArray()
            .Select(e => e.GetProperty("response").GetProperty("status").GetString()!).ToArray();
        Assert.StartsWith("200", statuses[0]);
        Assert.StartsWith("403", statuses[1]);
        Assert.StartsWith("201", statuses[2]);

        var family = "Txn" + Guid.NewGuid().ToString("N")[..8];
        var transaction = new
        {
            resourceType = "Bundle",
            type = "transaction",
            entry = new object[]
            {
                new { fullUrl = "urn:uuid:0b6d2a3e-0000-4000-8000-000000000001", request = new { method = "POST", url = "Patient" }, resource = new { resourceType = "Patient", name = new[] { new { family } } } },
                new { request = new { method = "POST", url = "Observation" }, resource = Observation(patient) },
            },
        };
        var refused = await http.PostAsJsonAsync(node.BaseUrl, transaction);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains("nothing was changed", await Outcome(refused));
        Assert.Empty(await Ids(node.Http, $"{node.BaseUrl}/Patient?family={family}"));
    }

    private static async Task<List<string>> Ids(HttpClient http, string url)
    {
        var response = await http.GetAsync(url);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{url}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        var bundle = await response.Content.ReadFromJsonAsync<JsonElement>();
        return bundle.TryGetProperty("entry", out var entries)
            ? entries.EnumerateArray().Where(e => e.GetProperty("resource").GetProperty("resourceType").GetString() != "OperationOutcome")
                .Select(e => e.GetProperty("resource").GetProperty("id").GetString()!).ToList()
            : [];
    }
}

[Collection(SharedNode.Name)]
public sealed class AccessControlTestsOnSqlite(TestNode node) : AccessControlTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class AccessControlTestsOnPostgres(PostgresTestNode node) : AccessControlTests(node);
