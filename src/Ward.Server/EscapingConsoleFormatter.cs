using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;
using Ward.Core.Node;

namespace Ward.Server;

/// <summary>
/// The node's console log format: one line per event (<c>level: category[event] message exception</c>), in which the
/// message and the exception pass through <see cref="TerminalText"/>. Whatever text a caller managed to put in a log
/// message or an exception's message (ESC sequences, CR/LF that would forge a line, bidirectional overrides, NUL) is
/// written as visible escapes, so that a log line is one event and shows what was there.
/// </summary>
internal sealed class EscapingConsoleFormatter() : ConsoleFormatter(Name)
{
    public new const string Name = "ward";

    public override void Write<TState>(in LogEntry<TState> logEntry, IExternalScopeProvider? scopeProvider, TextWriter textWriter)
    {
        var message = logEntry.Formatter?.Invoke(logEntry.State, logEntry.Exception);
        if (message is null && logEntry.Exception is null)
        {
            return;
        }
        textWriter.Write(logEntry.LogLevel switch
        {
            LogLevel.Trace => "trce",
            LogLevel.Debug => "dbug",
            LogLevel.Information => "info",
            LogLevel.Warning => "warn",
            LogLevel.Error => "fail",
            _ => "crit",
        });
        textWriter.Write(": ");
        textWriter.Write(TerminalText.Escape(logEntry.Category));
        textWriter.Write('[');
        textWriter.Write(logEntry.EventId.Id);
        textWriter.Write("] ");
        textWriter.Write(TerminalText.Escape(message));
        if (logEntry.Exception is { } exception)
        {
            textWriter.Write(' ');
            textWriter.Write(TerminalText.Escape(exception.ToString()));
        }
        textWriter.Write('\n');
    }
}
