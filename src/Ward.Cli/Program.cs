using System.CommandLine;
using Spectre.Console;
using Ward.Cli;

if (Console.IsOutputRedirected)
{
    // Into a file or a pipe, lines and tables are not cut at 80 columns: ids and messages stay whole for scripts and logs.
    AnsiConsole.Profile.Width = 240;
}
return await Commands.InvokeAsync(args);
