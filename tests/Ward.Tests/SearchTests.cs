using System.Net;
using System.Text;
using System.Text.Json;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>Search semantics over real HTTP, on resources each test creates with a unique marker.</summary>
public abstract class SearchTests(TestNode node)
{
    private readonly string _tag = "t" + Guid.NewGuid().ToString("N")[..10];

    private async Task<string> Create(string json)
    {
        using var content = new StringContent(json, Encoding.UTF8, "application/fhir+json");
        using var response = await node.Http.PostAsync($"{node.BaseUrl}/{JsonDocument.Parse(json).RootElement.GetProperty("resourceType").GetString()}", content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    private string Meta => $$$"""{"tag":[{"system":"urn:test","code":"{{{_tag}}}"}]}""";

    private async Task<JsonElement> Search(string query)
    {
        using var response = await node.Http.GetAsync($"{node.BaseUrl}/{query}{(query.Contains('?') ? "&" : "?")}_tag=urn:test|{_tag}");
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{query}: {body}");
        return JsonDocument.Parse(body).RootElement;
    }

    private async Task<string[]> Ids(string query) =>
        (await Search(query)).TryGetProperty("entry", out var entries)
            ? entries.EnumerateArray().Where(e => e.GetProperty("search").GetProperty("mode").GetString() == "match")
                .Select(e => e.GetProperty("resource").GetProperty("id").GetString()!).ToArray()
            : [];

    private async Task<(string Dupont, string Helene, string Smith)> Patients()
    {
        var dupont = await Create($$$"""{"resourceType":"Patient","meta":{{{Meta}}},"name":[{"family":"Dupont","given":["Jean"]}],"gender":"male","birthDate":"1950-03-01","telecom":[{"system":"phone","value":"+33 1 23 45 67 89"}]}""");
        var helene = await Create($$$"""{"resourceType":"Patient","meta":{{{Meta}}},"name":[{"family":"Hélène-Durand","given":["Élise"]}],"gender":"female","birthDate":"1987-11-20"}""");
        var smith = await Create($$$"""{"resourceType":"Patient","meta":{{{Meta}}},"name":[{"family":"Smith","given":["Ann"]}],"gender":"female","birthDate":"2001"}""");
        return (dupont, helene, smith);
    }

    [Fact]
    public async Task String_search_is_a_prefix_match_ignoring_case_and_accents_with_exact_and_contains()
    {
        var (dupont, helene, _) = await Patients();
        Assert.Equal([dupont], await Ids("Patient?name=dup"));
        Assert.Equal([helene], await Ids("Patient?family=helene"));
        Assert.Equal([helene], await Ids("Patient?given=ELISE"));
        Assert.Empty(await Ids("Patient?family:exact=dupont"));
        Assert.Equal([dupont], await Ids("Patient?family:exact=Dupont"));
        Assert.Equal([dupont], await Ids("Patient?family:exact=Dupont,Smyth"));
        Assert.Equal(2, (await Ids("Patient?name=dupont,smith")).Length);
        var org = await Create($$$"""{"resourceType":"Organization","meta":{{{Meta}}},"name":"Centre Hospitalier Ouest"}""");
        Assert.Equal([org], await Ids("Organization?name:contains=hospit"));
        Assert.Equal([org], await Ids("Organization?name=centre%20h"));
    }

    [Fact]
    public async Task Token_search_supports_not_and_text()
    {
        var (dupont, helene, smith) = await Patients();
        Assert.Equal([dupont], await Ids("Patient?gender=male"));
        Assert.Equal(new[] { helene, smith }.Order(), (await Ids("Patient?gender:not=male")).Order());
        Assert.Equal([dupont], await Ids("Patient?phone=" + Uri.EscapeDataString("+33 1 23 45 67 89")));
        var obs = await Create($$$"""{"resourceType":"Observation","meta":{{{Meta}}},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body height"}]},"subject":{"reference":"Patient/{{{dupont}}}"},"valueQuantity":{"value":181.5,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"},"effectiveDateTime":"2020-06-15T10:00:00Z"}""");
        Assert.Equal([obs], await Ids("Observation?code:text=body"));
        Assert.Equal([obs], await Ids("Observation?code=http://loinc.org|"));
        Assert.Empty(await Ids("Observation?code=|8302-2"));
    }

    [Fact]
    public async Task Date_number_quantity_and_composite_search()
    {
        var (dupont, helene, smith) = await Patients();
        Assert.Equal([smith], await Ids("Patient?birthdate=2001"));
        Assert.Equal([smith], await Ids("Patient?birthdate=ge2001-06-01"));
        Assert.Equal([dupont], await Ids("Patient?birthdate=lt1960"));
        Assert.Equal(new[] { helene, smith }.Order(), (await Ids("Patient?birthdate=sa1960")).Order());
        var tall = await Create($$$"""{"resourceType":"Observation","meta":{{{Meta}}},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/{{{dupont}}}"},"valueQuantity":{"value":181.5,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}""");
        var small = await Create($$$"""{"resourceType":"Observation","meta":{{{Meta}}},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/{{{helene}}}"},"valueQuantity":{"value":158,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}""");
        Assert.Equal([tall], await Ids("Observation?value-quantity=gt170|http://unitsofmeasure.org|cm"));
        Assert.Equal([small], await Ids("Observation?value-quantity=158"));
        Assert.Equal([tall], await Ids("Observation?value-quantity=181.5||cm"));
        Assert.Equal([tall], await Ids("Observation?code-value-quantity=http://loinc.org|8302-2$gt170"));
        Assert.Empty(await Ids("Observation?code-value-quantity=http://loinc.org|1234-5$gt170"));
        var risk = await Create($$$"""{"resourceType":"RiskAssessment","meta":{{{Meta}}},"status":"final","subject":{"reference":"Patient/{{{dupont}}}"},"prediction":[{"probabilityDecimal":0.35}]}""");
        Assert.Equal([risk], await Ids("RiskAssessment?probability=gt0.3"));
        Assert.Empty(await Ids("RiskAssessment?probability=0.3"));
        Assert.Equal([risk], await Ids("RiskAssessment?probability=0.4")); // 0.4 stands for [0.35, 0.45)
    }

    [Fact]
    public async Task Reference_chaining_reverse_chaining_and_missing()
    {
        var (dupont, helene, _) = await Patients();
        var obs = await Create($$$"""{"resourceType":"Observation","meta":{{{Meta}}},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/{{{dupont}}}"}}""");
        var unlinked = await Create($$$"""{"resourceType":"Observation","meta":{{{Meta}}},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]}}""");
        Assert.Equal([obs], await Ids($"Observation?subject=Patient/{dupont}"));
        Assert.Equal([obs], await Ids($"Observation?subject={dupont}"));
        Assert.Equal([obs], await Ids($"Observation?subject:Patient={dupont}"));
        Assert.Equal([obs], await Ids($"Observation?subject={node.BaseUrl}/Patient/{dupont}"));
        Assert.Equal([obs], await Ids("Observation?subject:Patient.name=dupont"));
        Assert.Equal([obs], await Ids("Observation?patient.gender=male"));
        Assert.Equal([dupont], await Ids("Patient?_has:Observation:patient:code=29463-7"));
        Assert.Equal([unlinked], await Ids("Observation?subject:missing=true"));
        Assert.Equal([obs], await Ids("Observation?subject:missing=false"));
        Assert.Equal([obs], await Ids($"Patient/{dupont}/Observation"));
        Assert.Empty(await Ids($"Patient/{helene}/Observation"));
    }

    [Fact]
    public async Task Sort_paging_total_summary_and_elements()
    {
        var (dupont, helene, smith) = await Patients();
        Assert.Equal([smith, helene, dupont], await Ids("Patient?_sort=-birthdate"));
        Assert.Equal([dupont, helene, smith], await Ids("Patient?_sort=birthdate"));
        var page1 = await Search("Patient?_sort=birthdate&_count=2");
        Assert.Equal(3, page1.GetProperty("total").GetInt32());
        var next = page1.GetProperty("link").EnumerateArray().Single(l => l.GetProperty("relation").GetString() == "next").GetProperty("url").GetString()!;
        using var page2 = JsonDocument.Parse(await node.Http.GetStringAsync(next));
        Assert.Equal(smith, page2.RootElement.GetProperty("entry")[0].GetProperty("resource").GetProperty("id").GetString());
        var count = await Search("Patient?_summary=count");
        Assert.Equal(3, count.GetProperty("total").GetInt32());
        Assert.False(count.TryGetProperty("entry", out _));
        var none = await Search("Patient?_total=none");
        Assert.False(none.TryGetProperty("total", out _));
        var elements = await Search($"Patient?_id={dupont}&_elements=birthDate");
        var resource = elements.GetProperty("entry")[0].GetProperty("resource");
        Assert.True(resource.TryGetProperty("birthDate", out _));
        Assert.False(resource.TryGetProperty("name", out _));
        Assert.Equal(dupont, resource.GetProperty("id").GetString());
        Assert.Contains("SUBSETTED", resource.GetProperty("meta").GetRawText());
    }

    [Fact]
    public async Task Include_revinclude_and_iterate()
    {
        var (dupont, _, _) = await Patients();
        var org = await Create($$$"""{"resourceType":"Organization","meta":{{{Meta}}},"name":"CHU Test"}""");
        var practitioner = await Create($$$"""{"resourceType":"Practitioner","meta":{{{Meta}}},"name":[{"family":"House"}]}""");
        var role = await Create($$$"""{"resourceType":"PractitionerRole","meta":{{{Meta}}},"practitioner":{"reference":"Practitioner/{{{practitioner}}}"},"organization":{"reference":"Organization/{{{org}}}"}}""");
        var encounter = await Create($$$"""{"resourceType":"Encounter","meta":{{{Meta}}},"status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/{{{dupont}}}"},"participant":[{"individual":{"reference":"PractitionerRole/{{{role}}}"}}]}""");
        var bundle = await Search($"Encounter?_id={encounter}&_include=Encounter:participant&_include:iterate=PractitionerRole:organization");
        var included = bundle.GetProperty("entry").EnumerateArray().Where(e => e.GetProperty("search").GetProperty("mode").GetString() == "include")
            .Select(e => e.GetProperty("resource").GetProperty("resourceType").GetString() + "/" + e.GetProperty("resource").GetProperty("id").GetString()).Order().ToArray();
        Assert.Equal(new[] { $"Organization/{org}", $"PractitionerRole/{role}" }.Order(), included);
        var rev = await Search($"Patient?_id={dupont}&_revinclude=Encounter:subject");
        Assert.Contains(rev.GetProperty("entry").EnumerateArray(), e => e.GetProperty("resource").GetProperty("id").GetString() == encounter);
    }

    [Fact]
    public async Task Last_updated_and_profile_search()
    {
        var before = DateTime.UtcNow.AddSeconds(-1).ToString("yyyy-MM-ddTHH:mm:ssZ");
        var id = await Create($$$"""{"resourceType":"Patient","meta":{"tag":[{"system":"urn:test","code":"{{{_tag}}}"}],"profile":["http://example.org/StructureDefinition/p"]},"active":true}""");
        Assert.Equal([id], await Ids($"Patient?_lastUpdated=gt{before}"));
        Assert.Empty(await Ids("Patient?_lastUpdated=lt2000"));
        Assert.Equal([id], await Ids("Patient?_profile=http://example.org/StructureDefinition/p"));
        using var post = await node.Http.PostAsync($"{node.BaseUrl}/Patient/_search",
            new FormUrlEncodedContent([new("_id", id), new("_tag", $"urn:test|{_tag}")]));
        var body = JsonDocument.Parse(await post.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(1, body.GetProperty("total").GetInt32());
    }
}

[Collection(SharedNode.Name)]
public sealed class SearchTestsOnSqlite(TestNode node) : SearchTests(node);

[Collection(SharedPostgresNode.Name)]
public sealed class SearchTestsOnPostgres(PostgresTestNode node) : SearchTests(node);
