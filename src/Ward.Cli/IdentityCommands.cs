using System.CommandLine;
using Spectre.Console;
using Ward.Core.Access;
using Ward.Core.Node;
using Ward.Server.Identity;

namespace Ward.Cli;

/// <summary><c>ward users</c>, <c>ward clients</c> and <c>ward token</c>: identity administration on the node's data folder.</summary>
internal static partial class Commands
{
    private static Option<string> UserNameOption() => new("--username", "-u") { Description = "The user's sign-in name.", Required = true };

    private static Command Users()
    {
        var data = DataOption();
        var userName = UserNameOption();
        var role = new Option<string>("--role") { Description = $"One of: {string.Join(", ", Roles.All.Where(r => r != Roles.Service))}.", Required = true };
        var practitioner = new Option<string?>("--practitioner") { Description = "The staff member's record, as Practitioner/ID (their fhirUser)." };
        var patient = new Option<string?>("--patient") { Description = "For a patient account: their record, as Patient/ID." };
        var passwordStdin = new Option<bool>("--password-stdin") { Description = "Read the password from standard input (never from the command line). At least 12 characters." };
        var add = new Command("add", "Create a user. Staff enrol an authenticator (TOTP) at their first sign-in; five failed attempts lock an account for 15 minutes.")
            { data, userName, role, practitioner, patient, passwordStdin };
        add.SetAction((pr, ct) => RunAsync(async () =>
        {
            if (!pr.GetValue(passwordStdin))
            {
                throw new NodeException("Give the password on standard input with --password-stdin (a password on the command line would stay in shell histories and process lists).");
            }
            if (pr.GetValue(practitioner) is not null && pr.GetValue(patient) is not null)
            {
                throw new NodeException("Give --practitioner or --patient, not both.");
            }
            var password = (await Console.In.ReadLineAsync(ct))?.TrimEnd('\r', '\n') ?? "";
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            var user = await accounts.AddUserAsync(pr.GetValue(userName)!, pr.GetValue(role)!, pr.GetValue(practitioner) ?? pr.GetValue(patient), password, ct);
            await AuditAdminAsync(config, "user-add", 'C', $"user/{user.UserName}", open: accounts.Store);
            AnsiConsole.MarkupLineInterpolated($"[green]User '{Safe(user.UserName)}' created[/] ({Safe(user.Role)}{(user.FhirUser is null ? "" : ", " + Safe(user.FhirUser))}).");
            if (Roles.IsStaff(user.Role))
            {
                AnsiConsole.MarkupLine("They set up an authenticator app at their first sign-in.");
            }
            return 0;
        }));

        var list = new Command("list", "List the users: role, FHIR record, second factor, state.") { data };
        list.SetAction((pr, ct) => RunAsync(async () =>
        {
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            var table = new Table().AddColumns("User", "Role", "FHIR record", "Second factor", "State");
            foreach (var u in await accounts.ListUsersAsync(ct))
            {
                var state = u.Disabled ? "disabled" : u.LockoutEnd > DateTimeOffset.UtcNow ? "locked" : "active";
                table.AddRow(Cell(u.UserName), Cell(u.Role), Cell(u.FhirUser), u.TwoFactorEnabled ? "TOTP" : Roles.IsStaff(u.Role) ? "to enrol" : "none", state);
            }
            AnsiConsole.Write(table);
            return 0;
        }));

        var disableName = UserNameOption();
        var disable = new Command("disable", "Disable an account for good: no sign-in, no token, every grant it holds revoked (the account stays for the audit trail).") { data, disableName };
        disable.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            var revoked = await accounts.DisableUserAsync(pr.GetValue(disableName)!, ct);
            await AuditAdminAsync(config, "user-disable", 'U', $"user/{pr.GetValue(disableName)}", open: accounts.Store);
            AnsiConsole.MarkupLineInterpolated($"[green]User '{Safe(pr.GetValue(disableName))}' disabled[/]; {revoked} grants revoked. Access tokens already issued stop working within {AccessTokens.RecheckEvery.TotalSeconds:N0} s.");
            return 0;
        }));

        var resetName = UserNameOption();
        var resetMfa = new Command("reset-mfa", "Forget a user's authenticator (lost phone): they enrol a new one at their next sign-in. Their grants are revoked.") { data, resetName };
        resetMfa.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            await accounts.ResetMfaAsync(pr.GetValue(resetName)!, ct);
            await AuditAdminAsync(config, "user-reset-mfa", 'U', $"user/{pr.GetValue(resetName)}", open: accounts.Store);
            AnsiConsole.MarkupLineInterpolated($"[green]Second factor of '{Safe(pr.GetValue(resetName))}' reset[/]; they enrol a new authenticator at their next sign-in.");
            return 0;
        }));
        return new Command("users", "Manage the people who sign in.") { add, list, disable, resetMfa };
    }

    private static Command Clients()
    {
        var data = DataOption();
        var clientId = new Option<string>("--client-id") { Description = "The client's id.", Required = true };
        var kind = new Option<string>("--kind") { Description = "public (browser or mobile app, PKCE), confidential (server-side app with a secret or keys), backend (SMART Backend Services, client credentials with a signed JWT).", Required = true };
        kind.AcceptOnlyFromAmong("public", "confidential", "backend");
        var redirect = new Option<string[]>("--redirect-uri") { Description = "Where the app receives the authorization code (repeat for several).", AllowMultipleArgumentsPerToken = false };
        var scopes = new Option<string>("--scopes") { Description = "The SMART scopes the client may ask for, space-separated (for example \"openid fhirUser launch/patient offline_access patient/*.rs\").", Required = true };
        var jwks = new Option<string?>("--jwks") { Description = "A JSON Web Key Set file with the client's public keys (private_key_jwt: RS384 or ES384)." };
        var name = new Option<string?>("--name") { Description = "The name users see when the app asks for access." };
        var add = new Command("add", "Register a SMART client.") { data, clientId, kind, redirect, scopes, jwks, name };
        add.SetAction((pr, ct) => RunAsync(async () =>
        {
            var keySet = pr.GetValue(jwks) is { } file ? await File.ReadAllTextAsync(InputFile(file, "JSON Web Key Set"), ct) : null;
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            var secret = await accounts.AddClientAsync(pr.GetValue(clientId)!, Enum.Parse<ClientKind>(pr.GetValue(kind)!, ignoreCase: true),
                pr.GetValue(redirect) ?? [], pr.GetValue(scopes)!, keySet, pr.GetValue(name), ct);
            await AuditAdminAsync(config, "client-add", 'C', $"client/{pr.GetValue(clientId)}", open: accounts.Store);
            AnsiConsole.MarkupLineInterpolated($"[green]Client '{Safe(pr.GetValue(clientId))}' registered[/] ({pr.GetValue(kind)}).");
            if (secret is not null)
            {
                AnsiConsole.MarkupLine("Client secret (shown once; give it to the app's operator over a safe channel):");
                Console.WriteLine(secret);
            }
            return 0;
        }));

        var list = new Command("list", "List the registered clients.") { data };
        list.SetAction((pr, ct) => RunAsync(async () =>
        {
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            var table = new Table().AddColumns("Client", "Kind", "Name", "Redirect URIs", "Scopes");
            foreach (var c in await accounts.ListClientsAsync(ct))
            {
                table.AddRow(Cell(c.ClientId), Cell(c.Kind), Cell(c.DisplayName), Cell(string.Join(' ', c.RedirectUris)), Cell(c.Scopes));
            }
            AnsiConsole.Write(table);
            return 0;
        }));

        var removeId = new Option<string>("--client-id") { Description = "The client to remove.", Required = true };
        var remove = new Command("remove", "Remove a client with every grant and token it holds.") { data, removeId };
        remove.SetAction((pr, ct) => RunAsync(async () =>
        {
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            await accounts.RemoveClientAsync(pr.GetValue(removeId)!, ct);
            await AuditAdminAsync(config, "client-remove", 'D', $"client/{pr.GetValue(removeId)}", open: accounts.Store);
            AnsiConsole.MarkupLineInterpolated($"[green]Client '{Safe(pr.GetValue(removeId))}' removed[/] with its grants and tokens.");
            return 0;
        }));
        return new Command("clients", "Manage the applications that obtain tokens (SMART on FHIR clients).") { add, list, remove };
    }

    private static Command Token()
    {
        var data = DataOption();
        var user = new Option<string?>("--user") { Description = "A token acting as this user." };
        var client = new Option<string?>("--client") { Description = "A token for this registered backend client (system/ scopes)." };
        var scope = new Option<string>("--scope") { Description = "The scopes, space-separated (user/*.rs, system/Patient.rs ...).", Required = true };
        var minutes = new Option<int>("--minutes") { Description = $"Lifetime, 1 to {Accounts.MaxTokenMinutes} minutes.", DefaultValueFactory = _ => 5 };
        var cmd = new Command("token", "Print a short-lived access token (and nothing else) for scripts and operations. Needs the node's data folder: its signing key.")
            { data, user, client, scope, minutes };
        cmd.SetAction((pr, ct) => RunAsync(async () =>
        {
            if (pr.GetValue(user) is null == pr.GetValue(client) is null)
            {
                throw new NodeException("Give exactly one of --user and --client.");
            }
            var config = NodeConfig.Load(pr.GetValue(data)!);
            await using var accounts = Accounts.Open(config);
            var token = await accounts.IssueTokenAsync(pr.GetValue(user), pr.GetValue(client), pr.GetValue(scope)!, pr.GetValue(minutes), ct);
            // Recorded before the token is shown: no token leaves without its trace.
            await AuditAdminAsync(config, "token-issue", 'E', pr.GetValue(user) is { } u ? $"user/{u}" : $"client/{pr.GetValue(client)}", open: accounts.Store);
            Console.WriteLine(token);
            return 0;
        }));
        return cmd;
    }
}

/// <summary>
/// The demo node's people and app: one user per role (staff with an authenticator already enrolled, so that the printed
/// key works at once), the patient linked to a sample patient, and a public SMART client. Their credentials are written
/// once to <c>demo-credentials.txt</c> (0600) in the demo folder and printed at every start.
/// </summary>
internal static class DemoIdentity
{
    public const string FileName = "demo-credentials.txt";
    public const string ClientId = "demo-app";
    public const string RedirectUri = "http://127.0.0.1:9090/callback";

    internal sealed record Credential(string User, string Role, string Password, string? Totp);

    public static async Task<List<Credential>> CreateAsync(NodeConfig config, Ward.Core.Storage.RecordStore store, CancellationToken ct)
    {
        await using var audit = Ward.Core.Audit.AuditLog.Open(config, store);
        var engine = new Ward.Core.Fhir.FhirEngine(store, audit, TimeProvider.System);
        var patient = await FirstAsync(engine, "Patient", ct);
        var practitioner = await FirstAsync(engine, "Practitioner", ct);
        if (practitioner is not null)
        {
            await CareTeamsAsync(engine, practitioner, ct);
        }
        var list = new List<Credential>();
        await using var accounts = Accounts.Open(config);
        foreach (var role in Roles.All.Where(r => r != Roles.Service))
        {
            var user = "demo-" + role;
            var password = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));
            var fhirUser = role == Roles.Patient ? patient : role is "clinician" or "nurse" ? practitioner : null;
            await accounts.AddUserAsync(user, role, fhirUser, password, ct);
            list.Add(new Credential(user, role, password, Roles.IsStaff(role) ? await accounts.EnrolAuthenticatorAsync(user) : null));
        }
        await accounts.AddClientAsync(ClientId, ClientKind.Public, [RedirectUri],
            "openid fhirUser launch/patient offline_access patient/*.rs user/*.rs", null, "Ward demo app", ct);
        var lines = list.Select(c => $"{c.User}\t{c.Role}\t{c.Password}\t{c.Totp ?? "-"}");
        NodeConfig.WritePrivate(Path.Combine(config.DataDir, FileName), "# user\trole\tpassword\tTOTP key (base32)\n" + string.Join('\n', lines) + "\n");
        return list;
    }

    public static List<Credential> Load(NodeConfig config)
    {
        var path = Path.Combine(config.DataDir, FileName);
        if (!File.Exists(path))
        {
            return [];
        }
        return File.ReadAllLines(path).Where(l => l.Length > 0 && l[0] != '#').Select(l => l.Split('\t'))
            .Select(f => new Credential(f[0], f[1], f[2], f[3] == "-" ? null : f[3])).ToList();
    }

    /// <summary>
    /// The demo clinician and nurse (both the first Practitioner) get a care relationship with every sample patient through
    /// a CareTeam, so that the access policy lets them read the records.
    /// </summary>
    private static async Task CareTeamsAsync(Ward.Core.Fhir.FhirEngine engine, string practitioner, CancellationToken ct)
    {
        var search = await engine.HandleAsync(new Ward.Core.Fhir.FhirRequest
        {
            Method = "GET",
            Path = "Patient",
            Query = [new("_count", "1000"), new("_elements", "id")],
            BaseUrl = "http://localhost/fhir",
            Caller = Ward.Core.Access.AccessGrant.Operator,
        }, ct);
        using var bundle = System.Text.Json.JsonDocument.Parse(search.Body);
        if (!bundle.RootElement.TryGetProperty("entry", out var entries))
        {
            return;
        }
        foreach (var entry in entries.EnumerateArray())
        {
            var id = entry.GetProperty("resource").GetProperty("id").GetString();
            var team = new Hl7.Fhir.Model.CareTeam
            {
                Status = Hl7.Fhir.Model.CareTeam.CareTeamStatus.Active,
                Name = "Demo ward team",
                Subject = new Hl7.Fhir.Model.ResourceReference($"Patient/{id}"),
                Participant = [new Hl7.Fhir.Model.CareTeam.ParticipantComponent { Member = new Hl7.Fhir.Model.ResourceReference(practitioner) }],
            };
            await engine.HandleAsync(new Ward.Core.Fhir.FhirRequest
            {
                Method = "POST",
                Path = "CareTeam",
                Resource = team,
                BaseUrl = "http://localhost/fhir",
                Caller = Ward.Core.Access.AccessGrant.Operator,
            }, ct);
        }
    }

    private static async Task<string?> FirstAsync(Ward.Core.Fhir.FhirEngine engine, string type, CancellationToken ct)
    {
        var response = await engine.HandleAsync(new Ward.Core.Fhir.FhirRequest
        {
            Method = "GET",
            Path = type,
            Query = [new("_count", "1"), new("_sort", "_id")],
            BaseUrl = "http://localhost/fhir",
            Caller = Ward.Core.Access.AccessGrant.Operator,
        }, ct);
        using var bundle = System.Text.Json.JsonDocument.Parse(response.Body);
        return bundle.RootElement.TryGetProperty("entry", out var entries) && entries.GetArrayLength() > 0
            ? $"{type}/{entries[0].GetProperty("resource").GetProperty("id").GetString()}"
            : null;
    }

    /// <summary>What a newcomer needs to sign in: every account, the clinician's key as a QR code, a token for curl.</summary>
    public static void Print(NodeConfig config, List<Credential> credentials, string fhirBase, string token)
    {
        if (credentials.Count == 0)
        {
            return;
        }
        var origin = fhirBase[..^"/fhir".Length];
        Console.WriteLine($"""
            Sign in at {origin}/account/login (every staff account has an authenticator already: add its key to an app such as
            FreeOTP, Aegis or Google Authenticator, then enter the 6-digit code it shows). Credentials are in {Path.Combine(config.DataDir, FileName)}.

            """);
        foreach (var c in credentials)
        {
            Console.WriteLine($"  {c.User,-24} password {c.Password}   {(c.Totp is null ? "(no second factor)" : "TOTP key " + Totp.Group(c.Totp))}");
        }
        if (credentials.FirstOrDefault(c => c.Role == "clinician") is { Totp: { } key } clinician)
        {
            Console.WriteLine($"\nTOTP key of {clinician.User}, for your authenticator app:\n");
            Console.WriteLine(Totp.QrText(Totp.Uri(clinician.User, key)));
        }
        Console.WriteLine($"""
            SMART app: client_id {ClientId} (public, PKCE S256), redirect URI {RedirectUri}
              {origin}/.well-known/smart-configuration
              {origin}/connect/authorize?response_type=code&client_id={ClientId}&redirect_uri={Uri.EscapeDataString(RedirectUri)}&scope=openid%20fhirUser%20launch%2Fpatient%20patient%2F*.rs&aud={Uri.EscapeDataString(fhirBase)}&state=demo&code_challenge=...&code_challenge_method=S256

            An access token for curl (demo-clinician, user/*.rs, 60 minutes; 'ward token' makes more):
              export TOKEN={token}
            """);
    }
}
