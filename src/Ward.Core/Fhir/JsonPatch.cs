using System.Text.Json;
using System.Text.Json.Nodes;

namespace Ward.Core.Fhir;

/// <summary>RFC 6902 JSON Patch over System.Text.Json nodes. Any failed operation fails the whole patch.</summary>
internal static class JsonPatch
{
    public static JsonNode Apply(JsonNode document, ReadOnlySpan<byte> patch)
    {
        JsonArray operations;
        try
        {
            operations = JsonNode.Parse(patch) as JsonArray
                ?? throw FhirException.BadRequest("A JSON Patch document must be a JSON array of operations.");
        }
        catch (JsonException e)
        {
            throw FhirException.BadRequest($"The JSON Patch is not well-formed JSON (line {(e.LineNumber ?? 0) + 1}): {e.Message}");
        }
        var root = document;
        var index = 0;
        foreach (var node in operations)
        {
            index++;
            if (node is not JsonObject op || op["op"]?.GetValue<string>() is not { } name || op["path"]?.GetValue<string>() is not { } path)
            {
                throw FhirException.BadRequest($"JSON Patch operation {index} needs 'op' and 'path'.");
            }
            switch (name)
            {
                case "add":
                    root = Add(root, path, Value(op, index));
                    break;
                case "remove":
                    Remove(root, path, index);
                    break;
                case "replace":
                    Remove(root, path, index);
                    root = Add(root, path, Value(op, index));
                    break;
                case "move":
                {
                    var from = From(op, index);
                    var value = Get(root, from, index);
                    Remove(root, from, index);
                    root = Add(root, path, value);
                    break;
                }
                case "copy":
                    root = Add(root, path, Get(root, From(op, index), index).DeepClone());
                    break;
                case "test":
                    if (!JsonNode.DeepEquals(Get(root, path, index), op["value"]))
                    {
                        throw new FhirException(System.Net.HttpStatusCode.UnprocessableEntity, Hl7.Fhir.Model.OperationOutcome.IssueType.Processing,
                            $"JSON Patch test operation {index} failed at '{path}': the value differs. Nothing was changed.");
                    }
                    break;
                default:
                    throw FhirException.BadRequest($"JSON Patch operation {index} has an unknown op '{name}'.");
            }
        }
        return root;
    }

    private static JsonNode? Value(JsonObject op, int index) =>
        op.TryGetPropertyValue("value", out var v) ? v?.DeepClone() : throw FhirException.BadRequest($"JSON Patch operation {index} needs a 'value'.");

    private static string From(JsonObject op, int index) =>
        op["from"]?.GetValue<string>() ?? throw FhirException.BadRequest($"JSON Patch operation {index} needs 'from'.");

    private static string[] Tokens(string path) =>
        path.Length == 0 ? [] : path[0] != '/'
            ? throw FhirException.BadRequest($"JSON Pointer '{path}' must start with '/'.")
            : path[1..].Split('/').Select(t => t.Replace("~1", "/").Replace("~0", "~")).ToArray();

    private static JsonNode Get(JsonNode root, string path, int index) => Walk(root, Tokens(path), path, index);

    private static JsonNode Parent(JsonNode root, string[] tokens, string path, int index) => Walk(root, tokens[..^1], path, index);

    private static JsonNode Walk(JsonNode root, string[] tokens, string path, int index)
    {
        JsonNode? current = root;
        foreach (var token in tokens)
        {
            current = current switch
            {
                JsonObject o when o.TryGetPropertyValue(token, out var child) => child,
                JsonArray a when int.TryParse(token, out var i) && i >= 0 && i < a.Count => a[i],
                _ => null,
            };
            if (current is null)
            {
                throw Unprocessable(index, path);
            }
        }
        return current!;
    }

    private static JsonNode Add(JsonNode root, string path, JsonNode? value)
    {
        var tokens = Tokens(path);
        if (tokens.Length == 0)
        {
            return value ?? throw FhirException.BadRequest("JSON Patch cannot replace the document with null.");
        }
        var parent = Parent(root, tokens, path, 0);
        var last = tokens[^1];
        switch (parent)
        {
            case JsonObject o:
                o[last] = value;
                break;
            case JsonArray a when last == "-":
                a.Add(value);
                break;
            case JsonArray a when int.TryParse(last, out var i) && i >= 0 && i <= a.Count:
                a.Insert(i, value);
                break;
            default:
                throw Unprocessable(0, path);
        }
        return root;
    }

    private static void Remove(JsonNode root, string path, int index)
    {
        var tokens = Tokens(path);
        if (tokens.Length == 0)
        {
            throw FhirException.BadRequest("JSON Patch cannot remove the whole resource.");
        }
        var parent = Parent(root, tokens, path, index);
        var last = tokens[^1];
        var removed = parent switch
        {
            JsonObject o => o.Remove(last),
            JsonArray a when int.TryParse(last, out var i) && i >= 0 && i < a.Count => RemoveAt(a, i),
            _ => false,
        };
        if (!removed)
        {
            throw Unprocessable(index, path);
        }
    }

    private static bool RemoveAt(JsonArray a, int i)
    {
        a.RemoveAt(i);
        return true;
    }

    private static FhirException Unprocessable(int index, string path) =>
        new(System.Net.HttpStatusCode.UnprocessableEntity, Hl7.Fhir.Model.OperationOutcome.IssueType.Processing,
            $"JSON Patch operation {index} refers to '{path}', which does not exist in the resource. Nothing was changed.");
}
