using System.Globalization;
using Hl7.Fhir.Model;
using Hl7.Fhir.Rest;
using Ward.Core.Policy;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

internal sealed partial class FhirEngine
{
    private FhirResponse Search(StoreSession session, FhirRequest request, SearchQuery query)
    {
        var access = AccessOf(request);
        AggregateViews.CheckSearch(query, access);
        var sql = new SqlSearch(request.BaseUrl, store.Keys.Blind, store.Engine, access, session);
        var where = sql.Where(query);
        var matches = new List<StoredVersion>();
        List<long>? page = null;
        if (!query.SummaryCount && query.Count > 0)
        {
            var orderBy = sql.OrderBy(query);
            page = session.QueryRids($"SELECT r.rid FROM resource r WHERE {where} ORDER BY {orderBy} LIMIT {query.Count + 1} OFFSET {query.Offset}", sql.Args);
            matches = session.LoadCurrent(page.Take(query.Count).ToList());
        }
        long? total = null;
        if (query.Total != TotalMode.None || query.SummaryCount)
        {
            // A page that is not full (fetched with one row to spare) already tells the total; count only otherwise.
            total = page is not null && page.Count <= query.Count && (page.Count > 0 || query.Offset == 0)
                ? query.Offset + page.Count
                : Convert.ToInt64(session.Scalar($"SELECT count(*) FROM resource r WHERE {where}", sql.Args), CultureInfo.InvariantCulture);
        }
        var included = query.Includes.Count + query.RevIncludes.Count > 0 && matches.Count > 0
            ? Visible(session, request, session.LoadCurrent(SqlSearch.Includes(session, query, matches)))
            : [];
        var withheld = access.CountsOnly && total < access.Policy.SmallCell;

        request.Trail?.Touched(matches);
        request.Trail?.Touched(included);
        var path = query.CompartmentPatient is { } pid ? $"Patient/{pid}/{query.Type}" : query.Type;
        using var bundle = new BundleWriter("searchset", NewId(), clock.GetUtcNow());
        if (total is { } t && !withheld)
        {
            bundle.Total(t);
        }
        bundle.Links(PageLinks(request, path, query, total, matches.Count));
        foreach (var m in matches)
        {
            bundle.SearchEntry($"{request.BaseUrl}/{m.Type}/{m.Id}", Shape(m.Data!, query, access), "match");
        }
        foreach (var i in included)
        {
            bundle.SearchEntry($"{request.BaseUrl}/{i.Type}/{i.Id}", Shape(i.Data!, query, access), "include");
        }
        var issues = query.Warnings.Select(w => new OperationOutcome.IssueComponent
        {
            Severity = OperationOutcome.IssueSeverity.Warning,
            Code = OperationOutcome.IssueType.NotSupported,
            Diagnostics = w,
        }).ToList();
        if (withheld)
        {
            // Small cells are not answered exactly: a count below the threshold could single someone out.
            issues.Add(new OperationOutcome.IssueComponent
            {
                Severity = OperationOutcome.IssueSeverity.Information,
                Code = OperationOutcome.IssueType.Informational,
                Diagnostics = $"<{access.Policy.SmallCell}: fewer than {access.Policy.SmallCell} resources match; counts below {access.Policy.SmallCell} are not given (counts.small-cell in the access policy).",
            });
        }
        if (issues.Count > 0)
        {
            bundle.OutcomeEntry(FhirJson.Serialize(new OperationOutcome { Issue = issues }));
        }
        return FhirResponse.Of(200, bundle.ToArray());
    }

    private static IEnumerable<(string, string)> PageLinks(FhirRequest request, string path, SearchQuery query, long? total, int returned)
    {
        var self = $"{request.BaseUrl}/{path}";
        yield return ("self", self + "?" + SearchQuery.Link(request.Query, query.Offset, query.Count));
        if (query.Count == 0 || query.SummaryCount)
        {
            yield break;
        }
        yield return ("first", self + "?" + SearchQuery.Link(request.Query, 0, query.Count));
        if (query.Offset > 0)
        {
            yield return ("previous", self + "?" + SearchQuery.Link(request.Query, Math.Max(0, query.Offset - query.Count), query.Count));
        }
        var more = total is { } t ? query.Offset + returned < t : returned == query.Count;
        if (more)
        {
            yield return ("next", self + "?" + SearchQuery.Link(request.Query, query.Offset + query.Count, query.Count));
        }
        if (total is { } tt && tt > 0)
        {
            yield return ("last", self + "?" + SearchQuery.Link(request.Query, (int)((tt - 1) / query.Count * query.Count), query.Count));
        }
    }

    /// <summary>Applies _summary, _elements and the management view's masking; the stored bytes are served as they are when none applies.</summary>
    private static byte[] Shape(byte[] data, SearchQuery query, CallerAccess access)
    {
        if (access.Masked)
        {
            data = ManagementView.Mask(data, access.Blind);
        }
        if (query.Summary == SummaryType.False && query.Elements is null)
        {
            return data;
        }
        // Firely's serializer marks the output with the SUBSETTED tag itself.
        var resource = FhirJson.Parse(data);
        // The id and meta always come along: a client must be able to tell which resource it got.
        var elements = query.Elements?.Append("id").Append("meta").Distinct().ToArray();
        return FhirJson.Serialize(resource, query.Elements is null ? query.Summary : SummaryType.False, elements);
    }

    private FhirResponse History(StoreSession session, FhirRequest request, string? type, string? id)
    {
        if (AccessOf(request).Masked)
        {
            throw Decision.Deny("view.no-history", "The management view shows current versions only, masked: history is not available.").Refusal();
        }
        var count = SearchQuery.DefaultCount;
        var offset = 0;
        long? since = null;
        foreach (var (k, v) in request.Query)
        {
            switch (k)
            {
                case "_count":
                    count = Math.Min(SearchQuery.ParseInt(k, v, 0, int.MaxValue), SearchQuery.MaxCount);
                    break;
                case "_offset":
                    offset = SearchQuery.ParseInt(k, v, 0, int.MaxValue);
                    break;
                case "_since":
                    since = SearchValues.TryParseDateRange(v, out var lo, out _) && v.Contains('T')
                        ? lo
                        : throw FhirException.BadRequest($"_since must be an instant such as 2024-05-17T10:00:00Z, not '{v}'.");
                    break;
                case "_format" or "_pretty" or "_at" or "_list":
                    break;
                default:
                    if (request.Strict)
                    {
                        throw FhirException.NotSupported($"The history parameter '{k}' is not supported.");
                    }
                    break;
            }
        }
        if (id is not null)
        {
            var current = session.GetCurrent(type!, id) ?? throw FhirException.NotFound($"{type}/{id} does not exist.");
            if (current.Erased)
            {
                throw new Crypto.RecordErasedException(type!, id);
            }
        }
        // Across resources (service integrations only), the versions of resources the caller may not read are left out.
        var filter = new List<(string, object?)>();
        var where = id is null ? AccessOf(request).RowFilter(session, "r", v => { filter.Add(($"@f{filter.Count}", v)); return $"@f{filter.Count - 1}"; }) : null;
        var total = session.HistoryCount(type, id, since, where, filter);
        var versions = session.History(type, id, since, count, offset, where, filter);
        request.Trail?.Touched(versions);
        var path = type is null ? "_history" : id is null ? $"{type}/_history" : $"{type}/{id}/_history";
        using var bundle = new BundleWriter("history", NewId(), clock.GetUtcNow());
        bundle.Total(total);
        var self = $"{request.BaseUrl}/{path}?";
        var links = new List<(string, string)> { ("self", self + SearchQuery.Link(request.Query, offset, count)) };
        if (offset + versions.Count < total && count > 0)
        {
            links.Add(("next", self + SearchQuery.Link(request.Query, offset + count, count)));
        }
        if (offset > 0)
        {
            links.Add(("previous", self + SearchQuery.Link(request.Query, Math.Max(0, offset - count), count)));
        }
        bundle.Links(links);
        foreach (var v in versions)
        {
            bundle.HistoryEntry(request.BaseUrl, v);
        }
        return FhirResponse.Of(200, bundle.ToArray());
    }

    /// <summary>Patient/$everything: the patient, its compartment, and what they reference (_since, _type, _count).</summary>
    private FhirResponse Everything(StoreSession session, FhirRequest request, string patientId)
    {
        var count = 100;
        var offset = 0;
        long? since = null;
        HashSet<string>? types = null;
        foreach (var (k, v) in request.Query)
        {
            switch (k)
            {
                case "_count":
                    count = Math.Min(SearchQuery.ParseInt(k, v, 1, int.MaxValue), SearchQuery.MaxCount);
                    break;
                case "_offset":
                    offset = SearchQuery.ParseInt(k, v, 0, int.MaxValue);
                    break;
                case "_since":
                    since = SearchValues.TryParseDateRange(v, out var lo, out _) ? lo : throw FhirException.BadRequest($"_since must be an instant, not '{v}'.");
                    break;
                case "_type":
                    types = [.. v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
                    foreach (var t in types.Where(t => !SearchParameters.IsKnownType(t)))
                    {
                        throw FhirException.BadRequest($"_type names '{t}', which is not a FHIR R4 resource type.");
                    }
                    break;
                case "_format" or "_pretty":
                    break;
                default:
                    if (request.Strict)
                    {
                        throw FhirException.NotSupported($"$everything does not support the parameter '{k}'.");
                    }
                    break;
            }
        }
        var patient = session.GetCurrent("Patient", patientId) ?? throw FhirException.NotFound($"Patient/{patientId} does not exist.");
        if (patient.Erased)
        {
            throw new Crypto.RecordErasedException("Patient", patientId);
        }
        if (patient.Deleted)
        {
            throw FhirException.Gone($"Patient/{patientId} was deleted.");
        }
        var args = new List<(string, object?)> { ("@p", patientId) };
        var members = session.QueryRids("SELECT c.rid FROM ix_compartment c JOIN resource r ON r.rid = c.rid WHERE c.patient_id = @p AND r.deleted = 0 ORDER BY c.rid", args);
        var all = new List<long> { patient.Rid };
        var seen = new HashSet<long> { patient.Rid };
        all.AddRange(members.Where(seen.Add));
        if (all.Count > 0)
        {
            var referenced = new List<long>();
            foreach (var chunk in all.Chunk(500))
            {
                referenced.AddRange(session.QueryRids(
                    $"SELECT DISTINCT t.rid FROM ix_reference x JOIN resource t ON t.type = x.target_type AND t.id = x.target_id WHERE t.deleted = 0 AND x.rid IN ({string.Join(',', chunk)})", []));
            }
            referenced.Sort();
            if (request.Caller.ReachOf("*", Access.Interaction.Read) == Access.Reach.Patient)
            {
                // What the compartment refers to may belong to another patient (a linked or related person's record).
                referenced = Visible(session, request, session.LoadCurrent(referenced)).Select(v => v.Rid).ToList();
            }
            all.AddRange(referenced.Where(seen.Add));
        }
        // Each resource decided on its own: labels, Consent and the other patients a referenced resource belongs to.
        all = AccessOf(request).ReadableRids(session, all);
        var filtered = all;
        if (types is not null || since is not null)
        {
            filtered = [];
            foreach (var chunk in all.Chunk(500))
            {
                var rows = session.LoadCurrent(chunk);
                filtered.AddRange(rows.Where(r => (types is null || types.Contains(r.Type)) && (since is null || r.LastUpdatedTicks >= since)).Select(r => r.Rid));
            }
        }
        var page = session.LoadCurrent(filtered.Skip(offset).Take(count).ToList());
        request.Trail?.Touched(page);
        using var bundle = new BundleWriter("searchset", NewId(), clock.GetUtcNow());
        bundle.Total(filtered.Count);
        var self = $"{request.BaseUrl}/Patient/{patientId}/$everything?";
        var links = new List<(string, string)> { ("self", self + SearchQuery.Link(request.Query, offset, count)) };
        if (offset + count < filtered.Count)
        {
            links.Add(("next", self + SearchQuery.Link(request.Query, offset + count, count)));
        }
        bundle.Links(links);
        foreach (var r in page)
        {
            bundle.SearchEntry($"{request.BaseUrl}/{r.Type}/{r.Id}", r.Data!, "match");
        }
        return FhirResponse.Of(200, bundle.ToArray());
    }
}
