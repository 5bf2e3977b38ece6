using System.CommandLine;
using Ward.Cli;

return await Commands.Build().Parse(args).InvokeAsync();
