using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Task = System.Threading.Tasks.Task;

namespace Ward.Tests;

/// <summary>Every official FHIR R4 example can be stored and read back equal apart from meta, or is rejected clearly.</summary>
public sealed class OfficialExamplesTestsOnSqlite(TestNode node) : OfficialExamplesTests(node), IClassFixture<TestNode>;

public sealed class OfficialExamplesTestsOnPostgres(PostgresTestNode node) : OfficialExamplesTests(node), IClassFixture<PostgresTestNode>;

public abstract class OfficialExamplesTests(TestNode node)
{
    private static string Folder => Path.Combine(TestData.Root, "fhir-r4", "instances");

    /// <summary>Examples that are not valid FHIR R4 and must be refused with a clear OperationOutcome (file: what it must say).</summary>
    private static readonly Dictionary<string, string> ExpectedRejections = new(StringComparer.Ordinal)
    {
        ["MessageHeader-1cbdfb97-5859-48a4-8301-d54eab818d68.json"] = "is not a correct literal for a canonical. At MessageHeader.definition, line 60",
        ["Library-zika-virus-intervention-logic.json"] = "'urn:oid:X.Y.Z' is not a correct literal for a canonical",
        ["ig-r4.json"] = "with minimum cardinality 1 must be present",
        ["Questionnaire-qs1.json"] = "Questionnaire.item[0].item[0].linkId' with minimum cardinality 1 must be present",
        // A valid FHIR decimal beyond the range of .NET decimal (the Firely model's type): refused rather than rounded.
        ["Observation-decimal.json"] = "-1.000000000000000000E+245' is not the right type of literal for a decimal",
    };

    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.EnumerateFiles(Folder, "*.json").Select(Path.GetFileName).Order(StringComparer.Ordinal))
        {
            data.Add(f!);
        }
        return data;
    }

    [Fact]
    public void All_706_examples_are_there() => Assert.Equal(706, Files().Count);

    [Theory]
    [MemberData(nameof(Files))]
    public async Task Example_is_stored_and_read_back_equal_or_rejected_clearly(string file)
    {
        var bytes = await File.ReadAllBytesAsync(Path.Combine(Folder, file));
        var original = JsonNode.Parse(bytes)!.AsObject();
        var type = original["resourceType"]!.GetValue<string>();
        var id = original["id"]?.GetValue<string>();
        using var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new("application/fhir+json");
        using var response = id is null
            ? await node.Http.PostAsync($"{node.BaseUrl}/{type}", content)
            : await node.Http.PutAsync($"{node.BaseUrl}/{type}/{id}", content);
        var body = await response.Content.ReadAsStringAsync();
        if (type == "AuditEvent")
        {
            // The node writes its own audit log; no client can add to it, change it or delete from it.
            Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
            Assert.Contains("append-only log", body);
            return;
        }
        if (ExpectedRejections.TryGetValue(file, out var message))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            var outcome = JsonNode.Parse(body)!;
            Assert.Equal("OperationOutcome", outcome["resourceType"]!.GetValue<string>());
            Assert.Contains(message, outcome["issue"]![0]!["diagnostics"]!.GetValue<string>());
            return;
        }
        Assert.True(response.StatusCode is HttpStatusCode.Created or HttpStatusCode.OK, $"{file}: {(int)response.StatusCode} {body}");
        var location = response.Headers.Location?.ToString() ?? $"{node.BaseUrl}/{type}/{id}";
        var readId = id ?? location.Split('/')[^3];
        using var read = await node.Http.GetAsync($"{node.BaseUrl}/{type}/{readId}");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        var stored = JsonNode.Parse(await read.Content.ReadAsByteArrayAsync())!.AsObject();
        original.Remove("meta");
        stored.Remove("meta");
        if (id is null)
        {
            stored.Remove("id");
        }
        var expected = Canonical(original);
        var actual = Canonical(stored);
        Assert.True(expected == actual, $"{file} differs after the round trip:\nexpected {Diff(expected, actual)}");
    }

    /// <summary>JSON with object members sorted and numbers in their shortest exact form, so equal content compares equal.</summary>
    private static string Canonical(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(node, sb);
        return sb.ToString();
    }

    private static void Write(JsonNode? node, StringBuilder sb)
    {
        switch (node)
        {
            case JsonObject o:
                sb.Append('{');
                foreach (var (k, v) in o.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    sb.Append(JsonSerializer.Serialize(k)).Append(':');
                    // base64Binary: whitespace inside the encoding is not content.
                    Write(k == "data" && v is JsonValue s && s.GetValueKind() == JsonValueKind.String
                        ? JsonValue.Create(string.Concat(s.GetValue<string>().Where(c => !char.IsWhiteSpace(c))))
                        : v, sb);
                    sb.Append(',');
                }
                sb.Append('}');
                break;
            case JsonArray a:
                sb.Append('[');
                foreach (var v in a)
                {
                    Write(v, sb);
                    sb.Append(',');
                }
                sb.Append(']');
                break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number:
                sb.Append(v.ToJsonString());
                break;
            default:
                sb.Append(node?.ToJsonString() ?? "null");
                break;
        }
    }

    private static string Diff(string a, string b)
    {
        var i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i])
        {
            i++;
        }
        var from = Math.Max(0, i - 80);
        return $"...{a[from..Math.Min(a.Length, i + 120)]}\nactual   ...{b[from..Math.Min(b.Length, i + 120)]}";
    }
}
