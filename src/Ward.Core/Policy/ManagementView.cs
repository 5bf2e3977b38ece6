using System.Text.Json;
using System.Text.Json.Nodes;
using Ward.Core.Crypto;

namespace Ward.Core.Policy;

/// <summary>
/// The management view (purpose HOPERAT): administrative resources with the patient replaced by a pseudonym and the
/// elements that identify people removed (its searches: <see cref="AggregateViews"/>).
/// </summary>
internal static class ManagementView
{
    /// <summary>Elements removed wherever they appear at the top of a resource: identifiers, narrative, contacts, free text.</summary>
    private static readonly string[] Removed = ["identifier", "text", "contained", "name", "telecom", "address", "photo", "contact", "extension", "modifierExtension", "note"];

    /// <summary>A patient's pseudonym in the management view: stable within the node, not reversible without the index key.</summary>
    public static string Pseudonym(Blinder blind, string patientId) => "p-" + blind.Hash('m', "management", patientId).Replace('_', '.');

    public static byte[] Mask(byte[] data, Blinder blind)
    {
        var root = JsonNode.Parse(data)!.AsObject();
        foreach (var name in Removed)
        {
            root.Remove(name);
        }
        if (root["resourceType"]?.GetValue<string>() == "Patient")
        {
            root["id"] = Pseudonym(blind, root["id"]!.GetValue<string>());
            Year(root, "birthDate");
            Year(root, "deceasedDateTime");
        }
        MaskReferences(root, blind);
        return JsonSerializer.SerializeToUtf8Bytes(root);
    }

    private static void Year(JsonObject o, string name)
    {
        if (o[name]?.GetValue<string>() is { Length: >= 4 } date)
        {
            o[name] = date[..4];
        }
    }

    /// <summary>Every reference to a Patient becomes a reference to its pseudonym, without display or identifier.</summary>
    private static void MaskReferences(JsonNode? node, Blinder blind)
    {
        switch (node)
        {
            case JsonObject o:
                if (o["reference"] is JsonValue v && v.TryGetValue<string>(out var reference) && PatientId(reference) is { } id)
                {
                    o["reference"] = "Patient/" + Pseudonym(blind, id);
                    o.Remove("display");
                    o.Remove("identifier");
                }
                foreach (var (_, child) in o.ToList())
                {
                    MaskReferences(child, blind);
                }
                break;
            case JsonArray a:
                foreach (var child in a)
                {
                    MaskReferences(child, blind);
                }
                break;
        }
    }

    private static string? PatientId(string reference)
    {
        var i = reference.LastIndexOf("Patient/", StringComparison.Ordinal);
        if (i < 0 || (i > 0 && reference[i - 1] != '/'))
        {
            return null;
        }
        var id = reference[(i + 8)..];
        var end = id.IndexOf('/');
        return end < 0 ? id : id[..end];
    }}
