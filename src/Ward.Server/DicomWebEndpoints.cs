using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;
using Ward.Core.Access;
using Ward.Core.Fhir;
using Ward.Core.Imaging;

namespace Ward.Server;

/// <summary>
/// DICOMweb (PS3.18) under <c>/dicomweb</c>: STOW-RS, QIDO-RS (studies, series, instances) and WADO-RS (instances,
/// metadata, frames). Callers authenticate as for FHIR; access is the policy's for ImagingStudy; errors are
/// OperationOutcomes from the one mapping of errors.
/// </summary>
internal static class DicomWebEndpoints
{
    private const string DicomJsonType = "application/dicom+json";

    /// <summary>Warning headers of a STOW-RS answer at most, one per failed instance.</summary>
    private const int MaxWarnings = 100;

    public static void Map(WebApplication app, FhirEndpoint fhir)
    {
        var engine = fhir.Engine;
        var limits = fhir.Limits;
        Handle(app, fhir, "POST", "/dicomweb/studies", (http, request, ct) => StowAsync(http, engine, limits, request, null, ct), heavy: true);
        Handle(app, fhir, "POST", "/dicomweb/studies/{study}", (http, request, ct) => StowAsync(http, engine, limits, request, Route(http, "study"), ct), heavy: true);

        Handle(app, fhir, "GET", "/dicomweb/studies", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Study, null, null, ct));
        Handle(app, fhir, "GET", "/dicomweb/series", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Series, null, null, ct));
        Handle(app, fhir, "GET", "/dicomweb/instances", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Instance, null, null, ct));
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Series, Route(http, "study"), null, ct));
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/instances", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Instance, Route(http, "study"), null, ct));
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}/instances", (http, request, ct) => QidoAsync(http, engine, request, ImagingLevel.Instance, Route(http, "study"), Route(http, "series"), ct));

        Handle(app, fhir, "GET", "/dicomweb/studies/{study}", (http, request, ct) => WadoAsync(http, engine, request, false, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}", (http, request, ct) => WadoAsync(http, engine, request, false, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}", (http, request, ct) => WadoAsync(http, engine, request, false, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/metadata", (http, request, ct) => WadoAsync(http, engine, request, true, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}/metadata", (http, request, ct) => WadoAsync(http, engine, request, true, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", (http, request, ct) => WadoAsync(http, engine, request, true, ct), heavy: true);
        Handle(app, fhir, "GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", (http, request, ct) => FramesAsync(http, engine, request, ct), heavy: true);
    }

    private static string? Route(HttpContext http, string name) => http.GetRouteValue(name) as string;

    /// <summary>Maps a route whose calls are authenticated, described as requests on ImagingStudy (for the policy and the audit trail), then run.</summary>
    /// <param name="heavy">STOW-RS and WADO-RS: counted against the caller's share of expensive requests (429 beyond), before the body is read.</param>
    private static void Handle(WebApplication app, FhirEndpoint fhir, string method, string pattern, Func<HttpContext, FhirRequest, CancellationToken, Task<IResult>> work, bool heavy = false)
    {
        RequestDelegate run = http => ApiCall.RunAsync(http, fhir, _ => true, "", async (caller, ct) =>
        {
            var request = FhirEndpoint.Describe(http, caller, "ImagingStudy");
            FailureAudit.Request(http, request);
            return await work(http, request, ct);
        }, heavy);
        app.MapMethods(pattern, [method], run);
    }

    // ------------------------------------------------------------------------------------------------------ STOW-RS

    private static async Task<IResult> StowAsync(HttpContext http, FhirEngine engine, Ward.Core.Node.RequestLimitsConfig limits, FhirRequest request, string? study, CancellationToken ct)
    {
        if (!MediaTypeHeaderValue.TryParse(http.Request.ContentType, out var media) || !media.MediaType.Equals("multipart/related", StringComparison.OrdinalIgnoreCase)
            || HeaderUtilities.RemoveQuotes(media.Boundary).Value is not { Length: > 0 } boundary)
            throw new FhirException(System.Net.HttpStatusCode.UnsupportedMediaType, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
                "STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary.");
        var type = media.Parameters.FirstOrDefault(p => p.Name.Equals("type", StringComparison.OrdinalIgnoreCase))?.Value.ToString().Trim('"');
        if (type is not null && !type.Equals("application/dicom", StringComparison.OrdinalIgnoreCase))
            throw new FhirException(System.Net.HttpStatusCode.UnsupportedMediaType, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
                $"STOW-RS here takes Part 10 instances (type=\"application/dicom\"), not {type}.");

        List<StoredInstance> stored;
        List<FailedInstance> failed;
        var reader = new MultipartReader(boundary, http.Request.Body) { HeadersLengthLimit = limits.MaxPartHeaderBytes, HeadersCountLimit = 16 };
        using (var parts = await Parts.ReadAsync(reader, limits.MaxMultipartParts, ct))
        {
            if (parts.Items.Count == 0) throw FhirException.BadRequest("The STOW-RS request holds no instance.");
            (stored, failed) = await engine.StoreImagesAsync(request, parts.Items, study, ct);
        }
        var baseUrl = DicomWebBase(http);
        var response = new DicomDataset();
        if (stored.Count > 0 && stored.Select(s => s.StudyUid).Distinct().Count() == 1)
            response.SetString(new DicomTag(0x0008_1190), DicomVR.UR, $"{baseUrl}/studies/{stored[0].StudyUid}");
        if (failed.Count > 0)
        {
            response.Set(new DicomElement(new DicomTag(0x0008_1198), [.. failed.Select(f => Reference(f.SopClass, f.SopInstance, null, f.Reason))]));
            // Why each instance failed, in words (PS3.18 section 8.6's Warning header), for the first hundred: the answer's
            // headers stay within what clients read (64 KiB), the response body names every failure.
            http.Response.Headers.Warning = failed.Take(MaxWarnings).Select(f => $"299 ward \"{f.SopInstance ?? "instance"}: {Ascii(f.Why)}\"")
                .Concat(failed.Count > MaxWarnings ? [$"299 ward \"{failed.Count - MaxWarnings} more instance(s) failed; see the response body\""] : []).ToArray();
        }
        response.Set(new DicomElement(new DicomTag(0x0008_1199), [.. stored.Select(s => Reference(s.SopClass, s.SopInstance,
            $"{baseUrl}/studies/{s.StudyUid}/series/{s.SeriesUid}/instances/{s.SopInstance}", null))]));
        var status = failed.Count == 0 ? 200 : stored.Count == 0 ? 409 : 202;
        return Results.Text(Encoding.UTF8.GetString(Json(json => DicomJson.Write(json, response))), DicomJsonType, Encoding.UTF8, status);
    }

    /// <summary>
    /// The parts of a multipart/related body, each application/dicom, read into pooled buffers (an image is hundreds of
    /// kilobytes: fresh arrays for each would cost page faults and zeroing) that are cleared and returned when the
    /// request is done. A body that is not well-formed multipart answers 400; more than <c>max-multipart-parts</c> parts
    /// 413. Each part's buffer starts small and doubles, the smaller one going back to the pool at once, so what the parts
    /// hold is at most twice their bytes plus a small buffer each, whatever the count of parts (an empty part costs 4 KiB,
    /// not the 256 KiB it once did: 20,000 of them held 5 GB).
    /// </summary>
    private sealed class Parts : IDisposable
    {
        private const int FirstBuffer = 4 * 1024;
        private readonly List<byte[]> _rented = [];

        public List<ReadOnlyMemory<byte>> Items { get; } = [];

        public static async Task<Parts> ReadAsync(MultipartReader reader, int maxParts, CancellationToken ct)
        {
            var parts = new Parts();
            try
            {
                while (await reader.ReadNextSectionAsync(ct) is { } section)
                {
                    if (parts.Items.Count == maxParts)
                        throw FhirException.TooLarge($"The STOW-RS request holds more than {maxParts:N0} parts (limits: max-multipart-parts in ward.yaml); send the instances in several requests.");
                    if (section.ContentType is { } partType && !partType.StartsWith("application/dicom", StringComparison.OrdinalIgnoreCase))
                        throw new FhirException(System.Net.HttpStatusCode.UnsupportedMediaType, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
                            $"A part is {partType}; each part must be application/dicom.");
                    await parts.ReadPartAsync(section.Body, ct);
                }
                return parts;
            }
            catch (Exception e)
            {
                parts.Dispose();
                if (e is IOException and not BadHttpRequestException or InvalidDataException)
                    throw FhirException.BadRequest($"The multipart/related body is malformed: {e.Message}");
                throw;
            }
        }

        private async Task ReadPartAsync(Stream body, CancellationToken ct)
        {
            var buffer = ArrayPool<byte>.Shared.Rent(FirstBuffer);
            var length = 0;
            try
            {
                int read;
                while ((read = await body.ReadAsync(buffer.AsMemory(length), ct)) > 0)
                {
                    length += read;
                    if (length == buffer.Length)
                    {
                        var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        buffer.AsSpan(0, length).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
                        buffer = larger;
                    }
                }
            }
            catch
            {
                ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
                throw;
            }
            _rented.Add(buffer);
            Items.Add(buffer.AsMemory(0, length));
        }

        public void Dispose()
        {
            foreach (var buffer in _rented)
                ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
            _rented.Clear();
        }
    }

    /// <summary>A reason as a Warning header's quoted text can carry it.</summary>
    private static string Ascii(string text) => new([.. text.Select(c => c is >= ' ' and < '\x7f' and not '"' and not '\\' ? c : '?')]);

    private static DicomDataset Reference(string? sopClass, string? sopInstance, string? url, ushort? reason)
    {
        var item = new DicomDataset();
        if (sopClass is not null) item.SetString(new DicomTag(0x0008_1150), DicomVR.UI, sopClass);
        if (sopInstance is not null) item.SetString(new DicomTag(0x0008_1155), DicomVR.UI, sopInstance);
        if (url is not null) item.SetString(new DicomTag(0x0008_1190), DicomVR.UR, url);
        if (reason is { } r) item.SetUInt16(new DicomTag(0x0008_1197), r);
        return item;
    }

    // ------------------------------------------------------------------------------------------------------ QIDO-RS

    private static readonly DicomTag[] StudyFields =
    [
        DicomTag.StudyDate, DicomTag.StudyTime, DicomTag.AccessionNumber, DicomTag.ReferringPhysicianName, DicomTag.PatientName,
        DicomTag.PatientId, DicomTag.PatientBirthDate, DicomTag.PatientSex, DicomTag.StudyInstanceUid, DicomTag.StudyId, DicomTag.StudyDescription,
    ];

    private static readonly DicomTag[] SeriesFields = [DicomTag.Modality, DicomTag.SeriesDescription, DicomTag.SeriesInstanceUid, DicomTag.SeriesNumber, DicomTag.StudyInstanceUid];

    private static readonly DicomTag[] InstanceFields =
    [
        DicomTag.SopClassUid, DicomTag.SopInstanceUid, DicomTag.InstanceNumber, DicomTag.Rows, DicomTag.Columns, DicomTag.NumberOfFrames,
        DicomTag.StudyInstanceUid, DicomTag.SeriesInstanceUid,
    ];

    private static async Task<IResult> QidoAsync(HttpContext http, FhirEngine engine, FhirRequest request, ImagingLevel level, string? study, string? series, CancellationToken ct)
    {
        var query = ParseQuery(http.Request.Query, study, series);
        var matches = await engine.QueryImagesAsync(request, query, level, ct);
        var baseUrl = DicomWebBase(http);
        var fields = level switch { ImagingLevel.Study => StudyFields, ImagingLevel.Series => SeriesFields, _ => InstanceFields };
        var body = Json(json =>
        {
            json.WriteStartArray();
            foreach (var match in matches)
            {
                var first = match.First.File.Dataset;
                var result = new DicomDataset { Charset = first.Charset };
                if (first[DicomTag.SpecificCharacterSet] is { } charset) result.Set(charset);
                foreach (var element in first)
                {
                    if (query.IncludeAll ? element.Tag != DicomTag.PixelData && !element.Tag.IsPrivate : fields.Contains(element.Tag) || query.IncludeFields.Contains(element.Tag))
                        result.Set(element);
                }
                var (studyUid, seriesUid) = (first.GetString(DicomTag.StudyInstanceUid), first.GetString(DicomTag.SeriesInstanceUid));
                switch (level)
                {
                    case ImagingLevel.Study:
                        result.SetString(DicomTag.ModalitiesInStudy, DicomVR.CS, string.Join('\\', match.Modalities));
                        result.SetString(new DicomTag(0x0020_1206), DicomVR.IS, match.Series.ToString(CultureInfo.InvariantCulture));
                        result.SetString(new DicomTag(0x0020_1208), DicomVR.IS, match.Instances.ToString(CultureInfo.InvariantCulture));
                        result.SetString(new DicomTag(0x0008_1190), DicomVR.UR, $"{baseUrl}/studies/{studyUid}");
                        break;
                    case ImagingLevel.Series:
                        result.SetString(new DicomTag(0x0020_1209), DicomVR.IS, match.Instances.ToString(CultureInfo.InvariantCulture));
                        result.SetString(new DicomTag(0x0008_1190), DicomVR.UR, $"{baseUrl}/studies/{studyUid}/series/{seriesUid}");
                        break;
                    default:
                        result.SetString(new DicomTag(0x0008_1190), DicomVR.UR, $"{baseUrl}/studies/{studyUid}/series/{seriesUid}/instances/{first.GetString(DicomTag.SopInstanceUid)}");
                        break;
                }
                DicomJson.Write(json, result);
            }
            json.WriteEndArray();
        });
        return Results.Bytes(body, DicomJsonType);
    }

    /// <summary>The attributes QIDO-RS matches on (each also accepted as its tag, GGGGEEEE), and the other query keys.</summary>
    private static readonly string[] MatchingAttributes =
        ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate", "ModalitiesInStudy", "Modality"];

    private static readonly string[] Controls = ["limit", "offset", "includefield", "fuzzymatching"];

    internal static ImagingQuery ParseQuery(IQueryCollection q, string? study, string? series)
    {
        foreach (var key in q.Keys)
        {
            var known = Controls.Contains(key, StringComparer.Ordinal) || MatchingAttributes.Contains(key, StringComparer.Ordinal)
                || (key.Length == 8 && DicomTag.TryParse(key, out var tag) && MatchingAttributes.Contains(DicomDictionary.Keyword(tag), StringComparer.Ordinal));
            if (!known)
                throw FhirException.BadRequest($"QIDO-RS matching key '{key}' is not supported here; Ward matches on {string.Join(", ", MatchingAttributes.Concat(Controls))}.");
        }
        string? One(string name)
        {
            var value = q.TryGetValue(name, out var v) ? v.ToString()
                : DicomDictionary.TryTagOf(name, out var tag) && q.TryGetValue(tag.Hex, out var w) ? w.ToString() : null;
            return string.IsNullOrEmpty(value) ? null : value;
        }
        int Number(string name, int fallback, int max)
        {
            var text = One(name);
            if (text is null) return fallback;
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > max)
                throw FhirException.BadRequest($"{name} must be a whole number from 0 to {max}.");
            return n;
        }
        var include = new List<DicomTag>();
        var all = false;
        foreach (var field in q.TryGetValue("includefield", out var fields) ? fields.SelectMany(f => (f ?? "").Split(',')) : [])
        {
            var name = field.Trim();
            if (name == "all") all = true;
            else if (DicomTag.TryParse(name, out var tag) || DicomDictionary.TryTagOf(name, out tag)) include.Add(tag);
            else throw FhirException.BadRequest($"includefield '{name}' is neither a tag (GGGGEEEE) nor a keyword of the DICOM dictionary.");
        }
        var studyUid = study ?? One("StudyInstanceUID");
        return new ImagingQuery(studyUid, series ?? One("SeriesInstanceUID"), One("SOPInstanceUID"), One("PatientID"), One("PatientName"),
            One("AccessionNumber"), DateRange(One("StudyDate")), One("ModalitiesInStudy") ?? One("Modality"),
            Number("limit", 1000, 1000), Number("offset", 0, int.MaxValue), include, all);
    }

    /// <summary>A DICOM date or range (YYYYMMDD, YYYYMMDD-, -YYYYMMDD, YYYYMMDD-YYYYMMDD) as UTC ticks, whole days.</summary>
    private static (long, long)? DateRange(string? text)
    {
        if (text is null) return null;
        var dash = text.IndexOf('-', StringComparison.Ordinal);
        var (from, to) = dash < 0 ? (text, text) : (text[..dash], text[(dash + 1)..]);
        long Parse(string value, bool end)
        {
            if (!DateTime.TryParseExact(value, "yyyyMMdd", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var day))
                throw FhirException.BadRequest($"StudyDate '{text}' is not a DICOM date or range (YYYYMMDD, YYYYMMDD-YYYYMMDD, open at either end).");
            return end ? day.AddDays(1).Ticks - 1 : day.Ticks;
        }
        return (from.Length == 0 ? DateTime.MinValue.Ticks : Parse(from, false), to.Length == 0 ? DateTime.MaxValue.Ticks : Parse(to, true));
    }

    // ------------------------------------------------------------------------------------------------------ WADO-RS

    private static async Task<IResult> WadoAsync(HttpContext http, FhirEngine engine, FhirRequest request, bool metadata, CancellationToken ct)
    {
        var (study, series, instance) = (Route(http, "study")!, Route(http, "series"), Route(http, "instance"));
        if (!metadata) RequireAccept(http, "application/dicom");
        var (found, withheld) = await engine.RetrieveImagesAsync(request, study, series, instance, ct);
        if (withheld.Count > 0)
            http.Response.Headers.Warning = $"299 ward \"{withheld.Count} instance(s) withheld from research: {Ascii(withheld[0])}\"";
        if (metadata)
        {
            var baseUrl = DicomWebBase(http);
            return Results.Bytes(Json(json =>
            {
                json.WriteStartArray();
                foreach (var i in found)
                {
                    var ds = i.File.Dataset;
                    DicomJson.Write(json, ds, bulkDataUri: $"{baseUrl}/studies/{study}/series/{ds.GetString(DicomTag.SeriesInstanceUid)}/instances/{ds.GetString(DicomTag.SopInstanceUid)}");
                }
                json.WriteEndArray();
            }), DicomJsonType);
        }
        return Multipart(found.Select(i => ((ReadOnlyMemory<byte>)i.Bytes, "application/dicom")), "application/dicom");
    }

    private static async Task<IResult> FramesAsync(HttpContext http, FhirEngine engine, FhirRequest request, CancellationToken ct)
    {
        var numbers = new List<int>();
        foreach (var part in Route(http, "frames")!.Split(','))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                throw FhirException.BadRequest($"Frame numbers are whole numbers from 1, separated by commas; '{part}' is not one.");
            numbers.Add(n);
        }
        RequireAccept(http, "application/octet-stream");
        var (found, _) = await engine.RetrieveImagesAsync(request, Route(http, "study")!, Route(http, "series"), Route(http, "instance"), ct);
        var ds = found[0].File.Dataset;
        var pixels = ds[DicomTag.PixelData] ?? throw FhirException.NotFound("This instance has no pixel data.");
        var frames = Math.Max(1, ds.GetInt(DicomTag.NumberOfFrames) ?? 1);
        if (numbers.Any(n => n > frames)) throw FhirException.NotFound($"This instance has {frames} frame(s).");
        List<ReadOnlyMemory<byte>> selected;
        if (pixels.Fragments is { } fragments)
        {
            var data = fragments.Skip(1).ToList(); // the first item is the basic offset table
            if (frames == 1) selected = [Concat(data)];
            else if (data.Count == frames) selected = [.. numbers.Select(n => data[n - 1])];
            else throw new FhirException(System.Net.HttpStatusCode.NotAcceptable, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
                "This instance's frames span several fragments; retrieve the whole instance instead.");
        }
        else
        {
            var (rows, columns, samples, bits) = (ds.GetInt(DicomTag.Rows) ?? 0, ds.GetInt(DicomTag.Columns) ?? 0, ds.GetInt(DicomTag.SamplesPerPixel) ?? 1, ds.GetInt(DicomTag.BitsAllocated) ?? 8);
            var size = rows * columns * samples * (bits / 8);
            if (size <= 0 || bits % 8 != 0 || (long)size * frames > pixels.Value.Length)
                throw new FhirException(System.Net.HttpStatusCode.NotAcceptable, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
                    "This instance's frame size cannot be worked out from its image attributes; retrieve the whole instance instead.");
            selected = [.. numbers.Select(n => pixels.Value.Slice((n - 1) * size, size))];
        }
        return Multipart(selected.Select(f => (f, "application/octet-stream")), "application/octet-stream");
    }

    private static ReadOnlyMemory<byte> Concat(List<ReadOnlyMemory<byte>> parts)
    {
        if (parts.Count == 1) return parts[0];
        var all = new byte[parts.Sum(p => p.Length)];
        var at = 0;
        foreach (var p in parts) { p.Span.CopyTo(all.AsSpan(at)); at += p.Length; }
        return all;
    }

    private static void RequireAccept(HttpContext http, string type)
    {
        var accept = http.Request.Headers.Accept.ToString();
        if (accept.Length == 0 || accept.Contains("*/*", StringComparison.Ordinal) || accept.Contains("multipart/related", StringComparison.OrdinalIgnoreCase)) return;
        throw new FhirException(System.Net.HttpStatusCode.NotAcceptable, Hl7.Fhir.Model.OperationOutcome.IssueType.NotSupported,
            $"This resource is served as multipart/related; type=\"{type}\".");
    }

    private static IResult Multipart(IEnumerable<(ReadOnlyMemory<byte> Bytes, string Type)> parts, string type)
    {
        var boundary = "ward-" + Guid.NewGuid().ToString("N");
        var body = new ArrayBufferWriter<byte>();
        foreach (var (bytes, partType) in parts)
        {
            body.Write(Encoding.ASCII.GetBytes($"--{boundary}\r\nContent-Type: {partType}\r\nContent-Length: {bytes.Length}\r\n\r\n"));
            body.Write(bytes.Span);
            body.Write("\r\n"u8);
        }
        body.Write(Encoding.ASCII.GetBytes($"--{boundary}--\r\n"));
        return Results.Bytes(body.WrittenMemory.ToArray(), $"multipart/related; type=\"{type}\"; boundary={boundary}");
    }

    private static string DicomWebBase(HttpContext http) => $"{http.Request.Scheme}://{http.Request.Host}{http.Request.PathBase}/dicomweb";

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer)) write(json);
        return buffer.WrittenSpan.ToArray();
    }
}
