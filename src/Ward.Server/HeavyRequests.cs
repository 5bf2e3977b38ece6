using System.Collections.Concurrent;
using Ward.Core.Access;
using Ward.Core.Fhir;

namespace Ward.Server;

/// <summary>
/// How many expensive requests (STOW-RS and WADO-RS, transactions and batches, operations such as <c>$everything</c>,
/// searches with <c>_include</c>, <c>_revinclude</c> or <c>_has</c>, research questions) each caller has in progress; one
/// beyond <c>limits: heavy-requests-per-caller</c> answers 429 with <c>Retry-After</c> before its body is read, so that
/// one caller cannot take the node's memory and cores from the others.
/// </summary>
internal sealed class HeavyRequests(int perCaller)
{
    /// <summary>Seconds a refused caller is told to wait (<c>Retry-After</c>).</summary>
    public const int RetryAfterSeconds = 1;

    private readonly ConcurrentDictionary<string, int> _inProgress = new(StringComparer.Ordinal);

    /// <summary>The expensive requests of the caller named <paramref name="subject"/> in progress now.</summary>
    public int InProgress(string subject) => _inProgress.TryGetValue(subject, out var n) ? n : 0;

    /// <summary>Counts one more expensive request of <paramref name="caller"/> until the lease is disposed; throws the 429 when the caller has its share in progress.</summary>
    public Lease Enter(AccessGrant caller)
    {
        var key = caller.Subject;
        if (_inProgress.AddOrUpdate(key, 1, (_, n) => n + 1) > perCaller)
        {
            Leave(key);
            throw FhirException.TooMany($"This caller already has {perCaller} expensive requests in progress (limits: heavy-requests-per-caller in ward.yaml); "
                + "wait for one to finish, then try again.", RetryAfterSeconds);
        }
        return new Lease(this, key);
    }

    private void Leave(string key)
    {
        while (true)
        {
            var n = _inProgress[key];
            if (n == 1 ? _inProgress.TryRemove(KeyValuePair.Create(key, 1)) : _inProgress.TryUpdate(key, n - 1, n))
            {
                return;
            }
        }
    }

    /// <summary>Whether a FHIR request is expensive, from its method, path and parameters (known before its body is read).</summary>
    public static bool IsHeavy(string method, string path, IEnumerable<KeyValuePair<string, string>> query)
    {
        if (method == "POST" && path.Length == 0 || path.Contains('$', StringComparison.Ordinal))
        {
            return true;
        }
        return query.Any(q => q.Key.StartsWith("_include", StringComparison.Ordinal) || q.Key.StartsWith("_revinclude", StringComparison.Ordinal)
            || q.Key.StartsWith("_has", StringComparison.Ordinal));
    }

    /// <summary>One expensive request in progress; disposing it lets the caller start another.</summary>
    public sealed class Lease(HeavyRequests owner, string key) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                owner.Leave(key);
            }
        }
    }
}
