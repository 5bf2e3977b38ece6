using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using OpenIddict.EntityFrameworkCore.Models;

namespace Ward.Server.Identity;

/// <summary>
/// Browser origins allowed to call the FHIR API and the token endpoint (CORS): those of the registered clients'
/// redirect URIs, and no other. Read from the database, again at most once a second when an unknown origin shows up,
/// so that a client registered while the node runs works at once.
/// </summary>
internal sealed class ClientOrigins(IServiceScopeFactory scopes, TimeProvider clock)
{
    private volatile HashSet<string> _origins = [];
    private long _loadedAt = long.MinValue;
    private readonly Lock _lock = new();

    public bool IsAllowed(string origin)
    {
        if (_origins.Contains(origin))
        {
            return true;
        }
        lock (_lock)
        {
            var now = clock.GetTimestamp();
            if (_loadedAt != long.MinValue && clock.GetElapsedTime(_loadedAt, now) < TimeSpan.FromSeconds(1))
            {
                return _origins.Contains(origin);
            }
            _loadedAt = now;
            using var scope = scopes.CreateScope();
            var db = scope.ServiceProvider.GetRequiredService<IdentityDb>();
            var origins = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            foreach (var json in db.Set<OpenIddictEntityFrameworkCoreApplication>().AsNoTracking().Select(a => a.RedirectUris).ToList())
            {
                foreach (var uri in json is null ? [] : JsonSerializer.Deserialize(json, OriginJson.Default.StringArray) ?? [])
                {
                    if (Uri.TryCreate(uri, UriKind.Absolute, out var u))
                    {
                        origins.Add(u.GetLeftPart(UriPartial.Authority));
                    }
                }
            }
            _origins = origins;
            return origins.Contains(origin);
        }
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string[]))]
internal sealed partial class OriginJson : System.Text.Json.Serialization.JsonSerializerContext;
