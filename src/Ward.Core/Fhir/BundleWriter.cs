using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// Writes Bundles straight to UTF-8, embedding the stored bytes of each resource as they are (no re-serialisation).
/// </summary>
internal sealed class BundleWriter : IDisposable
{
    private readonly ArrayBufferWriter<byte> _buffer = new(16 * 1024);
    private readonly Utf8JsonWriter _json;
    private bool _inEntries;

    public BundleWriter(string type, string id, DateTimeOffset timestamp)
    {
        _json = new Utf8JsonWriter(_buffer, new JsonWriterOptions { SkipValidation = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        _json.WriteStartObject();
        _json.WriteString("resourceType", "Bundle");
        _json.WriteString("id", id);
        _json.WriteStartObject("meta");
        _json.WriteString("lastUpdated", Instant(timestamp));
        _json.WriteEndObject();
        _json.WriteString("type", type);
    }

    public static string Instant(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'+00:00'", CultureInfo.InvariantCulture);

    public void Total(long total) => _json.WriteNumber("total", total);

    public void Links(IEnumerable<(string Relation, string Url)> links)
    {
        _json.WriteStartArray("link");
        foreach (var (rel, url) in links)
        {
            _json.WriteStartObject();
            _json.WriteString("relation", rel);
            _json.WriteString("url", url);
            _json.WriteEndObject();
        }
        _json.WriteEndArray();
    }

    private void StartEntry(string? fullUrl)
    {
        if (!_inEntries)
        {
            _json.WriteStartArray("entry");
            _inEntries = true;
        }
        _json.WriteStartObject();
        if (fullUrl is not null)
        {
            _json.WriteString("fullUrl", fullUrl);
        }
    }

    public void SearchEntry(string fullUrl, byte[] resource, string mode)
    {
        StartEntry(fullUrl);
        _json.WritePropertyName("resource");
        _json.WriteRawValue(resource, skipInputValidation: true);
        _json.WriteStartObject("search");
        _json.WriteString("mode", mode);
        _json.WriteEndObject();
        _json.WriteEndObject();
    }

    public void OutcomeEntry(byte[] outcome)
    {
        StartEntry(null);
        _json.WritePropertyName("resource");
        _json.WriteRawValue(outcome, skipInputValidation: true);
        _json.WriteStartObject("search");
        _json.WriteString("mode", "outcome");
        _json.WriteEndObject();
        _json.WriteEndObject();
    }

    public void HistoryEntry(string baseUrl, StoredVersion v)
    {
        StartEntry($"{baseUrl}/{v.Type}/{v.Id}");
        if (v.Data is not null)
        {
            _json.WritePropertyName("resource");
            _json.WriteRawValue(v.Data, skipInputValidation: true);
        }
        _json.WriteStartObject("request");
        _json.WriteString("method", v.Method);
        _json.WriteString("url", v.Method == "POST" ? v.Type : $"{v.Type}/{v.Id}");
        _json.WriteEndObject();
        _json.WriteStartObject("response");
        _json.WriteString("status", v.Deleted ? "204" : v.Version == 1 ? "201" : "200");
        _json.WriteString("etag", $"W/\"{v.Version}\"");
        _json.WriteString("lastModified", Instant(v.LastUpdated));
        _json.WriteEndObject();
        _json.WriteEndObject();
    }

    public void ResponseEntry(string? fullUrl, FhirResponse response, bool includeBody)
    {
        StartEntry(fullUrl);
        var isOutcome = response.Status >= 400;
        if (response.Body is not null && includeBody && !isOutcome)
        {
            _json.WritePropertyName("resource");
            _json.WriteRawValue(response.Body, skipInputValidation: true);
        }
        _json.WriteStartObject("response");
        _json.WriteString("status", response.StatusText);
        if (response.Location is not null) _json.WriteString("location", response.Location);
        if (response.ETag is not null) _json.WriteString("etag", response.ETag);
        if (response.LastModified is { } lm) _json.WriteString("lastModified", Instant(lm));
        if (isOutcome && response.Body is not null)
        {
            _json.WritePropertyName("outcome");
            _json.WriteRawValue(response.Body, skipInputValidation: true);
        }
        _json.WriteEndObject();
        _json.WriteEndObject();
    }

    public byte[] ToArray()
    {
        if (_inEntries)
        {
            _json.WriteEndArray();
        }
        _json.WriteEndObject();
        _json.Flush();
        return _buffer.WrittenSpan.ToArray();
    }

    public void Dispose() => _json.Dispose();
}
