using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using Ward.Core.Audit;
using Ward.Core.Fhir;
using Ward.Core.Node;
using Ward.Core.Storage;
using Ward.Server.Identity;

namespace Ward.Server;

/// <summary>Builds the node's web host: Kestrel on the configured addresses, the FHIR API under <c>/fhir</c>.</summary>
internal static class WardServer
{
    /// <summary>The CORS policy of the FHIR API and the token endpoint: origins of registered clients only.</summary>
    public const string BrowserApps = "browser-apps";

    public const string ReadOnlyReason = "This node serves a restored backup read-only while the primary node is rebuilt: "
        + "records can be read, but no change is accepted until the primary is back. Try again later, or record the change on paper for entry afterwards.";

    /// <param name="logging">Replaces the console log provider (tests capture logs); the levels stay those of production.</param>
    /// <param name="requireTokens">Only the read benchmark turns this off, to measure what token checks cost; no command or setting can.</param>
    /// <param name="readOnly">Serve a restored snapshot while the primary is rebuilt: reads with the same rules and audit, writes refused (503), no scheduled backups.</param>
    /// <param name="clock">The node's time (tests move it); the system clock otherwise.</param>
    public static WebApplication Build(NodeConfig config, string urls, RecordStore store, Action<ILoggingBuilder>? logging = null, bool requireTokens = true, bool readOnly = false,
        TimeProvider? clock = null)
    {
        var endpoints = ParseUrls(urls, config);
        // Read before the host starts: a certificate that is not one is named now, not logged as a failed start.
        var certificate = endpoints.Any(e => e.Https) ? LoadCertificate(config) : null;
        // The content root is the install folder, not the working directory: an appsettings.json lying where the node is
        // started cannot reconfigure it (say, turn on request logging, which would write search URLs), and the host
        // does not watch the working directory, often the data folder, whose every write would wake a file watcher.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        // Framework logs stay at Warning: request logging at Information would write URLs, and search URLs hold patient data.
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddFilter("Ward", LogLevel.Information);
        // Its key ring lives in keys/ (0700) beside the master key, unencrypted like it (docs/SECURITY.md): no warning each start.
        builder.Logging.AddFilter("Microsoft.AspNetCore.DataProtection", LogLevel.Error);
        if (logging is not null)
        {
            logging(builder.Logging);
        }
        else if (config.Logging.Format == LoggingConfig.Json)
        {
            // One JSON object per line (control characters and non-ASCII escaped by the JSON writer). No scopes: ASP.NET
            // Core's request scope holds the request path, and FHIR paths hold resource ids.
            builder.Logging.AddJsonConsole(o =>
            {
                o.IncludeScopes = false;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
            });
        }
        else if (config.Logging.Format == LoggingConfig.Text)
        {
            // One line per event, caller text in it escaped (EscapingConsoleFormatter): no forged lines, no terminal escapes.
            builder.Logging.AddConsole(o => o.FormatterName = EscapingConsoleFormatter.Name).AddConsoleFormatter<EscapingConsoleFormatter, ConsoleFormatterOptions>();
        }
        else
        {
            throw new NodeException($"logging: format in ward.yaml (or --log-format) is '{config.Logging.Format}'; it must be '{LoggingConfig.Text}' or '{LoggingConfig.Json}'.");
        }
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = config.MaxRequestBodyBytes;
            // The headers are read before anything else, the bearer token among them: bounded before any caller is known.
            kestrel.Limits.MaxRequestHeadersTotalSize = config.Limits.MaxHeaderBytes;
            kestrel.Limits.MaxRequestHeaderCount = config.Limits.MaxHeaders;
            foreach (var (address, port, https) in endpoints)
            {
                kestrel.Listen(address, port, listen =>
                {
                    // HTTP/2 needs TLS (ALPN); plain loopback HTTP is HTTP/1.1.
                    listen.Protocols = https ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                    if (https)
                    {
                        listen.UseHttps(certificate!);
                    }
                });
            }
        });
        // A policy file that does not validate stops the node here, before it serves anything.
        var policy = Ward.Core.Policy.AccessPolicy.Load(config.DataDir);
        builder.Services.AddSingleton(store);
        builder.Services.AddSingleton(clock ?? TimeProvider.System);
        builder.Services.AddSingleton(config);
        builder.Services.AddSingleton(sp => AuditLog.Open(config, store, sp.GetRequiredService<TimeProvider>()));
        builder.Services.AddHostedService<AuditCheckpoints>();
        builder.Services.AddSingleton(sp => new FhirEngine(store, sp.GetRequiredService<AuditLog>(), sp.GetRequiredService<TimeProvider>())
        {
            ReadOnlyReason = readOnly ? ReadOnlyReason : null,
            Policy = policy,
        });
        if (config.Backup.Target is not null && !readOnly)
        {
            builder.Services.AddSingleton<ScheduledBackups>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<ScheduledBackups>());
        }
        var metrics = config.Metrics.Enabled ? MetricsEndpoint.Load(config) : null;
        if (metrics is not null)
        {
            // The HTTP server's own measurements (http.server.request.duration by http.route, the endpoint's template, and
            // status; Kestrel's connections) and the node's (NodeMetrics), read by the Prometheus exporter at each scrape.
            builder.Services.AddOpenTelemetry()
                .ConfigureResource(r => r.AddService("ward", serviceVersion: CapabilityStatementBuilder.SoftwareVersion))
                .WithMetrics(m => m.AddAspNetCoreInstrumentation().AddMeter(NodeMetrics.MeterName).AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));
        }
        builder.Services.AddSingleton<Readiness>();
        var keys = OidcKeys.Load(config);
        builder.Services.AddSingleton(keys);
        builder.Services.AddSingleton<AccessTokens>();
        builder.Services.AddSingleton<ClientOrigins>();
        builder.Services.AddSingleton(new RequestBounds(config.Limits));
        builder.Services.AddSingleton(sp => new FhirEndpoint(sp.GetRequiredService<FhirEngine>(), sp.GetRequiredService<AccessTokens>(),
            sp.GetRequiredService<AuditLog>(), sp.GetRequiredService<ILogger<FhirEndpoint>>(), requireTokens,
            config.Limits, new HeavyRequests(config.Limits.HeavyRequestsPerCaller)));
        IdentitySetup.AddServer(builder.Services, config, keys);
        builder.Services.AddCors(o => o.AddPolicy(BrowserApps, policy => policy
            .SetIsOriginAllowed(origin => false)
            .AllowAnyHeader()
            .AllowAnyMethod()
            .WithExposedHeaders("Location", "Content-Location", "ETag", "Last-Modified", "WWW-Authenticate")));
        builder.Services.AddOptions<Microsoft.AspNetCore.Cors.Infrastructure.CorsOptions>().Configure<ClientOrigins>((o, origins) =>
            o.GetPolicy(BrowserApps)!.IsOriginAllowed = origins.IsAllowed);
        var app = builder.Build();
        store.Keys.Logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Ward.Crypto");
        store.Logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Ward.Storage");
        app.Services.GetRequiredService<AuditLog>().Logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Ward.Audit");
        var tokens = app.Services.GetRequiredService<AccessTokens>();
        tokens.Revoked = new GrantStatus(app.Services).RevokedAsync;
        // Outermost, so that every refusal and failure of the APIs is audited, whatever produces it.
        app.UseMiddleware<FailureAudit>();
        app.Services.GetRequiredService<RequestBounds>().Use(app);
        metrics?.Use(app);
        app.Use((http, next) =>
        {
            // The sign-in and approval pages: never framed (clickjacking of "Allow"), never cached, no referrer.
            if (http.Request.Path.StartsWithSegments("/account") || http.Request.Path.StartsWithSegments("/connect"))
            {
                var headers = http.Response.Headers;
                headers.ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'";
                headers.XFrameOptions = "DENY";
                headers.CacheControl = "no-store";
                headers["Referrer-Policy"] = "no-referrer";
                headers.XContentTypeOptions = "nosniff";
            }
            return next(http);
        });
        app.UseCors();
        app.UseRateLimiter();
        // Cookies and the OpenID Connect server are for the sign-in pages and the OAuth endpoints; the FHIR API checks its
        // bearer tokens itself (AccessTokens) and does not pay for OpenIddict's per-request dispatch.
        app.UseWhen(http => !http.Request.Path.StartsWithSegments("/fhir"), branch => branch.UseAuthentication());
        // UseAuthentication marks the builder it is called on; in a branch the mark does not reach the application, which
        // would then add its own UseAuthentication at the very start, for every request and before the rate limiter.
        ((IApplicationBuilder)app).Properties["__AuthenticationMiddlewareSet"] = true;
        var fhir = app.Services.GetRequiredService<FhirEndpoint>();
        app.Map("/fhir/{**path}", fhir.HandleAsync).RequireCors(BrowserApps);
        app.Map("/fhir", fhir.HandleAsync).RequireCors(BrowserApps);
        SmartEndpoints.Map(app);
        LoginPages.Map(app);
        AuditEndpoints.Map(app, fhir, app.Services.GetRequiredService<AuditLog>(), store);
        DicomWebEndpoints.Map(app, fhir);
        ResearchEndpoints.Map(app, fhir, app.Services.GetRequiredService<AuditLog>(), store, app.Services.GetRequiredService<TimeProvider>());
        var backups = app.Services.GetService<ScheduledBackups>();
        app.MapGet("/health", () =>
        {
            var schema = store.TryGetSchemaVersion();
            var report = new HealthReport(schema is null ? "database unavailable" : "ok", CapabilityStatementBuilder.SoftwareVersion, schema,
                store.Engine.ToString().ToLowerInvariant(), readOnly, backups?.Health);
            return Results.Json(report, HealthJson.Default.HealthReport, statusCode: schema is null ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status200OK);
        });
        // Liveness: the process answers. Readiness: it can serve (database, audit log, keys), 503 naming what fails.
        app.MapGet("/health/live", () => Results.Json(new LivenessReport("alive"), HealthJson.Default.LivenessReport));
        var readiness = app.Services.GetRequiredService<Readiness>();
        app.MapGet("/health/ready", async (HttpContext http) =>
        {
            var report = await readiness.CheckAsync(http.RequestAborted);
            return Results.Json(report, HealthJson.Default.ReadinessReport,
                statusCode: report.Status == "ready" ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
        });
        app.MapGet("/", () => Results.Redirect("/fhir/metadata"));
        return app;
    }

    /// <summary>
    /// Parses the listen addresses. Plain HTTP is allowed on loopback only; any other address needs https and the
    /// configured certificate, so that patient data never crosses a network in clear.
    /// </summary>
    /// <param name="config">The node whose certificate serves https; null for a node about to be created with its development certificate (ward demo).</param>
    public static List<(IPAddress Address, int Port, bool Https)> ParseUrls(string urls, NodeConfig? config)
    {
        var list = new List<(IPAddress, int, bool)>();
        foreach (var raw in urls.Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(raw.Replace("://*", "://0.0.0.0").Replace("://+", "://0.0.0.0"), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                throw new NodeException($"'{raw}' is not a listen address such as http://127.0.0.1:8080 or https://0.0.0.0:8443.");
            }
            IPAddress address;
            if (uri.Host == "localhost")
            {
                address = IPAddress.Loopback;
            }
            else if (!IPAddress.TryParse(uri.Host.Trim('[', ']'), out address!))
            {
                throw new NodeException($"'{raw}': listen on an IP address (for example 127.0.0.1 or 0.0.0.0), not a host name.");
            }
            var https = uri.Scheme == "https";
            if (!IPAddress.IsLoopback(address) && !https)
            {
                throw new NodeException($"Refusing to serve patient data in clear on {raw}: plain HTTP is for loopback only. Use https:// with the certificate named in ward.yaml.");
            }
            if (https && config is not null && !TlsConfigured(config))
            {
                throw new NodeException($"{raw} needs TLS, but ward.yaml names no certificate and key files that exist (tls: certificate, key).");
            }
            list.Add((address, uri.Port, https));
        }
        if (list.Count == 0)
        {
            throw new NodeException("No listen address given.");
        }
        return list;
    }

    private static bool TlsConfigured(NodeConfig config) =>
        config.Tls.Certificate is { } c && config.Tls.Key is { } k && File.Exists(config.Resolve(c)) && File.Exists(config.Resolve(k));

    private static System.Security.Cryptography.X509Certificates.X509Certificate2 LoadCertificate(NodeConfig config)
    {
        var (certificate, key) = (config.Resolve(config.Tls.Certificate!), config.Resolve(config.Tls.Key!));
        try
        {
            using var pem = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(certificate, key);
            // Kestrel needs an exportable key on Linux; re-import from PKCS#12 in memory.
            return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(pem.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12), null);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new NodeException($"The TLS certificate {certificate} and its key {key} (tls: in ward.yaml) are not a PEM certificate and its private key: {e.Message}");
        }
    }
}

/// <param name="ReadOnly">The node serves a restored snapshot read-only (<c>ward serve --read-only</c>).</param>
/// <param name="Backup">The scheduled backups' last outcome, when a backup target is configured.</param>
internal sealed record HealthReport(string Status, string Version, int? SchemaVersion, string Engine, bool ReadOnly, BackupHealth? Backup);

internal sealed record LivenessReport(string Status);

[System.Text.Json.Serialization.JsonSerializable(typeof(HealthReport))]
[System.Text.Json.Serialization.JsonSerializable(typeof(LivenessReport))]
[System.Text.Json.Serialization.JsonSerializable(typeof(ReadinessReport))]
[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase)]
internal sealed partial class HealthJson : System.Text.Json.Serialization.JsonSerializerContext;
