using System.CommandLine;
using Spectre.Console;
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
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            var user = await accounts.AddUserAsync(pr.GetValue(userName)!, pr.GetValue(role)!, pr.GetValue(practitioner) ?? pr.GetValue(patient), password, ct);
            AnsiConsole.MarkupLineInterpolated($"[green]User '{user.UserName}' created[/] ({user.Role}{(user.FhirUser is null ? "" : ", " + user.FhirUser)}).");
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
                table.AddRow(Markup.Escape(u.UserName ?? ""), u.Role, Markup.Escape(u.FhirUser ?? ""), u.TwoFactorEnabled ? "TOTP" : Roles.IsStaff(u.Role) ? "to enrol" : "none", state);
            }
            AnsiConsole.Write(table);
            return 0;
        }));

        var disableName = UserNameOption();
        var disable = new Command("disable", "Disable an account for good: no sign-in, no token, every grant it holds revoked (the account stays for the audit trail).") { data, disableName };
        disable.SetAction((pr, ct) => RunAsync(async () =>
        {
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            var revoked = await accounts.DisableUserAsync(pr.GetValue(disableName)!, ct);
            AnsiConsole.MarkupLineInterpolated($"[green]User '{pr.GetValue(disableName)}' disabled[/]; {revoked} grants revoked. Access tokens already issued stop working within {AccessTokens.RecheckEvery.TotalSeconds:N0} s.");
            return 0;
        }));

        var resetName = UserNameOption();
        var resetMfa = new Command("reset-mfa", "Forget a user's authenticator (lost phone): they enrol a new one at their next sign-in. Their grants are revoked.") { data, resetName };
        resetMfa.SetAction((pr, ct) => RunAsync(async () =>
        {
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            await accounts.ResetMfaAsync(pr.GetValue(resetName)!, ct);
            AnsiConsole.MarkupLineInterpolated($"[green]Second factor of '{pr.GetValue(resetName)}' reset[/]; they enrol a new authenticator at their next sign-in.");
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
            var keySet = pr.GetValue(jwks) is { } file ? await File.ReadAllTextAsync(file, ct) : null;
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            var secret = await accounts.AddClientAsync(pr.GetValue(clientId)!, Enum.Parse<ClientKind>(pr.GetValue(kind)!, ignoreCase: true),
                pr.GetValue(redirect) ?? [], pr.GetValue(scopes)!, keySet, pr.GetValue(name), ct);
            AnsiConsole.MarkupLineInterpolated($"[green]Client '{pr.GetValue(clientId)}' registered[/] ({pr.GetValue(kind)}).");
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
                table.AddRow(Markup.Escape(c.ClientId), c.Kind, Markup.Escape(c.DisplayName ?? ""), Markup.Escape(string.Join(' ', c.RedirectUris)), Markup.Escape(c.Scopes));
            }
            AnsiConsole.Write(table);
            return 0;
        }));

        var removeId = new Option<string>("--client-id") { Description = "The client to remove.", Required = true };
        var remove = new Command("remove", "Remove a client with every grant and token it holds.") { data, removeId };
        remove.SetAction((pr, ct) => RunAsync(async () =>
        {
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            await accounts.RemoveClientAsync(pr.GetValue(removeId)!, ct);
            AnsiConsole.MarkupLineInterpolated($"[green]Client '{pr.GetValue(removeId)}' removed[/] with its grants and tokens.");
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
            await using var accounts = Accounts.Open(NodeConfig.Load(pr.GetValue(data)!));
            Console.WriteLine(await accounts.IssueTokenAsync(pr.GetValue(user), pr.GetValue(client), pr.GetValue(scope)!, pr.GetValue(minutes), ct));
            return 0;
        }));
        return cmd;
    }
}
