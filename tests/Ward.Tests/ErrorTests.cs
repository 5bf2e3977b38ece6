using System.Net;
using System.Text;
using System.Text.Json;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>Every bad request gets an OperationOutcome with the right status, and changes nothing.</summary>
public abstract class ErrorTests(TestNode node)
{
    private async Task<long> VersionCount()
    {
        using var doc = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/_history?_count=0"));
        return doc.RootElement.GetProperty("total").GetInt64();
    }

    private async Task<JsonElement> ExpectOutcome(HttpResponseMessage response, HttpStatusCode status, string fragment)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {status}, got {response.StatusCode}: {body}");
        Assert.Equal("application/fhir+json", response.Content.Headers.ContentType?.MediaType);
        var doc = JsonDocument.Parse(body).RootElement;
        Assert.Equal("OperationOutcome", doc.GetProperty("resourceType").GetString());
        var diagnostics = doc.GetProperty("issue")[0].GetProperty("diagnostics").GetString()!;
        Assert.Contains(fragment, diagnostics);
        return doc;
    }

    private static StringContent Body(string json, string type = "application/fhir+json") => new(json, Encoding.UTF8, type);

    [Fact]
    public async Task Malformed_json_is_refused_with_its_position()
    {
        var before = await VersionCount();
        using var response = await node.Http.PostAsync($"{node.BaseUrl}/Patient", Body("{\n  \"resourceType\": \"Patient\",\n  \"name\": [ }\n}"));
        await ExpectOutcome(response, HttpStatusCode.BadRequest, "line 3");
        Assert.Equal(before, await VersionCount());
    }

    [Fact]
    public async Task A_nul_character_is_refused_alike_on_both_engines_but_an_escaped_backslash_before_u0000_is_text()
    {
        var before = await VersionCount();
        using (var direct = await node.Http.PostAsync($"{node.BaseUrl}/Observation", Body("""{"resourceType":"Observation","status":"final","code":{"text":"x\u0000y"}}""")))
        {
            await ExpectOutcome(direct, HttpStatusCode.BadRequest, "U+0000");
        }
        using (var inBundle = await node.Http.PostAsync(node.BaseUrl, Body("""
            {"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"\\\u0000"}},"request":{"method":"POST","url":"Observation"}}]}
            """)))
        {
            await ExpectOutcome(inBundle, HttpStatusCode.BadRequest, "U+0000");
        }
        Assert.Equal(before, await VersionCount());
        // "\\u0000" is a backslash followed by the text u0000: a valid value, stored and searchable on both engines.
        using var text = await node.Http.PostAsync($"{node.BaseUrl}/Observation", Body("""{"resourceType":"Observation","status":"final","code":{"text":"path\\u0000"}}"""));
        Assert.Equal(HttpStatusCode.Created, text.StatusCode);
        using var found = JsonDocument.Parse(await node.Http.GetStringAsync($"{node.BaseUrl}/Observation?code:text=path%5Cu0000"));
        Assert.True(found.RootElement.GetProperty("total").GetInt32() >= 1);
    }

    [Fact]
    public async Task An_unknown_element_is_refused()
    {
        using var response = await node.Http.PostAsync($"{node.BaseUrl}/Patient", Body("""{"resourceType":"Patient","favouriteColour":"blue"}"""));
        await ExpectOutcome(response, HttpStatusCode.BadRequest, "favouriteColour");
    }

    [Fact]
    public async Task An_unknown_resource_type_answers_404()
    {
        using var response = await node.Http.GetAsync($"{node.BaseUrl}/Spaceship/1");
        await ExpectOutcome(response, HttpStatusCode.NotFound, "'Spaceship' is not a FHIR R4 resource type");
    }

    [Fact]
    public async Task An_invalid_id_answers_400()
    {
        using var response = await node.Http.GetAsync($"{node.BaseUrl}/Patient/not_a*valid_id");
        await ExpectOutcome(response, HttpStatusCode.BadRequest, "is not a valid resource id");
        var longId = new string('a', 65);
        using var update = await node.Http.PutAsync($"{node.BaseUrl}/Patient/{longId}", Body($$"""{"resourceType":"Patient","id":"{{longId}}"}"""));
        await ExpectOutcome(update, HttpStatusCode.BadRequest, "is not a valid resource id (1 to 64 characters");
    }

    [Fact]
    public async Task A_missing_resource_answers_404()
    {
        using var response = await node.Http.GetAsync($"{node.BaseUrl}/Patient/does-not-exist");
        await ExpectOutcome(response, HttpStatusCode.NotFound, "Patient/does-not-exist does not exist");
    }

    [Fact]
    public async Task A_body_larger_than_the_limit_answers_413_and_changes_nothing()
    {
        var before = await VersionCount();
        var big = "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"" + new string('x', 9 * 1024 * 1024) + "\"}]}";
        using var request = new HttpRequestMessage(HttpMethod.Post, $"{node.BaseUrl}/Patient") { Content = Body(big) };
        request.Headers.ExpectContinue = true;
        using var response = await node.Http.SendAsync(request);
        await ExpectOutcome(response, HttpStatusCode.RequestEntityTooLarge, "larger than this node accepts");
        Assert.Equal(before, await VersionCount());
    }

    [Fact]
    public async Task An_unsupported_media_type_answers_415()
    {
        using var response = await node.Http.PostAsync($"{node.BaseUrl}/Patient", Body("resourceType=Patient", "text/plain"));
        await ExpectOutcome(response, HttpStatusCode.UnsupportedMediaType, "text/plain");
    }

    [Fact]
    public async Task A_body_of_another_type_than_the_url_answers_400()
    {
        using var response = await node.Http.PostAsync($"{node.BaseUrl}/Patient", Body("""{"resourceType":"Observation","status":"final","code":{"text":"x"}}"""));
        await ExpectOutcome(response, HttpStatusCode.BadRequest, "The body is a Observation, but the URL names Patient");
    }

    [Fact]
    public async Task An_update_whose_body_id_differs_from_the_url_answers_400()
    {
        using var response = await node.Http.PutAsync($"{node.BaseUrl}/Patient/one", Body("""{"resourceType":"Patient","id":"two"}"""));
        await ExpectOutcome(response, HttpStatusCode.BadRequest, "differs from the id in the URL");
    }

    [Fact]
    public async Task Unknown_search_parameters_warn_or_fail_under_strict_handling()
    {
        using var lenient = await node.Http.GetAsync($"{node.BaseUrl}/Patient?favourite-colour=blue&_count=1");
        Assert.Equal(HttpStatusCode.OK, lenient.StatusCode);
        var bundle = JsonDocument.Parse(await lenient.Content.ReadAsStringAsync()).RootElement;
        var outcome = bundle.GetProperty("entry").EnumerateArray().Single(e => e.GetProperty("search").GetProperty("mode").GetString() == "outcome");
        Assert.Contains("favourite-colour", outcome.GetProperty("resource").GetProperty("issue")[0].GetProperty("diagnostics").GetString());

        using var request = new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/Patient?favourite-colour=blue");
        request.Headers.Add("Prefer", "handling=strict");
        using var strict = await node.Http.SendAsync(request);
        await ExpectOutcome(strict, HttpStatusCode.BadRequest, "favourite-colour");
    }

    [Fact]
    public async Task Bad_search_values_answer_400()
    {
        using var date = await node.Http.GetAsync($"{node.BaseUrl}/Patient?birthdate=last-tuesday");
        await ExpectOutcome(date, HttpStatusCode.BadRequest, "is not a valid FHIR date");
        using var modifier = await node.Http.GetAsync($"{node.BaseUrl}/Patient?birthdate:contains=2000");
        await ExpectOutcome(modifier, HttpStatusCode.BadRequest, "modifier ':contains' is not supported");
        using var count = await node.Http.GetAsync($"{node.BaseUrl}/Patient?_count=-1");
        await ExpectOutcome(count, HttpStatusCode.BadRequest, "_count");
    }

    [Fact]
    public async Task A_transaction_with_an_unresolvable_placeholder_changes_nothing()
    {
        var before = await VersionCount();
        var tx = """
            {"resourceType":"Bundle","type":"transaction","entry":[
              {"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001","resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
              {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:bbbbbbbb-0000-0000-0000-000000000002"}},"request":{"method":"POST","url":"Observation"}}
            ]}
            """;
        using var response = await node.Http.PostAsync(node.BaseUrl, Body(tx));
        await ExpectOutcome(response, HttpStatusCode.NotFound, "urn:uuid:bbbbbbbb-0000-0000-0000-000000000002");
        Assert.Equal(before, await VersionCount());
    }

    [Fact]
    public async Task A_conditional_reference_matching_nothing_fails_the_transaction()
    {
        var before = await VersionCount();
        var tx = """
            {"resourceType":"Bundle","type":"transaction","entry":[
              {"resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"participant":[{"individual":{"reference":"Practitioner?identifier=urn:none|0"}}]},"request":{"method":"POST","url":"Encounter"}}
            ]}
            """;
        using var response = await node.Http.PostAsync(node.BaseUrl, Body(tx));
        await ExpectOutcome(response, HttpStatusCode.PreconditionFailed, "matches no resource");
        Assert.Equal(before, await VersionCount());
    }

    [Fact]
    public async Task A_nul_in_a_break_the_glass_justification_is_a_400_on_both_engines_and_opens_nothing()
    {
        var patient = JsonDocument.Parse((await node.AsOperator("POST", "Patient", """{"resourceType":"Patient","name":[{"family":"Nul"}]}""")).Body).RootElement.GetProperty("id").GetString();
        using var clinician = node.NewHttp(node.Token(new Ward.Core.Access.AccessGrant("nul-doc", "t", "clinician", Ward.Core.Access.SmartScopes.Parse("user/*.rs"), null, "Practitioner/nul-doc")));
        foreach (var why in new[] { "Unconscious patient\0 in the hall, no record", "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", "Unconscious patient in the hall, no record\0" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"{node.BaseUrl}/Patient/{patient}");
            request.Headers.Add("Ward-Break-Glass", Uri.EscapeDataString(why));
            await ExpectOutcome(await clinician.SendAsync(request), HttpStatusCode.BadRequest, "NUL");
        }
        Assert.Equal(HttpStatusCode.NotFound, (await clinician.GetAsync($"{node.BaseUrl}/Patient/{patient}")).StatusCode);
    }
}

[Collection(SharedNode.Name)]
public sealed class ErrorTestsOnSqlite(TestNode node) : ErrorTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class ErrorTestsOnPostgres(PostgresTestNode node) : ErrorTests(node);
