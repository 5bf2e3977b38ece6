using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;

namespace Ward.Tests;

/// <summary>
/// A request body that is not valid UTF-8 (a lone continuation byte, an overlong encoding, a truncated sequence, an
/// encoded surrogate, a five-byte form) is a 400 OperationOutcome on every body reader: create, update, transaction,
/// patch and search by POST on FHIR, JSON and XML alike, and the research API; never a 500, never stored with the bytes
/// silently replaced.
/// </summary>
public sealed class InvalidUtf8BodiesAreRefusedTests(TestNode node) : IClassFixture<TestNode>
{
    public static TheoryData<string, byte[]> Variants => new()
    {
        { "lone continuation byte", [0x80] },
        { "overlong slash", [0xC0, 0xAF] },
        { "truncated sequence", [0xE2, 0x82] },
        { "encoded surrogate", [0xED, 0xA0, 0x80] },
        { "five-byte form", [0xF8, 0x88, 0x80, 0x80, 0x80] },
    };

    private static byte[] Body(string before, byte[] bad, string after) => [.. Encoding.UTF8.GetBytes(before), .. bad, .. Encoding.UTF8.GetBytes(after)];

    private static ByteArrayContent Content(byte[] body, string type)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(type);
        return content;
    }

    private static async Task Refused(HttpResponseMessage response, string what)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{what}: {(int)response.StatusCode} {text}");
        using var outcome = JsonDocument.Parse(text);
        Assert.Equal("OperationOutcome", outcome.RootElement.GetProperty("resourceType").GetString());
        Assert.Contains("UTF-8", text);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task Every_fhir_body_reader_answers_400(string variant, byte[] bad)
    {
        var marker = "Utf" + Guid.NewGuid().ToString("N")[..10];
        var created = await node.Http.PostAsync($"{node.BaseUrl}/Patient", new StringContent($$"""{"resourceType":"Patient","name":[{"family":"{{marker}}"}]}""", Encoding.UTF8, "application/fhir+json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString();
        var patientJson = Body($$"""{"resourceType":"Patient","name":[{"family":"{{marker}}""", bad, "\"}]}");

        await Refused(await node.Http.PostAsync($"{node.BaseUrl}/Patient", Content(patientJson, "application/fhir+json")), $"{variant}: create (JSON)");
        await Refused(await node.Http.PostAsync($"{node.BaseUrl}/Patient",
            Content(Body($"<Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"{marker}", bad, "\"/></name></Patient>"), "application/fhir+xml")), $"{variant}: create (XML)");
        await Refused(await node.Http.PutAsync($"{node.BaseUrl}/Patient/{id}",
            Content(Body($$"""{"resourceType":"Patient","id":"{{id}}","name":[{"family":"{{marker}}""", bad, "\"}]}"), "application/fhir+json")), $"{variant}: update");
        await Refused(await node.Http.PostAsync(node.BaseUrl, Content(Body($$"""{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","name":[{"family":"{{marker}}""", bad,
            "\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}}]}"), "application/fhir+json")), $"{variant}: transaction");
        await Refused(await node.Http.PatchAsync($"{node.BaseUrl}/Patient/{id}",
            Content(Body($$"""[{"op":"replace","path":"/name/0/family","value":"{{marker}}""", bad, "\"}]"), "application/json-patch+json")), $"{variant}: patch");
        await Refused(await node.Http.PostAsync($"{node.BaseUrl}/Patient/_search", Content(Body($"family={marker}", bad, ""), "application/x-www-form-urlencoded")), $"{variant}: search by POST");

        // Nothing was stored: the one patient of this marker, unchanged.
        var found = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/Patient?family={marker}"));
        Assert.Equal(1, found.RootElement.GetProperty("total").GetInt32());
        var read = await node.Http.GetStringAsync($"{node.BaseUrl}/Patient/{id}");
        Assert.Contains($"\"family\":\"{marker}\"", read);
        Assert.DoesNotContain("\uFFFD", read);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task The_research_api_answers_400(string variant, byte[] bad)
    {
        using var researcher = node.NewHttp(node.Token(new AccessGrant("utf8-researcher", "utf8-tests", "researcher", SmartScopes.Parse("user/*.rs"), null, null)));
        await Refused(await researcher.PostAsync($"{node.Origin}/research/query",
            Content(Body("""{"count":"Patient","by":["gender""", bad, "\"],\"epsilon\":0.1}"), "application/json")), $"{variant}: research question");
    }
}
