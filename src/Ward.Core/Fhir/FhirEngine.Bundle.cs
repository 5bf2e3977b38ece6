using Hl7.Fhir.Model;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Fhir;

internal sealed partial class FhirEngine
{
    private static readonly Dictionary<string, int> TransactionOrder = new(StringComparer.Ordinal)
    {
        ["DELETE"] = 0, ["POST"] = 1, ["PUT"] = 2, ["PATCH"] = 2, ["GET"] = 3, ["HEAD"] = 3,
    };

    private async Task<FhirResponse> BundleAsync(FhirRequest request, CancellationToken ct)
    {
        if (request.Resource is not Bundle bundle)
        {
            throw FhirException.BadRequest("POST to the server base takes a Bundle of type batch or transaction.");
        }
        var entries = bundle.Entry.Select((e, i) => ToRequest(e, i, request)).ToList();
        request.Trail!.Subtype = bundle.Type == Bundle.BundleType.Transaction ? "transaction" : "batch";
        return bundle.Type switch
        {
            Bundle.BundleType.Transaction => await TransactionAsync(bundle, entries, request, ct),
            Bundle.BundleType.Batch => await BatchAsync(bundle, entries, request, ct),
            _ => throw FhirException.BadRequest($"A Bundle posted to the server base must be a batch or a transaction, not '{bundle.Type?.ToString().ToLowerInvariant() ?? "untyped"}'."),
        };
    }

    private static FhirRequest ToRequest(Bundle.EntryComponent entry, int index, FhirRequest outer)
    {
        var r = entry.Request ?? throw FhirException.BadRequest($"Bundle entry {index} has no request (method and url).");
        if (r.Method is null || string.IsNullOrWhiteSpace(r.Url))
        {
            throw FhirException.BadRequest($"Bundle entry {index} needs request.method and request.url.");
        }
        var url = r.Url;
        if (url.StartsWith(outer.BaseUrl + "/", StringComparison.Ordinal))
        {
            url = url[(outer.BaseUrl.Length + 1)..];
        }
        var (path, query) = FhirRequest.SplitUrl(url);
        var method = r.Method.Value.ToString().ToUpperInvariant();
        byte[]? body = null;
        string? contentType = null;
        if (method == "PATCH" && entry.Resource is Binary binary)
        {
            body = binary.Data;
            contentType = binary.ContentType;
        }
        return new FhirRequest
        {
            Method = method,
            Path = path,
            Query = query,
            Resource = method is "POST" or "PUT" ? entry.Resource : null,
            Body = body,
            ContentType = contentType,
            IfMatch = r.IfMatch,
            IfNoneExist = r.IfNoneExist,
            IfNoneMatch = r.IfNoneMatch,
            IfModifiedSince = r.IfModifiedSince,
            Return = outer.Return,
            Strict = outer.Strict,
            BaseUrl = outer.BaseUrl,
            Caller = outer.Caller,
            Purpose = outer.Purpose,
            BreakGlass = outer.BreakGlass,
            Access = outer.Access,
            Address = outer.Address,
        };
    }

    private async Task<FhirResponse> BatchAsync(Bundle bundle, List<FhirRequest> entries, FhirRequest outer, CancellationToken ct)
    {
        var responses = new FhirResponse[entries.Count];
        foreach (var i in Enumerable.Range(0, entries.Count).OrderBy(i => TransactionOrder.GetValueOrDefault(entries[i].Method, 4)))
        {
            try
            {
                responses[i] = await HandleAsync(entries[i], ct);
            }
            catch (Exception e) when (e is FhirException)
            {
                var (status, outcome) = Outcomes.FromException(e);
                responses[i] = FhirResponse.Of((int)status, FhirJson.Serialize(outcome));
            }
        }
        return FhirResponse.Of(200, ResponseBundle("batch-response", bundle, responses, outer));
    }

    private async Task<FhirResponse> TransactionAsync(Bundle bundle, List<FhirRequest> entries, FhirRequest outer, CancellationToken ct)
    {
        if (entries.Any(e => e.Method is not ("GET" or "HEAD")))
        {
            RefuseWriteWhenReadOnly();
        }
        var fullUrls = bundle.Entry.Select(e => e.FullUrl).ToList();
        var duplicate = fullUrls.Where(u => u is not null).GroupBy(u => u).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw FhirException.BadRequest($"The transaction has two entries with fullUrl {duplicate.Key}.");
        }
        // Plan without the write lock (resolve, rewrite, serialise, index), so that concurrent transactions use every core;
        // then, under the lock, check that what the plan looked up still holds, and write.
        var assumptions = new List<Assumption>();
        TransactionPlan? plan = null;
        plan = await store.ReadAsync(reader =>
        {
            plan?.Undo();
            assumptions.Clear();
            return Plan(entries, fullUrls, reader, assumptions);
        }, ct);
        var attempt = 0;
        var trail = outer.Trail!;
        entries.ForEach(e => e.Trail = trail);
        var responses = await store.WriteAsync(session =>
        {
            trail.Restart();
            AccessOf(outer).ForgetFacts();
            OpenGlass(session, outer, entries);
            // A second attempt (the first met a conflict or a lost connection) plans again inside its own transaction.
            if (attempt++ > 0 || !assumptions.All(a => Match(session, a.Type, a.Criteria, outer, "A lookup").SequenceEqual(a.Rids)))
            {
                plan.Undo();
                plan = Plan(entries, fullUrls, session, null);
            }
            var done = (FhirResponse?[])plan.Responses.Clone();
            foreach (var i in Enumerable.Range(0, entries.Count).OrderBy(i => TransactionOrder.GetValueOrDefault(entries[i].Method, 4)))
            {
                if (done[i] is not null)
                {
                    continue;
                }
                var e = entries[i];
                try
                {
                    done[i] = plan.Creates[i] is { } prepared ? Apply(session, prepared, e) : Dispatch(e, session);
                }
                catch (FhirException f)
                {
                    throw new FhirException(f.Status, f.Code, $"Transaction entry {i} ({e.Method} {e.Path}) failed, so nothing was changed: {f.Message}");
                }
            }
            audit.Append(session, trail.Records(200, Now()));
            return done;
        }, ct);
        return FhirResponse.Of(200, ResponseBundle("transaction-response", bundle, responses!, outer));
    }

    private sealed class TransactionPlan(int count)
    {
        public FhirResponse?[] Responses { get; } = new FhirResponse?[count];
        public PreparedVersion?[] Creates { get; } = new PreparedVersion?[count];
        /// <summary>References rewritten by the plan, with their original values, so that a stale plan can be redone.</summary>
        public List<Action> Rewritten { get; } = [];

        public void Undo() => Rewritten.ForEach(undo => undo());
    }

    private TransactionPlan Plan(List<FhirRequest> entries, List<string?> fullUrls, StoreSession s, List<Assumption>? assumptions)
    {
        var plan = new TransactionPlan(entries.Count);
        // 1. Decide the identity of every created resource, so that references between entries can be resolved.
        var mapping = new Dictionary<string, string>(StringComparer.Ordinal);
        var assigned = new string?[entries.Count];
        for (var i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            if (e.Method == "POST" && e.Resource is not null && e.Path.Length > 0 && !e.Path.Contains('/'))
            {
                string id;
                if (e.IfNoneExist is not null && Match(s, e.Path, e.IfNoneExist, e, $"Entry {i} ifNoneExist", assumptions) is { Count: > 0 } found)
                {
                    if (found.Count > 1)
                    {
                        throw FhirException.PreconditionFailed($"Entry {i}: ifNoneExist '{e.IfNoneExist}' matches more than one {e.Path}.");
                    }
                    var existing = s.LoadCurrent(found)[0];
                    PermitRead(s, e, existing.Type, existing.Id);
                    id = existing.Id;
                    plan.Responses[i] = Ok(existing, e);
                }
                else
                {
                    id = NewId();
                    assigned[i] = id;
                }
                if (fullUrls[i] is { } fu)
                {
                    mapping[fu] = $"{e.Path}/{id}";
                }
            }
            else if (e.Method == "PUT" && fullUrls[i] is { } fu && e.Path.Contains('/'))
            {
                mapping[fu] = e.Path;
            }
        }
        // 2. Rewrite references: placeholders (urn:uuid:...) and conditional references (Type?criteria).
        var conditional = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < entries.Count; i++)
        {
            if (entries[i].Resource is { } resource)
            {
                RewriteReferences(resource, mapping, conditional, s, entries[i], i, assumptions, plan.Rewritten);
            }
        }
        // 3. Serialise and index the new resources.
        for (var i = 0; i < entries.Count; i++)
        {
            if (assigned[i] is { } id)
            {
                plan.Creates[i] = Prepare(entries[i].Path, id, RequireResource(entries[i], entries[i].Path), null, "POST");
            }
        }
        return plan;
    }

    private byte[] ResponseBundle(string type, Bundle bundle, FhirResponse[] responses, FhirRequest outer)
    {
        using var writer = new BundleWriter(type, NewId(), clock.GetUtcNow());
        for (var i = 0; i < responses.Length; i++)
        {
            var r = responses[i];
            var location = r.Location;
            var fullUrl = location is null ? null : $"{outer.BaseUrl}/{string.Join('/', location.Split('/').Take(2))}";
            writer.ResponseEntry(fullUrl ?? bundle.Entry[i].FullUrl, r, outer.Return == ReturnPreference.Representation);
        }
        return writer.ToArray();
    }

    private void RewriteReferences(Resource resource, Dictionary<string, string> mapping, Dictionary<string, string> conditional,
        StoreSession session, FhirRequest entry, int index, List<Assumption>? assumptions, List<Action> rewritten)
    {
        foreach (var node in Descendants(resource))
        {
            switch (node)
            {
                case ResourceReference rr when rr.Reference is { } reference:
                    if (mapping.TryGetValue(reference, out var mapped))
                    {
                        rewritten.Add(() => rr.Reference = reference);
                        rr.Reference = mapped;
                    }
                    else if (reference.StartsWith("urn:uuid:", StringComparison.Ordinal) || reference.StartsWith("urn:oid:", StringComparison.Ordinal))
                    {
                        throw FhirException.NotFound($"Entry {index} refers to {reference}, which no entry of the transaction defines.");
                    }
                    else if (reference.IndexOf('?') is > 0 and var q && SearchParameters.IsKnownType(reference[..q]))
                    {
                        if (!conditional.TryGetValue(reference, out var resolved))
                        {
                            var type = reference[..q];
                            var found = Match(session, type, reference[(q + 1)..], entry, $"The conditional reference in entry {index}", assumptions);
                            if (found.Count == 0)
                            {
                                throw new FhirException(System.Net.HttpStatusCode.PreconditionFailed, OperationOutcome.IssueType.Conflict,
                                    $"The conditional reference {reference} in entry {index} matches no resource.") { UnresolvedReference = reference };
                            }
                            if (found.Count > 1)
                            {
                                throw FhirException.PreconditionFailed($"The conditional reference {reference} in entry {index} matches more than one resource.");
                            }
                            resolved = $"{type}/{session.LoadCurrent(found)[0].Id}";
                            conditional[reference] = resolved;
                        }
                        rewritten.Add(() => rr.Reference = reference);
                        rr.Reference = resolved;
                    }
                    break;
                case FhirUri or Canonical or FhirUrl when node is PrimitiveType { JsonValue: string s } p && mapping.TryGetValue(s, out var target):
                    rewritten.Add(() => p.JsonValue = s);
                    p.JsonValue = target;
                    break;
            }
        }
    }

    /// <summary>Every element below <paramref name="root"/>, depth first.</summary>
    internal static IEnumerable<Base> Descendants(Base root)
    {
        var stack = new Stack<Base>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            var current = stack.Pop();
            foreach (var (_, value) in current.EnumerateElements())
            {
                switch (value)
                {
                    case Base child:
                        yield return child;
                        stack.Push(child);
                        break;
                    case System.Collections.IEnumerable list and not string:
                        foreach (var item in list)
                        {
                            if (item is Base b)
                            {
                                yield return b;
                                stack.Push(b);
                            }
                        }
                        break;
                }
            }
        }
    }

}
