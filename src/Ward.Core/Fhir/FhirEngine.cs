using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;
using Hl7.Fhir.Rest;
using Ward.Core.Access;
using Ward.Core.Audit;
using Ward.Core.Policy;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

/// <summary>
/// The FHIR R4 interactions over the record store. HTTP requests and batch/transaction entries both arrive here as
/// <see cref="FhirRequest"/>s, so a transaction entry behaves exactly like the same request sent alone.
/// </summary>
internal sealed partial class FhirEngine(RecordStore store, AuditLog audit, TimeProvider clock)
{
    private readonly CallerAccess.FactCache _facts = new(store);

    /// <summary>Set by <c>ward serve --read-only</c>: every write answers 503 with this reason; reads, and their audit, go on.</summary>
    public string? ReadOnlyReason { get; set; }

    private void RefuseWriteWhenReadOnly()
    {
        if (ReadOnlyReason is { } reason)
        {
            throw new FhirException(HttpStatusCode.ServiceUnavailable, OperationOutcome.IssueType.Transient, reason);
        }
    }

    /// <summary>
    /// Runs one interaction and records it in the audit log: a write's records commit in its own transaction, a read's
    /// are durable before it returns, and a refusal or failure is recorded before the error goes back. If the audit log
    /// cannot be written, the interaction fails and keeps nothing.
    /// </summary>
    public async Task<FhirResponse> HandleAsync(FhirRequest request, CancellationToken ct)
    {
        var trail = request.Trail = new AuditTrail(request, store.Keys.Blind);
        try
        {
            return await RunAsync(request, trail, ct);
        }
        catch (Exception e) when (e is not AuditUnavailableException and not OperationCanceledException)
        {
            var (status, _) = Outcomes.FromException(e);
            var owner = trail.Target is var (type, id) && SearchParameters.IsKnownType(type) && ReferenceParser.IsValidId(id)
                ? await store.ReadAsync(s => s.OwnerOf(type, id), ct)
                : null;
            await audit.RecordAsync(trail.Records((int)status, Now(), owner));
            throw;
        }
    }

    private async Task<FhirResponse> RunAsync(FhirRequest request, AuditTrail trail, CancellationToken ct)
    {
        var access = AccessFor(request);
        if (request.Method == "POST" && request.Path.Length == 0)
        {
            return await BundleAsync(request, ct);
        }
        var write = request.Method is "PUT" or "PATCH" or "DELETE" || (request.Method == "POST" && !request.Path.EndsWith("/_search", StringComparison.Ordinal));
        if (!write)
        {
            if (request.Path.EndsWith("/" + AccessLog, StringComparison.Ordinal))
            {
                // Proofs against a checkpoint that covers every entry committed so far.
                await audit.CheckpointAsync(ct);
            }
            if (access.Justification is not null)
            {
                // The opening is recorded (and committed) before the read it opens.
                await store.WriteAsync(s => { OpenGlass(s, request); return true; }, ct);
            }
            var response = await store.ReadAsync(s => Dispatch(request, s), ct);
            await audit.RecordAsync(trail.Records(response.Status, Now()));
            return response;
        }
        RefuseWriteWhenReadOnly();
        PreparedVersion? create = null;
        if (request.Method == "POST" && request.IfNoneExist is null && request.Path.Length > 0 && !request.Path.Contains('/'))
        {
            // A plain create depends on nothing stored: serialise and index it before taking the write lock.
            create = Prepare(request.Path, NewId(), RequireResource(request, request.Path), null, "POST");
        }
        return await store.WriteAsync(s =>
        {
            trail.Restart();
            access.ForgetFacts();
            OpenGlass(s, request);
            var response = create is null ? Dispatch(request, s) : Apply(s, create, request);
            audit.Append(s, trail.Records(response.Status, Now()));
            return response;
        }, ct);
    }

    /// <summary>Routes one interaction within a session (the writer's, for writes).</summary>
    private FhirResponse Dispatch(FhirRequest request, StoreSession s)
    {
        var segments = request.Path.Length == 0 ? [] : request.Path.Split('/');
        switch (request.Method, segments.Length)
        {
            case ("GET", 1) when segments[0] == "metadata":
                return FhirResponse.Of(200, CapabilityStatementBuilder.Bytes);
            case ("GET", 1) when segments[0] == "_history":
                PermitHistory(request, null);
                return History(s, request, null, null);
            case ("POST", 0):
                throw FhirException.BadRequest("A batch or transaction cannot be nested in another.");
        }
        if (segments.Length == 0)
        {
            throw FhirException.NotSupported("Search at the server base is not supported: search one resource type, such as GET [base]/Patient?name=...");
        }
        var type = segments[0];
        if (!SearchParameters.IsKnownType(type))
        {
            throw new FhirException(HttpStatusCode.NotFound, OperationOutcome.IssueType.NotSupported, $"'{type}' is not a FHIR R4 resource type.");
        }
        CheckId(segments);
        if (segments.Length >= 2 && !segments[1].StartsWith('_'))
        {
            request.Trail?.Target = (type, segments[1]);
        }
        if (type == "AuditEvent")
        {
            return AuditEvents(s, request, segments);
        }
        var count = request.Query.Any(kv => kv.Key == "_summary" && kv.Value == "count");
        switch (request.Method, segments.Length)
        {
            case ("GET", 1):
            case ("POST", 2) when segments[1] == "_search":
                return Search(s, request, SearchQuery.Parse(type, request.Query, request.Strict, SearchCompartment(request, type, null, count)));
            case ("POST", 1):
                Permit(request, type, Interaction.Create);
                return Create(s, type, RequireResource(request, type), request.IfNoneExist, request);
            case ("PUT", 1):
                Permit(request, type, Interaction.Update);
                return ConditionalUpdate(s, type, request);
            case ("DELETE", 1):
                Permit(request, type, Interaction.Delete);
                return ConditionalDelete(s, type, request);
            case ("GET", 2) when segments[1] == "_history":
                PermitHistory(request, type);
                return History(s, request, type, null);
            case ("GET", 2):
                return Read(s, request, type, segments[1]);
            case ("PUT", 2):
                Permit(request, type, Interaction.Update);
                return Update(s, type, segments[1], RequireResource(request, type), request.IfMatch, request);
            case ("PATCH", 2):
                Permit(request, type, Interaction.Update);
                return Patch(s, type, segments[1], request);
            case ("DELETE", 2):
                return Delete(s, type, segments[1], request);
            case ("GET", 3) when segments[2] == "_history":
                PermitRead(s, request, type, segments[1]);
                return History(s, request, type, segments[1]);
            case ("GET", 3) when type == "Patient" && segments[2] == AccessLog:
                return AccessLogOf(s, request, segments[1]);
            case ("GET", 3) when type == "Patient" && segments[2] == "$everything":
                PermitEverything(s, request, segments[1]);
                request.Trail?.Patient(segments[1]);
                return Everything(s, request, segments[1]);
            case ("GET", 3) when type == "Patient" && SearchParameters.IsKnownType(segments[2]):
                request.Trail?.Patient(segments[1]);
                return Search(s, request, SearchQuery.Parse(segments[2], request.Query, request.Strict, SearchCompartment(request, segments[2], segments[1], count)));
            case ("GET", 4) when segments[2] == "_history":
                PermitRead(s, request, type, segments[1]);
                return VRead(s, request, type, segments[1], segments[3]);
        }
        throw new FhirException(HttpStatusCode.NotFound, OperationOutcome.IssueType.NotSupported,
            $"{request.Method} {request.Path} is not a supported FHIR interaction.");
    }

    /// <summary>Refuses a path whose second segment is neither an operation, a _keyword nor a valid id.</summary>
    internal static void CheckId(string[] segments)
    {
        if (segments.Length >= 2 && !segments[1].StartsWith('_') && !segments[1].StartsWith('$') && !ReferenceParser.IsValidId(segments[1]))
        {
            throw FhirException.BadRequest($"'{segments[1]}' is not a valid resource id (1 to 64 characters: letters, digits, '-' and '.').");
        }
    }

    private static Resource RequireResource(FhirRequest request, string type)
    {
        var resource = request.Resource ?? throw FhirException.BadRequest($"A {type} resource was expected in the request body.");
        if (resource.TypeName != type)
        {
            throw FhirException.BadRequest($"The body is a {resource.TypeName}, but the URL names {type}.");
        }
        return resource;
    }

    // ---------------------------------------------------------------- reads

    private static FhirResponse Read(StoreSession session, FhirRequest request, string type, string id)
    {
        var v = session.Read(type, id);
        PermitRead(session, request, type, id, v?.Rid, v?.Deleted == true);
        v = v ?? throw NotOpen(request, type, id);
        request.Trail?.Saw(v);
        if (v.Deleted)
        {
            throw FhirException.Gone($"{type}/{id} was deleted (version {v.Version}).");
        }
        if (request.IfNoneMatch is { } inm && inm == ETag(v.Version))
        {
            return new FhirResponse { Status = 304, ETag = ETag(v.Version), LastModified = v.LastUpdated };
        }
        if (request.IfModifiedSince is { } ims && v.LastUpdatedTicks / TimeSpan.TicksPerSecond <= ims.UtcTicks / TimeSpan.TicksPerSecond)
        {
            return new FhirResponse { Status = 304, ETag = ETag(v.Version), LastModified = v.LastUpdated };
        }
        return Ok(v, request);
    }

    private static FhirResponse VRead(StoreSession session, FhirRequest request, string type, string id, string vid)
    {
        if (!int.TryParse(vid, NumberStyles.None, CultureInfo.InvariantCulture, out var version))
        {
            throw FhirException.BadRequest($"'{vid}' is not a version id of this server (versions are whole numbers).");
        }
        var v = session.ReadVersion(type, id, version)
            ?? throw FhirException.NotFound(session.GetCurrent(type, id) is null ? NotOpen(request, type, id).Message : $"{type}/{id} has no version {version}.");
        request.Trail?.Saw(v);
        if (v.Deleted)
        {
            throw FhirException.Gone($"Version {version} of {type}/{id} is a deletion.");
        }
        return Ok(v, request);
    }

    private static FhirResponse Ok(StoredVersion v, FhirRequest request) => new()
    {
        Status = 200,
        Body = request.Access?.Masked == true ? ManagementView.Mask(v.Data!, request.Access.Blind) : v.Data,
        ETag = ETag(v.Version),
        LastModified = v.LastUpdated,
        Location = $"{v.Type}/{v.Id}/_history/{v.Version}",
    };

    public static string ETag(int version) => $"W/\"{version.ToString(CultureInfo.InvariantCulture)}\"";

    // ---------------------------------------------------------------- writes

    private long Now()
    {
        var ticks = clock.GetUtcNow().UtcTicks;
        return ticks - ticks % TimeSpan.TicksPerMillisecond;
    }

    private FhirResponse Create(StoreSession s, string type, Resource resource, string? ifNoneExist, FhirRequest request, string? assignedId = null)
    {
        if (ifNoneExist is not null)
        {
            var existing = Match(s, type, ifNoneExist, request, "If-None-Exist");
            if (existing.Count == 1)
            {
                var found = s.LoadCurrent(existing)[0];
                PermitRead(s, request, found.Type, found.Id);
                request.Trail?.Saw(found);
                return Ok(found, request);
            }
            if (existing.Count > 1)
            {
                throw FhirException.PreconditionFailed($"If-None-Exist '{ifNoneExist}' matches {existing.Count} resources; it must match at most one.");
            }
        }
        var id = assignedId ?? NewId();
        return Store(s, type, id, resource, null, "POST", request);
    }

    private FhirResponse Update(StoreSession s, string type, string id, Resource resource, string? ifMatch, FhirRequest request)
    {
        if (resource.Id is null)
        {
            throw FhirException.BadRequest($"The {type} in the body has no id; an update must carry the id of the URL ({id}).");
        }
        if (resource.Id != id)
        {
            throw FhirException.BadRequest($"The id in the body ({resource.Id}) differs from the id in the URL ({id}).");
        }
        var current = s.GetCurrent(type, id);
        if (current is { } stored)
        {
            try
            {
                PermitStored(s, request, type, id, stored, Interaction.Update);
            }
            catch (FhirException hidden) when (hidden.Status == HttpStatusCode.NotFound && ifMatch is not null)
            {
                // With If-Match, a resource that does not exist answers 412: so does one the caller may not read.
                CheckIfMatch(type, id, ifMatch, null);
            }
        }
        CheckIfMatch(type, id, ifMatch, current);
        return Store(s, type, id, resource, current, "PUT", request);
    }

    private static void CheckIfMatch(string type, string id, string? ifMatch, CurrentInfo? current)
    {
        if (ifMatch is null)
        {
            return;
        }
        var expected = ifMatch.Trim();
        if (current is not { Deleted: false } c)
        {
            throw FhirException.PreconditionFailed($"If-Match {expected} cannot hold: {type}/{id} does not exist.");
        }
        if (expected != ETag(c.Version) && expected != $"\"{c.Version}\"" && expected != c.Version.ToString(CultureInfo.InvariantCulture))
        {
            throw new FhirException(HttpStatusCode.PreconditionFailed, OperationOutcome.IssueType.Conflict,
                $"Version conflict: If-Match is {expected} but {type}/{id} is at version {c.Version}. Read it again and reapply the change.");
        }
    }

    private FhirResponse Store(StoreSession s, string type, string id, Resource resource, CurrentInfo? current, string method, FhirRequest request) =>
        Apply(s, Prepare(type, id, resource, current, method), request);

    /// <summary>A version ready to be written: the CPU-heavy part (serialisation, indexing), done outside the write lock where possible.</summary>
    private sealed record PreparedVersion(string Type, string Id, CurrentInfo? Current, int Version, long Ticks, string Method, byte[] Bytes, IndexSet Index);

    /// <summary>The number and time of the version after <paramref name="current"/> (none: the first), never earlier than it.</summary>
    private (int Version, long Ticks) Next(CurrentInfo? current) =>
        (current is { } c ? c.Version + 1 : 1, Math.Max(Now(), current?.LastUpdatedTicks + TimeSpan.TicksPerMillisecond ?? 0));

    private PreparedVersion Prepare(string type, string id, Resource resource, CurrentInfo? current, string method)
    {
        var (version, now) = Next(current);
        resource.Id = id;
        resource.Meta ??= new Meta();
        resource.Meta.VersionId = version.ToString(CultureInfo.InvariantCulture);
        resource.Meta.LastUpdated = new DateTimeOffset(now, TimeSpan.Zero);
        return new PreparedVersion(type, id, current, version, now, method, FhirJson.Serialize(resource), Indexer.Index(resource, store.Keys.Blind));
    }

    private static FhirResponse Apply(StoreSession s, PreparedVersion p, FhirRequest request)
    {
        PermitWrite(s, request, p.Type, p.Id, p.Current, p.Method == "POST" ? Interaction.Create : Interaction.Update, p.Index);
        var (_, digest) = s.Put(p.Type, p.Id, p.Current, p.Version, p.Ticks, p.Method, p.Bytes, p.Index);
        request.Trail?.Wrote(p.Type, p.Id, p.Version, digest, p.Index.Owner);
        return new FhirResponse
        {
            Status = p.Current is { Deleted: false } ? 200 : 201,
            Body = p.Bytes,
            ETag = ETag(p.Version),
            LastModified = new DateTimeOffset(p.Ticks, TimeSpan.Zero),
            Location = $"{p.Type}/{p.Id}/_history/{p.Version}",
        };
    }

    private FhirResponse Delete(StoreSession s, string type, string id, FhirRequest request)
    {
        var current = s.GetCurrent(type, id);
        PermitWrite(s, request, type, id, current, Interaction.Delete, null);
        if (current is null)
        {
            throw NotOpen(request, type, id);
        }
        if (current.Value.Deleted)
        {
            // Already deleted: said only to a caller who could read it before.
            PermitStored(s, request, type, id, current.Value, Interaction.Delete);
            return new FhirResponse { Status = 204, ETag = ETag(current.Value.Version) };
        }
        var (version, now) = Next(current);
        var owner = s.OwnerOf(type, id);
        var (_, digest) = s.Put(type, id, current, version, now, "DELETE", null, null);
        request.Trail?.Wrote(type, id, version, digest, owner);
        return new FhirResponse { Status = 204, ETag = ETag(version), LastModified = new DateTimeOffset(now, TimeSpan.Zero) };
    }

    private FhirResponse ConditionalUpdate(StoreSession s, string type, FhirRequest request)
    {
        if (request.Query.Count == 0)
        {
            throw FhirException.BadRequest($"PUT {type} needs search criteria (conditional update) or an id in the URL.");
        }
        var resource = RequireResource(request, type);
        var matches = MatchQuery(s, type, request.Query, request);
        switch (matches.Count)
        {
            case 0:
                if (resource.Id is not null && s.GetCurrent(type, resource.Id) is { } taken)
                {
                    // As PUT [type]/[id]: a resource the caller may not read is not said to exist.
                    PermitStored(s, request, type, resource.Id, taken, Interaction.Update);
                    throw FhirException.Conflict($"No {type} matches the criteria, but {type}/{resource.Id} named in the body exists.");
                }
                return Store(s, type, resource.Id ?? NewId(), resource, null, "PUT", request);
            case 1:
                var current = s.LoadCurrent(matches)[0];
                if (resource.Id is not null && resource.Id != current.Id)
                {
                    throw FhirException.BadRequest($"The criteria match {type}/{current.Id}, but the body names id {resource.Id}.");
                }
                var info = s.GetCurrent(type, current.Id);
                CheckIfMatch(type, current.Id, request.IfMatch, info);
                return Store(s, type, current.Id, resource, info, "PUT", request);
            default:
                throw FhirException.PreconditionFailed($"The conditional update criteria match {matches.Count} {type} resources; they must match at most one.");
        }
    }

    private FhirResponse ConditionalDelete(StoreSession s, string type, FhirRequest request)
    {
        if (request.Query.Count == 0)
        {
            throw FhirException.BadRequest($"DELETE {type} needs search criteria (conditional delete) or an id in the URL.");
        }
        var matches = MatchQuery(s, type, request.Query, request);
        return matches.Count switch
        {
            0 => new FhirResponse { Status = 204 },
            1 => Delete(s, type, s.LoadCurrent(matches)[0].Id, request),
            _ => throw FhirException.PreconditionFailed($"The conditional delete criteria match {matches.Count} {type} resources; this server deletes one at a time."),
        };
    }

    private FhirResponse Patch(StoreSession s, string type, string id, FhirRequest request)
    {
        if (request.ContentType is not { } ct || !ct.StartsWith("application/json-patch+json", StringComparison.OrdinalIgnoreCase))
        {
            throw new FhirException(HttpStatusCode.UnsupportedMediaType, OperationOutcome.IssueType.NotSupported,
                "PATCH takes a JSON Patch document (Content-Type: application/json-patch+json).");
        }
        var info = s.GetCurrent(type, id) ?? throw NotOpen(request, type, id);
        // Decided before the patch is applied: its test operations and errors must not read what the caller may not.
        PermitStored(s, request, type, id, info, Interaction.Update);
        var current = s.Read(type, id) ?? throw NotOpen(request, type, id);
        if (current.Deleted)
        {
            throw FhirException.Gone($"{type}/{id} was deleted.");
        }
        CheckIfMatch(type, id, request.IfMatch, info);
        var node = JsonNode.Parse(current.Data)!;
        var patched = JsonPatch.Apply(node, request.Body ?? []);
        var resource = FhirJson.Parse(System.Text.Encoding.UTF8.GetBytes(patched.ToJsonString()));
        if (resource.TypeName != type || resource.Id != id)
        {
            throw new FhirException(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Processing,
                "The patch must not change the resource type or id.");
        }
        return Store(s, type, id, resource, info, "PATCH", request);
    }

    private static string NewId() => Guid.NewGuid().ToString();

    /// <summary>Row ids matching a relative query such as <c>identifier=x|1</c> (used by the conditional interactions).</summary>
    private List<long> Match(StoreSession s, string type, string criteria, FhirRequest request, string what, List<Assumption>? assumptions)
    {
        var found = Match(s, type, criteria, request, what);
        assumptions?.Add(new Assumption(type, criteria, found));
        return found;
    }

    /// <summary>A conditional lookup made before the write lock was taken; it must still hold under the lock.</summary>
    private sealed record Assumption(string Type, string Criteria, List<long> Rids);

    private List<long> Match(StoreSession s, string type, string criteria, FhirRequest request, string what)
    {
        var (_, query) = FhirRequest.SplitUrl("?" + criteria.TrimStart('?'));
        if (query.Count == 0)
        {
            throw FhirException.BadRequest($"{what} '{criteria}' has no search criteria.");
        }
        return MatchQuery(s, type, query, request);
    }

    private List<long> MatchQuery(StoreSession s, string type, IReadOnlyList<KeyValuePair<string, string>> query, FhirRequest request)
    {
        var q = SearchQuery.Parse(type, query, strict: true);
        // Matched within what the caller may read: a conditional interaction must not reveal a resource it cannot see.
        var sql = new SqlSearch(request.BaseUrl, store.Keys.Blind, store.Engine, request.Access, s);
        var where = sql.Where(q);
        return s.QueryRids($"SELECT r.rid FROM resource r WHERE {where} LIMIT 2", sql.Args);
    }
}
